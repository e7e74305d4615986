package service

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestTracing: a stream gets a server span from the gRPC stats handler and,
// inside it, one span for its upstream session with the model, the pool
// hit and SLNG's session id; no span carries an event per audio message.
func TestTracing(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	h := newHarness(t, slngsim.Options{}, Config{TracerProvider: tp})
	resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "A traced sentence with several chunks of audio."})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Wait()
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
		attrs["slng.session_id"].AsString() != started.GetUpstreamSessionId() || attrs["slng.pool.warm"].AsBool() {
		t.Fatalf("session span attributes: %v", session.Attributes)
	}
}
