package slngclient

import "testing"

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
