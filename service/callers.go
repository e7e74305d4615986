package service

import (
	"context"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/callers"
)

// Callers identifies the caller of each stream, admits it under the access
// policy and the caller's quotas, and meters what it used.
// *callers.Gate implements it.
type Callers interface {
	// Identify returns the caller id of the stream whose context is ctx.
	Identify(ctx context.Context) string
	// Admit returns *callers.DeniedError or *callers.QuotaError when the
	// stream may not start; the stream returned must be ended. Its
	// AllowModel checks the model once the config names it.
	Admit(ctx context.Context, caller, rpc string) (*callers.Stream, error)
	// Allows reports whether the access policy lets caller use rpc with
	// model, without admitting anything: what CatalogService lists.
	Allows(caller, rpc, model string) bool
}

// fieldCaller is the log field of the caller id, on the service's lines
// and the access-log line alike.
const fieldCaller = "caller"

// spanCaller is the attribute of the caller id on the stream's server
// span.
const spanCaller = "speech_gateway.caller_id"

type callerIDKey struct{}

// callerOf is the caller id of the stream of ctx: StreamInterceptor's, or
// one found now; "" when the gateway does not identify callers.
func (s *Server) callerOf(ctx context.Context) string {
	if id, ok := ctx.Value(callerIDKey{}).(string); ok {
		return id
	}
	if s.cfg.Callers == nil {
		return ""
	}
	return s.cfg.Callers.Identify(ctx)
}

// callerUsage is one stream's account with its caller: what it used, for
// metering, and its place under the caller's quotas once admitted.
type callerUsage struct {
	caller, rpc string
	stream      *callers.Stream // nil until admitted, and without Callers
	characters  atomic.Int64
	ended       atomic.Bool
	// sessionNanos is the time the stream held upstream sessions, added by
	// upstreamLease.release.
	sessionNanos atomic.Int64
}

// callerUsage starts the caller's account of a stream: the caller id goes
// on its log lines and its span.
func (s *Server) callerUsage(ctx context.Context, log *zap.Logger, rpc string) (*callerUsage, *zap.Logger) {
	u := &callerUsage{caller: s.callerOf(ctx), rpc: rpc}
	if u.caller != "" {
		log = log.With(zap.String(fieldCaller, u.caller))
		trace.SpanFromContext(ctx).SetAttributes(attribute.String(spanCaller, u.caller))
	}
	return u, log
}

// admit asks the access policy and the caller's quotas whether the stream
// may start, before its config and before it takes a gateway slot.
func (u *callerUsage) admit(ctx context.Context, s *Server) error {
	if s.cfg.Callers == nil {
		return nil
	}
	cs, err := s.cfg.Callers.Admit(ctx, u.caller, u.rpc)
	if err != nil {
		return err
	}
	u.stream = cs
	return nil
}

// allowModel asks the access policy whether the caller may use model,
// once the config names it, before any upstream work.
func (u *callerUsage) allowModel(model string) error {
	if u.stream == nil {
		return nil
	}
	return u.stream.AllowModel(model)
}

// charge counts a text about to be synthesized against the caller's
// characters per minute; a text beyond it ends the stream with
// CALLER_QUOTA_EXCEEDED before it goes upstream.
func (u *callerUsage) charge(ctx context.Context, text string) error {
	n := int64(utf8.RuneCountInString(text))
	if u.stream != nil {
		if err := u.stream.Charge(ctx, n); err != nil {
			return err
		}
	}
	u.characters.Add(n)
	return nil
}

// end meters a finished stream: the caller's usage counters, and one
// usage log line with the same figures. err is the status the stream
// ended with.
//
// Only the first call counts: the handlers also defer one, so that a
// panicking handler (recovered as INTERNAL) still frees the caller's place
// under its quotas.
func (u *callerUsage) end(log *zap.Logger, model string, synthesized, transcribed time.Duration, err error) {
	if u.stream == nil || !u.ended.CompareAndSwap(false, true) {
		return // never admitted (nothing was used), or ended already
	}
	usage := callers.Usage{
		Characters:             u.characters.Load(),
		SynthesizedSeconds:     synthesized.Seconds(),
		TranscribedSeconds:     transcribed.Seconds(),
		UpstreamSessionSeconds: time.Duration(u.sessionNanos.Load()).Seconds(),
	}
	u.stream.End(usage)
	log.Info("stream usage", zap.String("model", model), zap.String("code", status.Code(err).String()),
		zap.Int64("characters", usage.Characters), zap.Float64("synthesized_seconds", usage.SynthesizedSeconds),
		zap.Float64("transcribed_seconds", usage.TranscribedSeconds),
		zap.Float64("upstream_session_seconds", usage.UpstreamSessionSeconds))
}

// errHandlerAborted is the status of a stream whose handler ended without
// reaching its end (a panic), for its usage line.
var errHandlerAborted = status.Error(codes.Internal, "internal error")
