package service

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/fleet"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// newGate returns a Gate on a local fleet, with its metrics on reg.
func newGate(t *testing.T, reg prometheus.Registerer, opts callers.Options) *callers.Gate {
	t.Helper()
	f := fleet.New(fleet.Options{Linger: -1})
	t.Cleanup(f.Close)
	opts.Metrics = callers.NewMetrics(reg)
	opts.TrustAssertedIdentity = true // the tests name their callers in x-caller-id
	g, err := callers.New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

func asCaller(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-caller-id", id)
}

// TestCallersMetered: every stream carries its caller's id (in `started`,
// on every log line, the access log's included), and the usage counters
// and the usage log lines add up to exactly the characters and audio of
// the streams.
func TestCallersMetered(t *testing.T) {
	t.Parallel()
	ctx := asCaller(testContext(t), "billing")
	reg := prometheus.NewRegistry()
	gate := newGate(t, reg, callers.Options{})
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	up := newFakeUpstream(t)
	h := serveGateway(t, up, Config{Callers: gate, Clock: newTestClock()}, prometheus.NewRegistry(), log,
		grpc.ChainStreamInterceptor(StreamInterceptor(gate),
			logging.StreamServerInterceptor(InterceptorLogger(log.Named("grpc")),
				logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(LogFields))))

	var chars int
	var ttsBytes int
	texts := []string{"Grüße aus Köln.", "A second, plainer sentence."}
	for i, text := range texts {
		sess := newFakeTTS(fmt.Sprint("tts", i))
		up.tts <- sess
		stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		awaitFlushes(t, sess, 1)
		sess.speakTurn(pcm(4800*(i+1), 1))
		resps, err := recvAll(t, stream.Recv)
		if err != nil {
			t.Fatal(err)
		}
		if got := resps[0].GetStarted().GetCallerId(); got != "billing" {
			t.Fatalf("started.caller_id = %q", got)
		}
		chars += utf8.RuneCountInString(text)
		if got := len(audioOf(resps)); got != 4800*(i+1) {
			t.Fatalf("%d bytes of audio, want the %d SLNG sent", got, 4800*(i+1))
		}
		ttsBytes += len(audioOf(resps))
	}
	up.stt <- newFakeSTT("stt")
	audio := pcm(16000, 3)
	resps, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, audio, 3200)
	if err != nil {
		t.Fatal(err)
	}
	if got := resps[0].GetStarted().GetCallerId(); got != "billing" {
		t.Fatalf("started.caller_id = %q", got)
	}
	h.srv.Wait()

	counter := func(name, model string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["caller"] == "billing" && labels["model"] == model {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	wantSynth := float64(ttsBytes) / 48000 // LINEAR16 at 24 kHz
	wantTrans := float64(len(audio)) / 32000
	for _, c := range []struct {
		name, model string
		want        float64
	}{
		{"speech_gateway_usage_characters_total", "deepgram/aura:2", float64(chars)},
		{"speech_gateway_usage_synthesized_seconds_total", "deepgram/aura:2", wantSynth},
		{"speech_gateway_usage_streams_total", "deepgram/aura:2", 2},
		{"speech_gateway_usage_transcribed_seconds_total", "deepgram/nova:3", wantTrans},
		{"speech_gateway_usage_streams_total", "deepgram/nova:3", 1},
	} {
		if got := counter(c.name, c.model); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s{model=%q} = %v, want %v", c.name, c.model, got, c.want)
		}
	}
	if ttsBytes == 0 || counter("speech_gateway_usage_upstream_session_seconds_total", "deepgram/aura:2") <= 0 ||
		counter("speech_gateway_usage_upstream_session_seconds_total", "deepgram/nova:3") <= 0 {
		t.Error("no audio, or no upstream session time metered")
	}

	// One usage line per stream, with the same figures; every line of the
	// streams, the access log's included, names the caller.
	var usageChars, usageSynth, usageTrans float64
	var usageLines, accessLines int
	for _, e := range logs.All() {
		f := e.ContextMap()
		if f["grpc.method"] == nil {
			continue // lines that are not a stream's
		}
		if f["caller"] != "billing" {
			t.Errorf("%s line %q lacks the caller: %v", e.LoggerName, e.Message, f)
		}
		if e.LoggerName == "grpc" {
			accessLines++
		}
		if e.Message == "stream usage" {
			usageLines++
			usageChars += float64(f["characters"].(int64))
			usageSynth += f["synthesized_seconds"].(float64)
			usageTrans += f["transcribed_seconds"].(float64)
			if f["code"] != "OK" || f["upstream_session_seconds"].(float64) <= 0 {
				t.Errorf("usage line %v", f)
			}
		}
	}
	if usageLines != 3 || accessLines != 3 {
		t.Fatalf("%d usage lines and %d access-log lines, want 3 each", usageLines, accessLines)
	}
	if usageChars != float64(chars) || math.Abs(usageSynth-wantSynth) > 1e-9 || math.Abs(usageTrans-wantTrans) > 1e-9 {
		t.Errorf("usage lines add up to %v characters, %vs synthesized, %vs transcribed; want %d, %v, %v",
			usageChars, usageSynth, usageTrans, chars, wantSynth, wantTrans)
	}
}

// TestCallerNotAllowed: a stream the access policy does not allow ends
// with PERMISSION_DENIED before any session is acquired: when it starts, if
// the caller may not use the RPC with any model, else once its config
// names a model the caller may not use.
func TestCallerNotAllowed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	policy := "callers:\n  - id: billing\n    rpcs: [Transcribe]\n  - id: checkout\n    models: [\"acme/*\"]\n"
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	gate := newGate(t, reg, callers.Options{PolicyFile: file})
	h, up := newFakeGateway(t, Config{Callers: gate, Clock: newTestClock()})
	for _, tc := range []struct{ caller, model string }{{"billing", ""}, {"intruder", ""}, {"checkout", "deepgram/aura:2"}} {
		_, err := h.synthesizeText(t, asCaller(ctx, tc.caller), &speechv1.SynthesizeTextRequest{Text: "Not for you."})
		st := wantStatus(t, err, codes.PermissionDenied, ReasonCallerNotAllowed)
		info, retry := details(st)
		md := info.GetMetadata()
		if md["caller"] != tc.caller || md["rpc"] != "SynthesizeText" || md["model"] != tc.model || retry != nil {
			t.Errorf("details: %v, %v", md, retry)
		}
	}
	noAcquires(t, up)
	if got := testutil.ToFloat64(h.metrics.streamsTotal.WithLabelValues("SynthesizeText", "PermissionDenied")); got != 3 {
		t.Errorf("streams_total{PermissionDenied} = %v", got)
	}
}

// TestCallerQuotas: beyond its concurrent streams a caller's stream is
// refused, and beyond its characters per minute its text ends the stream,
// both with RESOURCE_EXHAUSTED, QuotaFailure and RetryInfo.
func TestCallerQuotas(t *testing.T) {
	t.Parallel()
	ctx := asCaller(testContext(t), "billing")
	gate := newGate(t, prometheus.NewRegistry(), callers.Options{Defaults: callers.Limits{MaxStreams: 1, CharactersPerMinute: 20}})
	h, up := newFakeGateway(t, Config{Callers: gate, Clock: newTestClock()})
	billing, search := newFakeTTS("billing"), newFakeTTS("search")
	up.tts <- billing

	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *speechv1.SynthesizeRequest) {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}})
	if first, err := stream.Recv(); err != nil || first.GetStarted() == nil {
		t.Fatalf("first response %v, %v", first, err)
	}

	quotaDetails := func(st interface{ Details() []any }) (*errdetails.QuotaFailure, time.Duration) {
		var qf *errdetails.QuotaFailure
		retry := time.Duration(-1)
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.QuotaFailure:
				qf = d
			case *errdetails.RetryInfo:
				retry = d.GetRetryDelay().AsDuration()
			}
		}
		return qf, retry
	}
	_, err = h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "A second stream."})
	st := wantStatus(t, err, codes.ResourceExhausted, ReasonCallerQuotaExceeded)
	qf, retry := quotaDetails(st)
	if v := qf.GetViolations(); len(v) != 1 || v[0].GetSubject() != "caller:billing" || retry != time.Second {
		t.Fatalf("QuotaFailure %v, RetryInfo %v", qf, retry)
	}
	// Another caller has quotas of its own.
	up.tts <- search
	other, err := h.tts.SynthesizeText(asCaller(testContext(t), "search"), &speechv1.SynthesizeTextRequest{Text: "Mine."})
	if err != nil {
		t.Fatal(err)
	}
	awaitFlushes(t, search, 1)
	search.speakTurn(pcm(960, 1))
	if _, err := recvAll(t, other.Recv); err != nil {
		t.Fatal(err)
	}

	send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: "Twelve chars", Flush: true}}})
	awaitFlushes(t, billing, 1)
	billing.speakTurn(pcm(960, 1))
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAudioEnd() != nil {
			break
		}
	}
	// 12 + 13 characters: beyond the 20 a minute.
	send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: "and nine more", Flush: true}}})
	_, err = recvAll(t, stream.Recv)
	st = wantStatus(t, err, codes.ResourceExhausted, ReasonCallerQuotaExceeded)
	qf, retry = quotaDetails(st)
	if v := qf.GetViolations(); len(v) != 1 || v[0].GetDescription() != "characters_per_minute: at most 20" ||
		retry <= 0 || retry > time.Minute {
		t.Fatalf("QuotaFailure %v, RetryInfo %v", qf, retry)
	}
	if got := append(textsSentTo(billing), textsSentTo(search)...); !slices.Equal(got, []string{"Twelve chars", "Mine."}) {
		t.Errorf("SLNG got the texts %q: the text beyond the quota must not go upstream", got)
	}
	if tts, _ := up.asked(); len(tts) != 2 {
		t.Errorf("%d sessions acquired, want 2: none for the stream beyond the quota", len(tts))
	}
}

// TestCallerOnSpan: the stream's server span names its caller.
func TestCallerOnSpan(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	gate := newGate(t, prometheus.NewRegistry(), callers.Options{})
	h, up := newFakeGateway(t, Config{TracerProvider: tp, Callers: gate, Clock: newTestClock()})
	sess := newFakeTTS("one")
	up.tts <- sess
	stream, err := h.tts.SynthesizeText(asCaller(testContext(t), "traced-team"), &speechv1.SynthesizeTextRequest{Text: "Traced."})
	if err != nil {
		t.Fatal(err)
	}
	awaitFlushes(t, sess, 1)
	sess.speakTurn(pcm(960, 1))
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatal(err)
	}
	s := waitServerSpan(t, exp, "slng.speech.v1.TextToSpeechService/SynthesizeText")
	for _, a := range s.Attributes {
		if a.Key == spanCaller && a.Value.AsString() == "traced-team" {
			return
		}
	}
	t.Fatalf("server span attributes %v lack %s", s.Attributes, spanCaller)
}
