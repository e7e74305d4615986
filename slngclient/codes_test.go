package slngclient

import (
	"strconv"
	"testing"
)

// TestClassInvariants: across the whole table, a reap is retryable and
// never SLNG unwell, the caller's fault is neither retryable nor unwell,
// and the rows the breaker and the gateway depend on say what they must.
func TestClassInvariants(t *testing.T) {
	t.Parallel()
	var all []*UpstreamError
	for code := range codeClasses {
		for _, ph := range []phase{phaseOpening, phaseIdle, phaseTurn} {
			for _, closed := range []int{0, 1008} {
				all = append(all, &UpstreamError{Kind: KindErrorFrame, Code: code, CloseCode: closed, phase: ph, byok: true})
			}
		}
	}
	for code := range closeRows {
		for _, ph := range []phase{phaseOpening, phaseIdle, phaseTurn} {
			all = append(all, &UpstreamError{Kind: KindClose, CloseCode: code, phase: ph})
			all = append(all, &UpstreamError{Kind: KindErrorFrame, Code: strconv.Itoa(code), CloseCode: code, phase: ph})
		}
	}
	for st := 100; st < 600; st++ {
		for _, ph := range []phase{phaseOpening, phaseIdle, phaseTurn} {
			all = append(all, &UpstreamError{Kind: KindErrorFrame, Code: strconv.Itoa(st), phase: ph})
		}
	}
	for st := 400; st < 600; st++ {
		all = append(all, &UpstreamError{Kind: KindHandshake, HTTPStatus: st})
	}
	for _, e := range all {
		c := e.Class()
		if c.Reap && (!c.Retryable || c.Unwell || c.Fault || c.Category != CategoryExpired) {
			t.Errorf("%v: reap %+v", e, c)
		}
		if c.Fault && (c.Retryable || c.Unwell) {
			t.Errorf("%v: the caller's fault, yet %+v", e, c)
		}
		if e.Reaped() != c.Reap || e.Unwell() != c.Unwell {
			t.Errorf("%v: methods disagree with %+v", e, c)
		}
	}
	for _, tc := range []struct {
		err  *UpstreamError
		want Class
	}{
		{&UpstreamError{Kind: KindClose, CloseCode: 1011}, expired},
		{&UpstreamError{Kind: KindClose, CloseCode: 1011, phase: phaseTurn}, unwell},
		{&UpstreamError{Kind: KindClose, CloseCode: 1011, phase: phaseOpening}, unwell},
		{&UpstreamError{Kind: KindClose, CloseCode: 1012, phase: phaseTurn}, expired},
		{&UpstreamError{Kind: KindClose, CloseCode: 1000, phase: phaseOpening}, unwell},
		{&UpstreamError{Kind: KindErrorFrame, Code: "idle_timeout_exceeded", CloseCode: 1008}, expired},
		{&UpstreamError{Kind: KindErrorFrame, Code: "idle_timeout_exceeded"}, Class{Category: CategoryExpired, Retryable: true}},
		{&UpstreamError{Kind: KindErrorFrame, Code: "backend_connection_failed", phase: phaseOpening}, unwell},
		{&UpstreamError{Kind: KindErrorFrame, Code: "backend_connection_failed", phase: phaseOpening, byok: true}, refused(CategoryProviderKey)},
		{&UpstreamError{Kind: KindErrorFrame, Code: "backend_connection_failed", byok: true}, unwell},
		{&UpstreamError{Kind: KindErrorFrame, Code: "brand_new"}, Class{}},
		{&UpstreamError{Kind: KindHandshake, HTTPStatus: 403}, refused(CategoryAuth)},
		{&UpstreamError{Kind: KindHandshake, HTTPStatus: 502}, unwell},
		{&UpstreamError{Kind: KindTransport}, unwell},
	} {
		if got := tc.err.Class(); got != tc.want {
			t.Errorf("%v (phase %d, byok %v): %+v, want %+v", tc.err, tc.err.phase, tc.err.byok, got, tc.want)
		}
	}
	if KnownCode("") || !KnownCode("provider_error") || KnownCode("brand_new") {
		t.Error("KnownCode disagrees with the table")
	}
}

// TestNumericCodes: an error frame whose code is a number, as Gradium sends
// them through SLNG and as LiveKit's plugin reads status_code, code and
// err_code, is classified by its HTTP or close meaning.
func TestNumericCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code   string
		closed int
		ph     phase
		want   Class
	}{
		{"429", 0, phaseTurn, Class{Category: CategoryRateLimited, Retryable: true}},
		{"503", 0, phaseTurn, unwell},
		{"502", 1011, phaseIdle, unwell},
		{"413", 0, phaseTurn, refused(CategoryRequest)},
		{"400", 0, phaseTurn, refused(CategoryRequest)},
		{"400", 0, phaseOpening, refused(CategoryConfig)},
		{"422", 0, phaseIdle, refused(CategoryRequest)},
		{"418", 0, phaseIdle, refused(CategoryRequest)},
		{"401", 0, phaseIdle, refused(CategoryAuth)},
		{"404", 0, phaseOpening, refused(CategoryNotFound)},
		{"408", 0, phaseTurn, busy},
		{"425", 0, phaseTurn, busy},
		// A close code: what the same close would be. Gradium's 1008 with
		// the close after it is a reap; before ready, SLNG failing.
		{"1008", 1008, phaseIdle, expired},
		{"1008", 0, phaseIdle, Class{Category: CategoryExpired, Retryable: true}},
		{"1008", 1008, phaseOpening, busy},
		{"1011", 1011, phaseTurn, unwell},
		{"4000", 4000, phaseIdle, busy},
		// Not numbers SLNG's clients know.
		{"99", 0, phaseIdle, unknownEF},
		{"-429", 0, phaseIdle, unknownEF},
		{"42900", 0, phaseIdle, unknownEF},
		{"600", 0, phaseIdle, unknownEF},
	} {
		e := &UpstreamError{Kind: KindErrorFrame, Code: tc.code, CloseCode: tc.closed, phase: tc.ph}
		if got := e.Class(); got != tc.want {
			t.Errorf("code %s (close %d, phase %d): %+v, want %+v", tc.code, tc.closed, tc.ph, got, tc.want)
		}
	}
	for code, want := range map[string]bool{"429": true, "503": true, "1008": true, "413": true, "4000": false, "599": false, "7": false} {
		if KnownCode(code) != want {
			t.Errorf("KnownCode(%s) = %v, want %v", code, !want, want)
		}
	}
}
