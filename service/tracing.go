package service

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// tracerName names the service's spans' instrumentation scope.
const tracerName = "github.com/speech-gateway/speech-gateway/service"

// upstreamLease is a lease with the span that covers its upstream session,
// from acquire to release: one span per SLNG session, never one per audio
// message.
type upstreamLease[S upstreamSession] struct {
	Lease[S]
	span trace.Span
	// unknown counts the messages of unknown types the session had ignored
	// before this lease (a pooled session may serve several streams).
	unknown int64
	kind    string
	m       *Metrics
	// usage is the stream's account, charged with the session's time.
	usage   *callerUsage
	start   time.Time
	charged atomic.Bool
}

// acquireLease gets an upstream session of kind ("tts" or "stt") through
// get, recording the time it took and starting its span; usage is the
// stream's account, charged with the session's time.
func acquireLease[S upstreamSession](ctx context.Context, s *Server, kind string, usage *callerUsage, ep slngclient.Endpoint, get func(context.Context) (Lease[S], error)) (*upstreamLease[S], error) {
	ctx, span := s.tracer.Start(ctx, "slng.session", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("slng.kind", kind), attribute.String("slng.model", ep.Model)))
	start := time.Now()
	lease, err := get(ctx)
	s.metrics.observeAcquire(kind, start, lease.Warm, err)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, "acquire failed")
		span.End()
		return nil, err
	}
	sess := lease.Session
	span.SetAttributes(attribute.Bool("slng.pool.warm", lease.Warm),
		attribute.String("slng.session_id", sess.ID()), attribute.String("slng.request_id", sess.RequestID()))
	l := &upstreamLease[S]{Lease: lease, span: span, kind: kind, m: s.metrics, usage: usage, start: time.Now()}
	if lease.Warm {
		// What the session ignored for the streams before this one.
		l.unknown = sess.Stats().UnknownTypes
	}
	return l, nil
}

// stopCharging charges the stream's account with the session's time, once.
func (l *upstreamLease[S]) stopCharging() {
	if l.usage != nil && l.charged.CompareAndSwap(false, true) {
		l.usage.sessionNanos.Add(int64(time.Since(l.start)))
	}
}

// release hands the session back (see Lease.Release) and ends its span.
func (l *upstreamLease[S]) release(err error, reuse bool) {
	l.stopCharging()
	if n := l.Session.Stats().UnknownTypes - l.unknown; n > 0 {
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
