package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// ErrorDomain is the ErrorInfo domain of every error the gateway returns.
const ErrorDomain = "speech-gateway"

// ErrorInfo reasons. They are part of the API (docs/errors.md): callers
// branch on them, so they never change meaning.
const (
	ReasonInvalidRequest          = "INVALID_REQUEST"
	ReasonUpstreamAuthFailed      = "UPSTREAM_AUTH_FAILED"
	ReasonUpstreamConfigRejected  = "UPSTREAM_CONFIG_REJECTED"
	ReasonUpstreamRequestRejected = "UPSTREAM_REQUEST_REJECTED"
	ReasonUpstreamModelNotFound   = "UPSTREAM_MODEL_NOT_FOUND"
	ReasonUpstreamRateLimited     = "UPSTREAM_RATE_LIMITED"
	ReasonGatewayOverloaded       = "GATEWAY_OVERLOADED"
	ReasonUpstreamUnavailable     = "UPSTREAM_UNAVAILABLE"
	ReasonUpstreamSessionExpired  = "UPSTREAM_SESSION_EXPIRED"
	ReasonUpstreamCircuitOpen     = "UPSTREAM_CIRCUIT_OPEN"
	ReasonUpstreamCapacity        = "UPSTREAM_CAPACITY_EXHAUSTED"
	ReasonUpstreamProtocolError   = "UPSTREAM_PROTOCOL_ERROR"
	ReasonServerDraining          = "SERVER_DRAINING"
	ReasonUpstreamUnknownError    = "UPSTREAM_UNKNOWN_ERROR"
	ReasonStreamDurationExceeded  = "STREAM_DURATION_EXCEEDED"
	ReasonCallerIdle              = "CALLER_IDLE_TIMEOUT"
	ReasonUpstreamTurnTimeout     = "UPSTREAM_TURN_TIMEOUT"
	ReasonCallerNotAllowed        = "CALLER_NOT_ALLOWED"
	ReasonCallerQuotaExceeded     = "CALLER_QUOTA_EXCEEDED"
	ReasonUpstreamBudget          = "UPSTREAM_BUDGET_EXHAUSTED"
	ReasonFirstMessageTimeout     = "FIRST_MESSAGE_TIMEOUT"
	ReasonCallerStalled           = "CALLER_STALLED"
	ReasonCallerTooSlow           = "CALLER_TOO_SLOW"
)

// outcome is one row of the error table: what a failure becomes on the wire.
type outcome struct {
	code    codes.Code
	reason  string
	message string
	// retry is the RetryInfo delay; negative means no RetryInfo.
	retry time.Duration
}

const noRetry = -1

// Retry delays. SLNG publishes none; its own guidance is exponential backoff
// from 1 s, which callers apply on top of this first delay.
const (
	retrySoon = time.Second
	retryNow  = 0
)

var (
	rowUnavailable   = outcome{codes.Unavailable, ReasonUpstreamUnavailable, "upstream unavailable", retrySoon}
	rowProtocol      = outcome{codes.Unavailable, ReasonUpstreamProtocolError, "upstream broke the protocol", retrySoon}
	rowReaped        = outcome{codes.Unavailable, ReasonUpstreamSessionExpired, "upstream ended the session", retryNow}
	rowTurnTimeout   = outcome{codes.Unavailable, ReasonUpstreamTurnTimeout, "upstream made no progress on the turn in time", retrySoon}
	rowAuthHandshake = outcome{codes.Unauthenticated, ReasonUpstreamAuthFailed, "upstream rejected the caller's SLNG key", noRetry}
	rowOwnKeyRefused = outcome{codes.Internal, ReasonUpstreamAuthFailed, "upstream rejected the gateway's own SLNG key; an operator must fix it", noRetry}
	rowConfigReject  = outcome{codes.InvalidArgument, ReasonUpstreamConfigRejected, "upstream rejected the configuration", noRetry}
	rowRequestReject = outcome{codes.InvalidArgument, ReasonUpstreamRequestRejected, "upstream rejected the request", noRetry}
	rowProviderKey   = outcome{codes.Internal, ReasonUpstreamAuthFailed, "upstream's provider rejected the gateway's provider key (BYOK); an operator must fix it", noRetry}
	rowNotFound      = outcome{codes.NotFound, ReasonUpstreamModelNotFound, "upstream does not know the model", noRetry}
	rowRateLimited   = outcome{codes.ResourceExhausted, ReasonUpstreamRateLimited, "upstream rate limit reached", retrySoon}
	rowUnknownCode   = outcome{codes.Unknown, ReasonUpstreamUnknownError, "upstream reported an unknown error", noRetry}
	rowDraining      = outcome{codes.Unavailable, ReasonServerDraining, "server is shutting down", retryNow}
	rowOverloaded    = outcome{codes.ResourceExhausted, ReasonGatewayOverloaded, "gateway stream limit reached", retrySoon}
	rowTooLong       = outcome{codes.OutOfRange, ReasonStreamDurationExceeded, "stream reached the gateway's maximum duration", retryNow}
	rowCallerIdle    = outcome{codes.OutOfRange, ReasonCallerIdle, "the caller sent nothing within the gateway's idle timeout", retryNow}
	rowInternal      = outcome{codes.Internal, "", "internal error", noRetry}
	rowCircuitOpen   = outcome{codes.Unavailable, ReasonUpstreamCircuitOpen, "upstream is failing for this model; not trying it for now", retrySoon}
	rowDialRate      = outcome{codes.ResourceExhausted, ReasonUpstreamCapacity, "gateway's upstream dial rate limit reached", retrySoon}
	rowCapacity      = outcome{codes.ResourceExhausted, ReasonUpstreamCapacity, "gateway's upstream session limit reached", retrySoon}
	rowBudget        = outcome{codes.ResourceExhausted, ReasonUpstreamBudget, "the SLNG session budget shared by the gateway's replicas is in use", retrySoon}
	rowNotAllowed    = outcome{codes.PermissionDenied, ReasonCallerNotAllowed, "the access policy does not let this caller use this RPC with this model", noRetry}
	rowCallerQuota   = outcome{codes.ResourceExhausted, ReasonCallerQuotaExceeded, "the caller reached its quota", retrySoon}
	rowFirstMessage  = outcome{codes.OutOfRange, ReasonFirstMessageTimeout, "the caller sent no config within the gateway's first-message timeout", retryNow}
	rowStalled       = outcome{codes.ResourceExhausted, ReasonCallerStalled, "the caller accepted no message within the gateway's stall timeout", noRetry}
	rowTooSlow       = outcome{codes.ResourceExhausted, ReasonCallerTooSlow, "the caller read more slowly than the upstream spoke, and the upstream ended the session meanwhile", noRetry}
	rowNoSpeech      = outcome{codes.Unavailable, ReasonUpstreamUnavailable, "upstream kept closing the session before speaking the turn", retrySoon}
	rowClosedEarly   = outcome{codes.Unavailable, ReasonUpstreamUnavailable, "upstream closed the session before the audio ended", retrySoon}
	rowFinalsLate    = outcome{codes.Unavailable, ReasonUpstreamUnavailable, "upstream did not deliver the last transcripts in time", retrySoon}
	rowUnanswered    = outcome{codes.Unavailable, ReasonUpstreamUnavailable, "upstream kept leaving requests unanswered", retrySoon}
)

// metadataError adds ErrorInfo metadata to the error it wraps.
type metadataError struct {
	err error
	md  map[string]string
}

func (e *metadataError) Error() string { return e.err.Error() }
func (e *metadataError) Unwrap() error { return e.err }

// withMetadata attaches ErrorInfo metadata to err, e.g. where a caller can
// resume.
func withMetadata(err error, md map[string]string) error {
	return &metadataError{err: err, md: md}
}

// The gateway's own conditions that end streams. Each has a row of its own
// (statusRules); none poses as an upstream error.
var (
	// errDraining ends streams when the server shuts down.
	errDraining = errors.New("server is draining")
	// errOverloaded rejects streams beyond the gateway's own limit.
	errOverloaded = errors.New("gateway stream limit reached")
	// errStreamTooLong ends streams that reach MaxStreamDuration.
	errStreamTooLong = errors.New("stream reached the gateway's maximum duration")
	// errCallerIdle ends streams whose caller went quiet for
	// CallerIdleTimeout.
	errCallerIdle = errors.New("the caller sent nothing within the gateway's idle timeout")
	// errFirstMessageTimeout ends streams whose caller sent no config within
	// FirstMessageTimeout.
	errFirstMessageTimeout = errors.New("the caller sent no config within the first-message timeout")
	// errCallerStalled ends streams whose caller accepted no message for
	// CallerStallTimeout.
	errCallerStalled = errors.New("the caller accepted no message within the stall timeout")
	// errCallerTooSlow ends a turn that SLNG's session ended while the
	// caller was behind (slngclient.HeldBackError): part of its audio went
	// out, so it cannot be replayed.
	errCallerTooSlow = errors.New("the upstream ended the session while the caller was behind")
	// errTurnTimeout ends a turn that made no progress for TurnTimeout.
	errTurnTimeout = errors.New("upstream made no progress on the turn within the turn timeout")
	// errClosedBeforeSpeaking: SLNG kept closing the session before
	// speaking a turn.
	errClosedBeforeSpeaking = errors.New("upstream kept closing the session before speaking the turn")
	// errUpstreamClosedEarly: SLNG closed a Transcribe session normally
	// before the caller's audio ended.
	errUpstreamClosedEarly = errors.New("upstream closed the session before the audio ended")
	// errFinalsTimeout: the last transcripts did not come within
	// FinalsTimeout after the caller's half-close.
	errFinalsTimeout = errors.New("upstream did not deliver the last transcripts in time")
	// errClearUnanswered: SLNG answered a clear within ClearTimeout
	// neither with `cleared` nor with an end of a turn; the session was
	// retired. It names a reconnect; the stream ends with it only when
	// reconnects keep bringing nothing.
	errClearUnanswered = errors.New("upstream did not answer the clear in time")
	// errFinalizeUnanswered: no final answered a finalize within
	// FinalizeTimeout; the audio went to a new session. As
	// errClearUnanswered.
	errFinalizeUnanswered = errors.New("upstream did not answer the finalize in time")
)

// streamMeta is what ErrorInfo metadata reports about the failing stream.
type streamMeta struct {
	sessionID         string
	model             string
	upstreamSessionID string
	upstreamRequestID string
	// callerKey is set when the stream uses the caller's own SLNG key
	// (x-slng-api-key): SLNG refusing it is then the caller's problem.
	callerKey bool
	// caller is the caller id (service/callers.go), "" when not known.
	caller string
	// region is the SLNG region the gateway dials (Config.Region).
	region string
}

// categoryRows maps slngclient's classification of an upstream failure
// (slngclient/codes.go, the one table of SLNG's error codes, close codes
// and handshake statuses) to rows of the table.
var categoryRows = map[slngclient.Category]outcome{
	slngclient.CategoryUnknown:     rowUnknownCode,
	slngclient.CategoryUnavailable: rowUnavailable,
	// SLNG reaps idle and over-long sessions, often with no error frame:
	// the close code is the only account, and it is SLNG's housekeeping,
	// never the caller's fault.
	slngclient.CategoryExpired:     rowReaped,
	slngclient.CategoryAuth:        rowAuthHandshake,
	slngclient.CategoryProviderKey: rowProviderKey,
	slngclient.CategoryConfig:      rowConfigReject,
	slngclient.CategoryRequest:     rowRequestReject,
	slngclient.CategoryNotFound:    rowNotFound,
	slngclient.CategoryRateLimited: rowRateLimited,
	slngclient.CategoryProtocol:    rowProtocol,
}

// upstreamOutcome is the table lookup for an upstream failure.
func upstreamOutcome(ue *slngclient.UpstreamError) outcome {
	if row, ok := categoryRows[ue.Class().Category]; ok {
		return row
	}
	return rowUnavailable
}

// turnOutcome is the table row for the failure of one turn.
func turnOutcome(err error) outcome {
	switch {
	case errors.Is(err, errTurnTimeout):
		return rowTurnTimeout
	case errors.Is(err, errCallerTooSlow):
		return rowTooSlow
	case errors.Is(err, errUpstreamClosedEarly):
		return rowClosedEarly
	}
	if ue, ok := slngclient.AsUpstreamError(err); ok {
		return upstreamOutcome(ue)
	}
	return rowUnavailable
}

// ruled is what a rule makes of an error: its row, and the details the
// row carries beyond the stream's metadata.
type ruled struct {
	row   outcome
	extra map[string]string
	more  []protoadapt.MessageV1 // details after ErrorInfo
}

// statusRule is one rule of the status table: match says whether err is
// the rule's, and what it becomes.
type statusRule struct {
	name  string
	match func(err error, meta streamMeta) (ruled, bool)
}

// is is a rule for a sentinel error.
func is(target error, row outcome) statusRule {
	return statusRule{name: target.Error(), match: func(err error, _ streamMeta) (ruled, bool) {
		return ruled{row: row}, errors.Is(err, target)
	}}
}

// statusRules is the one table that turns the errors that end streams
// into what the caller sees (docs/errors.md). The first rule that matches
// wins; an error no rule knows is INTERNAL.
var statusRules = []statusRule{
	is(errDraining, rowDraining),
	is(slngpool.ErrClosed, rowDraining),
	{name: "circuit open", match: func(err error, _ streamMeta) (ruled, bool) {
		var coe *slngpool.CircuitOpenError
		if !errors.As(err, &coe) {
			return ruled{}, false
		}
		r := ruled{row: rowCircuitOpen, extra: map[string]string{}}
		r.row.retry = coe.RetryAfter
		if coe.Region != "" {
			r.extra["region"] = coe.Region
		}
		if coe.Config {
			// One caller's voice, language or encoding, not the model.
			r.row.message = "upstream kept ending sessions of this configuration (its voice, language or encoding) at init; not trying it for now"
			r.extra["breaker"] = "configuration"
		}
		return r, true
	}},
	{name: "caller not allowed", match: func(err error, _ streamMeta) (ruled, bool) {
		var denied *callers.DeniedError
		if !errors.As(err, &denied) {
			return ruled{}, false
		}
		md := map[string]string{"caller": denied.Caller, "rpc": denied.RPC}
		if denied.Model != "" {
			md["model"] = denied.Model
		}
		return ruled{row: rowNotAllowed, extra: md}, true
	}},
	{name: "caller quota", match: func(err error, _ streamMeta) (ruled, bool) {
		var quota *callers.QuotaError
		if !errors.As(err, &quota) {
			return ruled{}, false
		}
		r := ruled{row: rowCallerQuota, extra: map[string]string{"caller": quota.Caller, "quota": quota.Quota}}
		r.row.message = fmt.Sprintf("the caller reached its quota of %d %s", quota.Limit, quota.Quota)
		r.row.retry = quota.RetryAfter
		r.more = []protoadapt.MessageV1{&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "caller:" + quota.Caller,
			Description: fmt.Sprintf("%s: at most %d", quota.Quota, quota.Limit),
		}}}}
		return r, true
	}},
	is(slngpool.ErrBudget, rowBudget),
	is(slngpool.ErrDialRate, rowDialRate),
	is(slngpool.ErrExhausted, rowCapacity),
	is(errOverloaded, rowOverloaded),
	is(errStreamTooLong, rowTooLong),
	is(errCallerIdle, rowCallerIdle),
	is(errFirstMessageTimeout, rowFirstMessage),
	is(errCallerStalled, rowStalled),
	is(errCallerTooSlow, rowTooSlow),
	{name: "held back", match: func(err error, _ streamMeta) (ruled, bool) {
		var held *slngclient.HeldBackError
		return ruled{row: rowTooSlow}, errors.As(err, &held)
	}},
	is(errTurnTimeout, rowTurnTimeout),
	is(errClosedBeforeSpeaking, rowNoSpeech),
	is(errUpstreamClosedEarly, rowClosedEarly),
	is(errFinalsTimeout, rowFinalsLate),
	is(errClearUnanswered, rowUnanswered),
	is(errFinalizeUnanswered, rowUnanswered),
	{name: "upstream", match: func(err error, meta streamMeta) (ruled, bool) {
		ue, ok := slngclient.AsUpstreamError(err)
		if !ok {
			return ruled{}, false
		}
		r := ruled{row: upstreamOutcome(ue), extra: upstreamMetadata(ue)}
		if ue.RetryAfter > 0 && r.row.retry >= 0 {
			r.row.retry = ue.RetryAfter // SLNG's own Retry-After wins
		}
		if ue.Class().Category == slngclient.CategoryAuth && !meta.callerKey {
			// The gateway's own key: an operator problem. UNAUTHENTICATED
			// would make callers refresh their credentials and count it
			// as their fault; INTERNAL tells them not to retry.
			r.row = rowOwnKeyRefused
		}
		if ue.Class().Category == slngclient.CategoryNotFound && meta.model != "" {
			// Not every model runs in every region, and SLNG routes no
			// request between regions: the caller needs both names.
			r.row.message = fmt.Sprintf("upstream does not serve model %s", meta.model)
			if meta.region != "" {
				r.row.message += " in region " + meta.region
				r.extra["region"] = meta.region
			}
		}
		if ue.Kind == slngclient.KindHandshake && ue.Message != "" {
			// SLNG's own words on a refused handshake (e.g. "BYOK is
			// only supported for external STT/TTS routes"), which
			// slngclient bounds, sanitises and strips of keys.
			r.row.message += ": " + ue.Message
		}
		return r, true
	}},
}

// toStatus converts any error that ends a stream into the status the caller
// sees. It is the only place where errors become statuses. ctxErr is the
// stream context's error, which wins: once the caller has gone, whatever
// else failed is a consequence.
func toStatus(err error, ctxErr error, meta streamMeta) (st *status.Status, internal bool) {
	var verr *validationError
	switch {
	case err == nil:
		return status.New(codes.OK, ""), false
	case ctxErr != nil:
		return status.FromContextError(ctxErr), false
	case errors.As(err, &verr):
		st := status.New(codes.InvalidArgument, verr.Error())
		st, _ = st.WithDetails(
			errorInfo(ReasonInvalidRequest, meta, nil),
			&errdetails.BadRequest{FieldViolations: verr.violations},
		)
		return st, false
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "stream cancelled"), false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "stream deadline exceeded"), false
	}
	r, ok := ruleFor(err, meta)
	if !ok {
		if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
			// A status from the gRPC transport itself, e.g. the caller's
			// stream breaking: pass it on unchanged.
			return s, false
		}
		r = ruled{row: rowInternal}
	}
	var me *metadataError
	if errors.As(err, &me) {
		if r.extra == nil {
			r.extra = map[string]string{}
		}
		for k, v := range me.md {
			r.extra[k] = v
		}
	}
	st = status.New(r.row.code, r.row.message)
	if r.row.reason == "" {
		return st, r.row.code == codes.Internal
	}
	details := append([]protoadapt.MessageV1{errorInfo(r.row.reason, meta, r.extra)}, r.more...)
	if r.row.retry >= 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(r.row.retry)})
	}
	st, _ = st.WithDetails(details...)
	return st, r.row.code == codes.Internal
}

// ruleFor is the first rule of statusRules that matches err.
func ruleFor(err error, meta streamMeta) (ruled, bool) {
	for _, rule := range statusRules {
		if r, ok := rule.match(err, meta); ok {
			return r, true
		}
	}
	return ruled{}, false
}

func upstreamMetadata(ue *slngclient.UpstreamError) map[string]string {
	md := map[string]string{}
	if ue.Code != "" {
		md["upstream_code"] = ue.Code
	}
	if ue.CloseCode > 0 {
		md["upstream_close_code"] = strconv.Itoa(ue.CloseCode)
	}
	if ue.HTTPStatus > 0 {
		md["upstream_http_status"] = strconv.Itoa(ue.HTTPStatus)
	}
	return md
}

func errorInfo(reason string, meta streamMeta, extra map[string]string) *errdetails.ErrorInfo {
	md := map[string]string{}
	for k, v := range map[string]string{
		"session_id":          meta.sessionID,
		"model":               meta.model,
		"upstream_session_id": meta.upstreamSessionID,
		"upstream_request_id": meta.upstreamRequestID,
		"caller":              meta.caller,
	} {
		if v != "" {
			md[k] = v
		}
	}
	for k, v := range extra {
		md[k] = v
	}
	return &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}
}
