package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/callers"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestToStatusTable checks every row of docs/errors.md as a unit: code,
// reason, RetryInfo and metadata.
func TestToStatusTable(t *testing.T) {
	t.Parallel()
	frame := func(code string) error {
		return fmt.Errorf("recv: %w", &slngclient.UpstreamError{Kind: slngclient.KindErrorFrame, Code: code, Message: "m", CloseCode: 1011})
	}
	handshake := func(st int) error {
		return &slngclient.UpstreamError{Kind: slngclient.KindHandshake, HTTPStatus: st, CloseCode: -1}
	}
	closed := func(code int) error {
		return &slngclient.UpstreamError{Kind: slngclient.KindClose, CloseCode: code}
	}
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
		retry  time.Duration // -1: no RetryInfo
	}{
		{"auth_error", frame("auth_error"), codes.Internal, ReasonUpstreamAuthFailed, -1},
		{"http 401", handshake(401), codes.Internal, ReasonUpstreamAuthFailed, -1},
		{"http 403", handshake(403), codes.Internal, ReasonUpstreamAuthFailed, -1},
		{"config_error", frame("config_error"), codes.InvalidArgument, ReasonUpstreamConfigRejected, -1},
		{"http 400", handshake(400), codes.InvalidArgument, ReasonUpstreamConfigRejected, -1},
		{"invalid_request", frame("invalid_request"), codes.InvalidArgument, ReasonUpstreamRequestRejected, -1},
		{"payload_too_large", frame("payload_too_large"), codes.InvalidArgument, ReasonUpstreamRequestRejected, -1},
		{"pronunciation_not_found", frame("pronunciation_not_found"), codes.InvalidArgument, ReasonUpstreamRequestRejected, -1},
		{"http 404", handshake(404), codes.NotFound, ReasonUpstreamModelNotFound, -1},
		{"rate_limit", frame("rate_limit"), codes.ResourceExhausted, ReasonUpstreamRateLimited, time.Second},
		{"rate_limit_exceeded", frame("rate_limit_exceeded"), codes.ResourceExhausted, ReasonUpstreamRateLimited, time.Second},
		{"http 429", handshake(429), codes.ResourceExhausted, ReasonUpstreamRateLimited, time.Second},
		// Numeric codes in error frames mean what the status or close
		// code means.
		{"clear unanswered", errClearUnanswered, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"finalize unanswered", errFinalizeUnanswered, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"frame 429", frame("429"), codes.ResourceExhausted, ReasonUpstreamRateLimited, time.Second},
		{"frame 503", frame("503"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"frame 413", frame("413"), codes.InvalidArgument, ReasonUpstreamRequestRejected, -1},
		{"frame 418", frame("418"), codes.InvalidArgument, ReasonUpstreamRequestRejected, -1},
		{"frame 1008", frame("1008"), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"overloaded", errOverloaded, codes.ResourceExhausted, ReasonGatewayOverloaded, time.Second},
		{"dial rate", fmt.Errorf("acquire: %w", slngpool.ErrDialRate), codes.ResourceExhausted, ReasonUpstreamCapacity, time.Second},
		{"provider_error", frame("provider_error"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"backend_connection_failed", frame("backend_connection_failed"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"backend_error", frame("backend_error"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"not_ready", frame("not_ready"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"backpressure", frame("backpressure"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"stt_metering_unavailable", frame("stt_metering_unavailable"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"translation_error", frame("translation_error"), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"http 503", handshake(503), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"http 500", handshake(500), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"close 1006", &slngclient.UpstreamError{Kind: slngclient.KindTransport, CloseCode: 1006}, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		// Reaps: SLNG's housekeeping, often without an error frame.
		{"close 1001", closed(1001), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"close 1008", closed(1008), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"close 1011", closed(1011), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"close 1012", closed(1012), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"close 1013", closed(1013), codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"turn timeout", errTurnTimeout, codes.Unavailable, ReasonUpstreamTurnTimeout, time.Second},
		{"ready timeout", &slngclient.UpstreamError{Kind: slngclient.KindTimeout}, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"idle_timeout_exceeded", frame("idle_timeout_exceeded"), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"max_connection_duration_exceeded", frame("max_connection_duration_exceeded"), codes.Unavailable, ReasonUpstreamSessionExpired, 0},
		{"protocol", &slngclient.UpstreamError{Kind: slngclient.KindProtocol}, codes.Unavailable, ReasonUpstreamProtocolError, time.Second},
		{"draining", errDraining, codes.Unavailable, ReasonServerDraining, 0},
		{"too long", errStreamTooLong, codes.OutOfRange, ReasonStreamDurationExceeded, 0},
		{"idle", errCallerIdle, codes.OutOfRange, ReasonCallerIdle, 0},
		{"no config", errFirstMessageTimeout, codes.OutOfRange, ReasonFirstMessageTimeout, 0},
		{"stalled", errCallerStalled, codes.ResourceExhausted, ReasonCallerStalled, -1},
		{"too slow", withMetadata(errCallerTooSlow, map[string]string{"turn_id": "1"}), codes.ResourceExhausted, ReasonCallerTooSlow, -1},
		{"closed before speaking", errClosedBeforeSpeaking, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"closed before the audio ended", errUpstreamClosedEarly, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"finals late", errFinalsTimeout, codes.Unavailable, ReasonUpstreamUnavailable, time.Second},
		{"turn timeout as the pool sees it", slngclient.NewTimeout("no progress on the turn", errTurnTimeout), codes.Unavailable, ReasonUpstreamTurnTimeout, time.Second},
		{"held back", &slngclient.HeldBackError{Err: errFakeLost}, codes.ResourceExhausted, ReasonCallerTooSlow, -1},
		{"unknown code", frame("brand_new_code"), codes.Unknown, ReasonUpstreamUnknownError, -1},
		{"invalid request", invalid("config", "missing"), codes.InvalidArgument, ReasonInvalidRequest, -1},
		{"budget", fmt.Errorf("acquire: %w", slngpool.ErrBudget), codes.ResourceExhausted, ReasonUpstreamBudget, time.Second},
		{"caller not allowed", &callers.DeniedError{Caller: "c", RPC: "Synthesize", Model: "deepgram/aura:2"}, codes.PermissionDenied, ReasonCallerNotAllowed, -1},
		{"caller quota", &callers.QuotaError{Caller: "c", Quota: callers.QuotaCharacters, Limit: 10, RetryAfter: 17 * time.Second},
			codes.ResourceExhausted, ReasonCallerQuotaExceeded, 17 * time.Second},
		{"bug", errors.New("boom"), codes.Internal, "", -1},
		{"cancelled", context.Canceled, codes.Canceled, "", -1},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "", -1},
	}
	meta := streamMeta{sessionID: "gw_1", model: "deepgram/aura:2", upstreamSessionID: "sess_1"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, internal := toStatus(tt.err, nil, meta)
			if st.Code() != tt.code {
				t.Fatalf("code = %v, want %v", st.Code(), tt.code)
			}
			if internal != (tt.code == codes.Internal) {
				t.Errorf("internal = %v", internal)
			}
			if tt.code == codes.Internal && tt.reason == "" && st.Message() != "internal error" {
				t.Errorf("internal message %q leaks details", st.Message())
			}
			info, retry := details(st)
			if tt.reason == "" {
				if info != nil {
					t.Errorf("unexpected ErrorInfo %v", info)
				}
				return
			}
			if info == nil || info.GetReason() != tt.reason || info.GetDomain() != ErrorDomain {
				t.Fatalf("ErrorInfo = %v, want reason %s", info, tt.reason)
			}
			if info.GetMetadata()["session_id"] != "gw_1" || info.GetMetadata()["model"] != "deepgram/aura:2" {
				t.Errorf("metadata = %v", info.GetMetadata())
			}
			var ue *slngclient.UpstreamError
			if errors.As(tt.err, &ue) && ue.Code != "" && info.GetMetadata()["upstream_code"] != ue.Code {
				t.Errorf("upstream_code = %q, want %q", info.GetMetadata()["upstream_code"], ue.Code)
			}
			switch {
			case tt.retry < 0 && retry != nil:
				t.Errorf("unexpected RetryInfo %v", retry)
			case tt.retry >= 0 && (retry == nil || retry.GetRetryDelay().AsDuration() != tt.retry):
				t.Errorf("RetryInfo = %v, want %v", retry, tt.retry)
			}
		})
	}
}

// TestCategoryRows: every category slngclient classifies upstream
// failures into has its own row of the table.
func TestCategoryRows(t *testing.T) {
	t.Parallel()
	seen := map[string]slngclient.Category{}
	for c := slngclient.CategoryUnknown; c <= slngclient.CategoryProtocol; c++ {
		row, ok := categoryRows[c]
		if !ok || row.reason == "" {
			t.Errorf("category %v has no row", c)
			continue
		}
		key := row.reason + "/" + row.message
		if other, dup := seen[key]; dup {
			t.Errorf("categories %v and %v share a row", other, c)
		}
		seen[key] = c
	}
	if row := categoryRows[slngclient.CategoryProviderKey]; row.code != codes.Internal || row.reason != ReasonUpstreamAuthFailed || row.retry >= 0 {
		t.Errorf("a refused provider key maps to %+v", row)
	}
}

// TestToStatusKeyRefused: SLNG refusing the gateway's own key is INTERNAL
// (an operator problem: callers must not refresh their credentials or
// retry); refusing a caller's own x-slng-api-key is UNAUTHENTICATED.
func TestToStatusKeyRefused(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		&slngclient.UpstreamError{Kind: slngclient.KindHandshake, HTTPStatus: 401, Message: "Invalid or missing API key"},
		&slngclient.UpstreamError{Kind: slngclient.KindErrorFrame, Code: "auth_error"},
	} {
		st, internal := toStatus(err, nil, streamMeta{})
		if st.Code() != codes.Internal || !internal {
			t.Errorf("gateway's key: %v, internal %v; want INTERNAL", st, internal)
		}
		st, internal = toStatus(err, nil, streamMeta{callerKey: true})
		if info, _ := details(st); st.Code() != codes.Unauthenticated || internal || info.GetReason() != ReasonUpstreamAuthFailed {
			t.Errorf("caller's key: %v; want UNAUTHENTICATED/UPSTREAM_AUTH_FAILED", st)
		}
	}
	// A refused handshake's body, as slngclient cleaned it, reaches the
	// message.
	st, _ := toStatus(&slngclient.UpstreamError{Kind: slngclient.KindHandshake, HTTPStatus: 400,
		Message: "BYOK is only supported for external STT/TTS routes"}, nil, streamMeta{})
	if !strings.HasSuffix(st.Message(), ": BYOK is only supported for external STT/TTS routes") {
		t.Errorf("message %q lacks SLNG's reason", st.Message())
	}
}

// TestToStatusCallerContextWins checks that the caller's own cancellation
// or deadline is reported as such, whatever the pumps failed with.
func TestToStatusCallerContextWins(t *testing.T) {
	t.Parallel()
	upstream := &slngclient.UpstreamError{Kind: slngclient.KindTransport}
	if st, _ := toStatus(upstream, context.Canceled, streamMeta{}); st.Code() != codes.Canceled {
		t.Errorf("code = %v, want Canceled", st.Code())
	}
	if st, _ := toStatus(upstream, context.DeadlineExceeded, streamMeta{}); st.Code() != codes.DeadlineExceeded {
		t.Errorf("code = %v, want DeadlineExceeded", st.Code())
	}
	if st, _ := toStatus(nil, nil, streamMeta{}); st.Code() != codes.OK {
		t.Errorf("nil error gave %v", st.Code())
	}
}

func details(st *status.Status) (*errdetails.ErrorInfo, *errdetails.RetryInfo) {
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	return info, retry
}

// TestKeyRefusedCounted: SLNG refusing the gateway's own key and refusing a
// caller's own key end streams differently and count apart, so that the
// operator's alert fires only for the gateway's key.
func TestKeyRefusedCounted(t *testing.T) {
	t.Parallel()
	// The simulator accepts only testKey; the gateway is given another.
	h := newHarness(t, slngsim.Options{APIKey: "the-only-good-key"}, Config{AllowCallerKey: true})
	_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Refused."})
	wantStatus(t, err, codes.Internal, ReasonUpstreamAuthFailed)
	ctx := metadata.AppendToOutgoingContext(testContext(t), CallerKeyHeader, "a-callers-bad-key")
	_, err = h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Refused too."})
	wantStatus(t, err, codes.Unauthenticated, ReasonUpstreamAuthFailed)
	for credential, want := range map[string]float64{"gateway": 1, "caller": 1} {
		if got := testutil.ToFloat64(h.metrics.keyRefused.WithLabelValues(credential)); got != want {
			t.Errorf("key refused{credential=%q} = %v, want %v", credential, got, want)
		}
	}
	if got := testutil.ToFloat64(h.metrics.upstreamErrors.WithLabelValues(ReasonUpstreamAuthFailed)); got != 2 {
		t.Errorf("upstream errors{UPSTREAM_AUTH_FAILED} = %v, want 2", got)
	}
}

// TestCircuitOpenScopes: an open breaker of one configuration says so, in
// its message and metadata, apart from a model's.
func TestCircuitOpenScopes(t *testing.T) {
	t.Parallel()
	for _, config := range []bool{false, true} {
		st, _ := toStatus(&slngpool.CircuitOpenError{Model: "m/x:1", Config: config, RetryAfter: time.Second}, nil, streamMeta{})
		info, retry := details(st)
		if st.Code() != codes.Unavailable || info.GetReason() != ReasonUpstreamCircuitOpen || retry.GetRetryDelay().AsDuration() != time.Second {
			t.Fatalf("config %v: %v", config, st.Proto())
		}
		if got := info.GetMetadata()["breaker"] == "configuration"; got != config || strings.Contains(st.Message(), "configuration") != config {
			t.Errorf("config %v: %q %v", config, st.Message(), info.GetMetadata())
		}
	}
}
