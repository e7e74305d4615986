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

// errDraining ends streams when the server shuts down.
var errDraining = errors.New("server is draining")

// errOverloaded rejects streams beyond the gateway's own limit.
var errOverloaded = errors.New("gateway stream limit reached")

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
	if errors.Is(err, errTurnTimeout) {
		return rowTurnTimeout
	}
	if ue, ok := slngclient.AsUpstreamError(err); ok {
		return upstreamOutcome(ue)
	}
	return rowUnavailable
}

// toStatus converts any error that ends a stream into the status the caller
// sees. It is the only place where errors become statuses. ctxErr is the
// stream context's error, which wins: once the caller has gone, whatever
// else failed is a consequence.
func toStatus(err error, ctxErr error, meta streamMeta) (st *status.Status, internal bool) {
	if err == nil {
		return status.New(codes.OK, ""), false
	}
	if ctxErr != nil {
		return status.FromContextError(ctxErr), false
	}
	var verr *validationError
	var ue *slngclient.UpstreamError
	var coe *slngpool.CircuitOpenError
	var denied *callers.DeniedError
	var quota *callers.QuotaError
	var row outcome
	var extra map[string]string
	var more []protoadapt.MessageV1 // details after ErrorInfo
	switch {
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
	case errors.Is(err, errDraining), errors.Is(err, slngpool.ErrClosed):
		row = rowDraining
	case errors.As(err, &coe):
		row = rowCircuitOpen
		row.retry = coe.RetryAfter
		if coe.Region != "" {
			extra = map[string]string{"region": coe.Region}
		}
	case errors.As(err, &denied):
		row = rowNotAllowed
		extra = map[string]string{"caller": denied.Caller, "rpc": denied.RPC, "model": denied.Model}
	case errors.As(err, &quota):
		row = rowCallerQuota
		row.message = fmt.Sprintf("the caller reached its quota of %d %s", quota.Limit, quota.Quota)
		row.retry = quota.RetryAfter
		extra = map[string]string{"caller": quota.Caller, "quota": quota.Quota}
		more = append(more, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "caller:" + quota.Caller,
			Description: fmt.Sprintf("%s: at most %d", quota.Quota, quota.Limit),
		}}})
	case errors.Is(err, slngpool.ErrBudget):
		row = rowBudget
	case errors.Is(err, slngpool.ErrDialRate):
		row = rowDialRate
	case errors.Is(err, slngpool.ErrExhausted):
		row = rowCapacity
	case errors.Is(err, errOverloaded):
		row = rowOverloaded
	case errors.Is(err, errStreamTooLong):
		row = rowTooLong
	case errors.Is(err, errCallerIdle):
		row = rowCallerIdle
	case errors.Is(err, errTurnTimeout):
		row = rowTurnTimeout
	case errors.As(err, &ue):
		row = upstreamOutcome(ue)
		extra = upstreamMetadata(ue)
		if ue.RetryAfter > 0 && row.retry >= 0 {
			row.retry = ue.RetryAfter // SLNG's own Retry-After wins
		}
		if ue.Class().Category == slngclient.CategoryAuth && !meta.callerKey {
			// The gateway's own key: an operator problem. UNAUTHENTICATED
			// would make callers refresh their credentials and count it
			// as their fault; INTERNAL tells them not to retry.
			row = rowOwnKeyRefused
		}
		if ue.Kind == slngclient.KindHandshake && ue.Message != "" {
			// SLNG's own words on a refused handshake (e.g. "BYOK is
			// only supported for external STT/TTS routes"), which
			// slngclient bounds, sanitises and strips of keys.
			row.message += ": " + ue.Message
		}
	default:
		if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
			// A status from the gRPC transport itself, e.g. the caller's
			// stream breaking: pass it on unchanged.
			return s, false
		}
		row = rowInternal
	}
	var me *metadataError
	if errors.As(err, &me) {
		if extra == nil {
			extra = map[string]string{}
		}
		for k, v := range me.md {
			extra[k] = v
		}
	}
	st = status.New(row.code, row.message)
	if row.reason == "" {
		return st, row.code == codes.Internal
	}
	details := append([]protoadapt.MessageV1{errorInfo(row.reason, meta, extra)}, more...)
	if row.retry >= 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(row.retry)})
	}
	st, _ = st.WithDetails(details...)
	return st, row.code == codes.Internal
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
