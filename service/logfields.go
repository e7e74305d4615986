package service

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Log field names. The service's own lines and the access-log interceptor's
// use the same names, so that one query finds all lines of a stream:
// session_id always, trace_id and span_id when tracing is on.
const (
	fieldSession = "session_id"
	fieldTrace   = "trace_id"
	fieldSpan    = "span_id"
	fieldService = "grpc.service" // as go-grpc-middleware's logging names it
	fieldMethod  = "grpc.method"
)

type sessionIDKey struct{}

// StreamInterceptor gives every stream, before the handler runs, its
// gateway session id (the one in `started` and in error metadata) and,
// with c, its caller id, in one wrapping of the stream. Install it outside
// the logging interceptor, with logging.WithFieldsFromContext(LogFields),
// so that the access-log line of a stream carries the same session_id and
// caller as the service's lines. Without it, the handlers find both
// themselves.
//
// It also remembers the stream it was given, for MessagesBypass.
func StreamInterceptor(c Callers) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := context.WithValue(ss.Context(), sessionIDKey{}, newSessionID())
		if c != nil {
			ctx = context.WithValue(ctx, callerIDKey{}, c.Identify(ss.Context()))
		}
		ctx = context.WithValue(ctx, outerStreamKey{}, ss)
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = ctx
		return handler(srv, w)
	}
}

type outerStreamKey struct{}

// MessagesBypass, installed innermost, hands the handler the stream that
// StreamInterceptor was given, with the context every interceptor has
// added to since: the stream's messages then skip the wrappers of the
// interceptors between the two, which act only when a call starts and
// ends. go-grpc-middleware's logging interceptor, logging only finished
// calls (logging.FinishCall), still reads two clocks and calls its
// reporter for every message: on a relay of 50 audio chunks a second per
// stream, that was about 4% of the gateway's CPU (docs/performance.md).
// Only interceptors that need no message of the stream may stand between
// StreamInterceptor and MessagesBypass.
func MessagesBypass() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		outer, ok := ss.Context().Value(outerStreamKey{}).(grpc.ServerStream)
		if !ok {
			return handler(srv, ss)
		}
		w := middleware.WrapServerStream(outer)
		w.WrappedContext = ss.Context()
		return handler(srv, w)
	}
}

// LogFields are the fields that tie a stream's access-log line to its other
// lines and to its trace: for logging.WithFieldsFromContext.
func LogFields(ctx context.Context) logging.Fields {
	var f logging.Fields
	if id, ok := ctx.Value(sessionIDKey{}).(string); ok {
		f = append(f, fieldSession, id)
	}
	if caller, ok := ctx.Value(callerIDKey{}).(string); ok {
		f = append(f, fieldCaller, caller)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f = append(f, fieldTrace, sc.TraceID().String(), fieldSpan, sc.SpanID().String())
	}
	return f
}

// streamLogger returns the session id of the stream whose context is ctx
// (StreamInterceptor's, or a new one when the interceptor is not
// installed) and a logger whose every line carries it, the RPC's names and,
// when tracing is on, the trace and span ids.
func (s *Server) streamLogger(ctx context.Context, service, method string) (string, *zap.Logger) {
	id, ok := ctx.Value(sessionIDKey{}).(string)
	if !ok {
		id = newSessionID()
	}
	fields := []zap.Field{zap.String(fieldService, service), zap.String(fieldMethod, method), zap.String(fieldSession, id)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		fields = append(fields, zap.String(fieldTrace, sc.TraceID().String()), zap.String(fieldSpan, sc.SpanID().String()))
	}
	return id, s.log.With(fields...)
}
