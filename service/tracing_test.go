package service

import (
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// TestTracing: a stream gets a server span from the gRPC stats handler and,
// inside it, one span for its upstream session with the model, whether a
// standby served it and SLNG's session id; no span carries an event per
// audio message.
func TestTracing(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	h, up := newFakeGateway(t, Config{TracerProvider: tp, Clock: newTestClock()})
	sess := newFakeTTS("sess-traced")
	up.tts <- sess
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "A traced sentence with several chunks of audio."})
	if err != nil {
		t.Fatal(err)
	}
	awaitFlushes(t, sess, 1)
	speakInChunks(sess, pcm(20*960, 1), 960) // 20 chunks
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	audio := 0
	for _, r := range resps {
		if r.GetAudio() != nil {
			audio++
		}
	}
	if audio != 20 {
		t.Fatalf("%d audio messages, want the 20 SLNG sent", audio)
	}
	h.srv.Wait()
	// The server span ends at the RPC's end event, which may come just
	// after the caller has read the status.
	waitFor(t, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == "slng.speech.v1.TextToSpeechService/SynthesizeText" {
				return true
			}
		}
		return false
	}, "the stream's span")
	var server, session tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		switch s.Name {
		case "slng.speech.v1.TextToSpeechService/SynthesizeText":
			server = s
		case "slng.session":
			session = s
		}
		if len(s.Events) > 2 {
			t.Errorf("span %s has %d events", s.Name, len(s.Events))
		}
	}
	if !server.SpanContext.IsValid() || !session.SpanContext.IsValid() {
		t.Fatalf("spans: %v", exp.GetSpans())
	}
	if session.Parent.SpanID() != server.SpanContext.SpanID() {
		t.Fatal("the session span is not inside the stream's span")
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, a := range session.Attributes {
		attrs[a.Key] = a.Value
	}
	started := resps[0].GetStarted()
	if attrs["slng.model"].AsString() != "deepgram/aura:2" || attrs["slng.kind"].AsString() != "tts" ||
		attrs["slng.session_id"].AsString() != "sess-traced" || started.GetUpstreamSessionId() != "sess-traced" ||
		attrs["slng.pool.warm"].AsBool() {
		t.Fatalf("session span attributes: %v", session.Attributes)
	}
}

// TestStreamLogsTiedToTraces: with the session interceptor and the logging
// interceptor installed as the binary installs them, every log line of a
// stream, the service's and the access log's, carries the same session_id
// (the one in `started`), trace_id and span_id (those of the stream's
// server span), under the same field names.
func TestStreamLogsTiedToTraces(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	up := newFakeUpstream(t)
	h := serveGateway(t, up, Config{TracerProvider: tp, Clock: newTestClock()}, prometheus.NewRegistry(), log,
		grpc.ChainStreamInterceptor(StreamInterceptor(nil),
			logging.StreamServerInterceptor(InterceptorLogger(log.Named("grpc")),
				logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(LogFields))))
	first, second := newFakeTTS("one"), newFakeTTS("two")
	up.tts <- first
	up.tts <- second
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Logged."})
	if err != nil {
		t.Fatal(err)
	}
	// The first session fails before any audio, so that the service logs
	// the replacement.
	awaitFlushes(t, first, 1)
	warning, end := errorFrameThenClose("provider_error")
	first.send(warning)
	first.end(end)
	awaitFlushes(t, second, 1)
	second.speakTurn(pcm(960, 1))
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	server := waitServerSpan(t, exp, "slng.speech.v1.TextToSpeechService/SynthesizeText")
	// The access-log line is written as the handler returns, as the span ends.
	waitFor(t, func() bool {
		for _, e := range logs.All() {
			if e.LoggerName == "grpc" && e.ContextMap()["grpc.method"] == "SynthesizeText" {
				return true
			}
		}
		return false
	}, "the access-log line")
	want := map[string]string{
		"session_id":   resps[0].GetStarted().GetSessionId(),
		"trace_id":     server.SpanContext.TraceID().String(),
		"span_id":      server.SpanContext.SpanID().String(),
		"grpc.service": "slng.speech.v1.TextToSpeechService",
		"grpc.method":  "SynthesizeText",
	}
	var access, service int
	replaced := false
	for _, e := range logs.All() {
		fields := e.ContextMap()
		if fields["grpc.method"] != "SynthesizeText" {
			continue // lines that are not the stream's
		}
		if e.LoggerName == "grpc" {
			access++
		} else {
			service++
		}
		replaced = replaced || e.Message == "upstream session replaced"
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("%s line %q: %s = %v, want %q", e.LoggerName, e.Message, k, fields[k], v)
			}
		}
	}
	if access != 1 || service == 0 || !replaced {
		t.Fatalf("%d access-log lines and %d service lines for the stream (the replacement logged: %v), want 1 and some, the replacement's among them",
			access, service, replaced)
	}
}

// waitServerSpan returns the server span called name, which the stats
// handler ends after the client has its response.
func waitServerSpan(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var span tracetest.SpanStub
	waitFor(t, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				span = s
				return true
			}
		}
		return false
	}, "the server span "+name)
	return span
}
