package service

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// tracerName names the service's spans' instrumentation scope.
const tracerName = "github.com/speech-gateway/speech-gateway/service"

// upstreamLease is a pool lease with the span that covers its upstream
// session, from acquire to release: one span per SLNG session, never one
// per audio message.
type upstreamLease struct {
	*slngpool.Lease
	span trace.Span
	// unknown counts the messages of unknown types the session had ignored
	// before this lease (a pooled session may serve several streams).
	unknown int64
	kind    string
	m       *Metrics
	// usage is the stream's account, charged with the session's time.
	usage    *callerUsage
	start    time.Time
	released atomic.Bool
}

// unknownTypes is the session's count of ignored unknown messages.
func (l *upstreamLease) unknownTypes() int64 {
	if l.TTS != nil {
		return l.TTS.Stats().UnknownTypes
	}
	return l.STT.Stats().UnknownTypes
}

// acquire gets an upstream session of kind ("tts" or "stt") through get,
// recording the time it took and starting its span.
func (s *Server) acquire(ctx context.Context, kind string, ep slngclient.Endpoint, get func(context.Context) (*slngpool.Lease, error)) (*upstreamLease, error) {
	ctx, span := s.tracer.Start(ctx, "slng.session", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("slng.kind", kind), attribute.String("slng.model", ep.Model)))
	start := time.Now()
	lease, err := get(ctx)
	s.metrics.observeAcquire(kind, start, lease, err)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, "acquire failed")
		span.End()
		return nil, err
	}
	var id, req string
	if lease.TTS != nil {
		id, req = lease.TTS.ID(), lease.TTS.RequestID()
	} else {
		id, req = lease.STT.ID(), lease.STT.RequestID()
	}
	span.SetAttributes(attribute.Bool("slng.pool.warm", lease.Warm),
		attribute.String("slng.session_id", id), attribute.String("slng.request_id", req))
	l := &upstreamLease{Lease: lease, span: span, kind: kind, m: s.metrics, usage: usageOf(ctx), start: time.Now()}
	l.unknown = l.unknownTypes()
	return l, nil
}

// release hands the session back (see slngpool.Lease.Release) and ends its
// span.
func (l *upstreamLease) release(err error, reuse bool) {
	if l.usage != nil && l.released.CompareAndSwap(false, true) {
		l.usage.sessionNanos.Add(int64(time.Since(l.start)))
	}
	if n := l.unknownTypes() - l.unknown; n > 0 {
		l.m.unknownFrames.WithLabelValues(l.kind).Add(float64(n))
	}
	l.Release(err, reuse)
	if err != nil {
		l.span.RecordError(err)
		l.span.SetStatus(otelcodes.Error, "session failed")
	}
	l.span.SetAttributes(attribute.Bool("slng.reused", reuse && err == nil))
	l.span.End()
}
