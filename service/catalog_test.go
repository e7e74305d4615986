package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/catalog"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// builtinCatalog is the built-in catalog, as Config.Catalog takes it.
func builtinCatalog(t testing.TB) func() *catalog.Catalog {
	t.Helper()
	c, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	return func() *catalog.Catalog { return c }
}

// badRequest is the field violations of st, as "field: description".
func badRequest(st *status.Status) []string {
	var out []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	return out
}

// TestCatalogRefusesBeforeDialling: a config asking a catalogued model for
// a voice, encoding or sample rate it does not offer fails with
// INVALID_ARGUMENT and a BadRequest naming each field, and no session is
// acquired for it; the same model with what it offers, and a model the
// catalog does not know, are served, SLNG being asked for what the model
// offers.
func TestCatalogRefusesBeforeDialling(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Catalog: builtinCatalog(t), Clock: newTestClock()})
	ctx := testContext(t)
	linear := func(rate int32) *speechv1.AudioFormat {
		return &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: rate}
	}
	refused := []struct {
		name string
		call func() error
		want []string
	}{
		{"a typo of a voice", func() error {
			b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{Model: "deepgram/aura:2", Voice: "aura-2-thalai-en"})
			_, err := b.stream.Recv()
			return err
		}, []string{`config.voice: model deepgram/aura:2 has no voice "aura-2-thalai-en": did you mean "aura-2-thalia-en"? (CatalogService.ListVoices lists its voices)`}},
		{"a voice of another model, and MP3 at a rate no model offers", func() error {
			_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Hello.",
				Config: &speechv1.SynthesisConfig{Model: "slng/deepgram/aura:2-es", Voice: "aura-2-thalia-en",
					Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3, SampleRateHz: 11025}}})
			return err
		}, []string{`config.voice: model slng/deepgram/aura:2-es has no voice "aura-2-thalia-en" (CatalogService.ListVoices lists its voices)`,
			"config.format.sample_rate_hz: model slng/deepgram/aura:2-es offers no 11025 Hz; it offers 8000, 16000, 22050, 24000, 32000, 44100, 48000 Hz " +
				"(the gateway resamples LINEAR16, MULAW and ALAW, not AUDIO_ENCODING_MP3)"}},
		{"Opus at a rate the STT bridge does not take", func() error {
			_, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{Model: "deepgram/nova:3",
				Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, SampleRateHz: 11025}}, []byte{1, 2, 3}, 3)
			return err
		}, []string{"config.format.sample_rate_hz: model deepgram/nova:3 offers no 11025 Hz; " +
			"it offers 8000, 16000, 22050, 24000, 32000, 44100, 48000 Hz (the gateway resamples LINEAR16, MULAW and ALAW, not AUDIO_ENCODING_OPUS)"}},
	}
	for _, tt := range refused {
		st := wantStatus(t, tt.call(), codes.InvalidArgument, ReasonInvalidRequest)
		if got := badRequest(st); !slices.Equal(got, tt.want) {
			t.Errorf("%s: violations = %q, want %q", tt.name, got, tt.want)
		}
	}
	// Configs to keep warm are checked alike, when the gateway starts.
	if _, err := h.srv.Profiles([]*speechv1.SynthesisConfig{{Model: "deepgram/aura:2", Voice: "nobody"}}, nil); err == nil ||
		!strings.Contains(err.Error(), `has no voice "nobody"`) {
		t.Errorf("Profiles() with a voice the model lacks = %v", err)
	}
	noAcquires(t, up)

	served := []*speechv1.SynthesizeTextRequest{
		// The catalogued model with a voice it has, in another case.
		{Text: "Hello.", Config: &speechv1.SynthesisConfig{Model: "deepgram/aura:2", Voice: "Aura-2-Luna-EN", Format: linear(16000)}},
		// A rate the model does not produce: resampled from one it does.
		{Text: "Hello.", Config: &speechv1.SynthesisConfig{Model: "slng/deepgram/aura:2-es", Format: linear(11025)}},
		// A model the catalog does not know: SLNG decides.
		{Text: "Hello.", Config: &speechv1.SynthesisConfig{Model: "acme/unlisted:1", Voice: "anyone", Format: linear(11025)}},
		// No model: the gateway's default and its default voice.
		{Text: "Hello."},
	}
	for i, req := range served {
		if err := servedByFake(t, ctx, h, up, fmt.Sprint("tts", i), req); err != nil {
			t.Errorf("SynthesizeText(%v) = %v, want it served", req.GetConfig(), err)
		}
	}
	// The STT bridge takes no G.711, but the gateway decodes it into the
	// linear16 that goes up, and resamples a rate the model does not
	// take: the catalog is asked about what goes up.
	for i, rate := range []int32{8000, 11025} {
		up.stt <- newFakeSTT(fmt.Sprint("stt", i))
		if _, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{Model: "deepgram/nova:3",
			Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: rate}}, []byte{1, 2, 3}, 3); err != nil {
			t.Errorf("Transcribe in MULAW at %d Hz = %v, want it served", rate, err)
		}
	}
	tts, stt := up.asked()
	var asked []string
	for _, a := range tts {
		asked = append(asked, fmt.Sprintf("%s %q %s %d", a.Req.Endpoint.Model, a.Cfg.Voice, a.Cfg.Encoding, a.Cfg.SampleRate))
	}
	for _, a := range stt {
		asked = append(asked, fmt.Sprintf("%s %s %d", a.Req.Endpoint.Model, a.Cfg.Encoding, a.Cfg.SampleRate))
	}
	want := []string{
		`deepgram/aura:2 "Aura-2-Luna-EN" linear16 16000`,
		`slng/deepgram/aura:2-es "" linear16 16000`,
		`acme/unlisted:1 "anyone" linear16 11025`,
		`deepgram/aura:2 "aura-2-thalia-en" linear16 24000`,
		"deepgram/nova:3 linear16 8000",
		"deepgram/nova:3 linear16 16000",
	}
	if !slices.Equal(asked, want) {
		t.Errorf("SLNG was asked for\n%s\nwant\n%s", strings.Join(asked, "\n"), strings.Join(want, "\n"))
	}
}

// servedByFake runs a SynthesizeText whose session, queued on up as id,
// speaks its turn.
func servedByFake(t *testing.T, ctx context.Context, h *harness, up *fakeUpstream, id string, req *speechv1.SynthesizeTextRequest) error {
	t.Helper()
	sess := newFakeTTS(id)
	up.tts <- sess
	stream, err := h.tts.SynthesizeText(ctx, req)
	if err != nil {
		return err
	}
	// The stream's first response: started, or its refusal.
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetStarted() == nil {
		t.Fatalf("first response %v", first)
	}
	awaitFlushes(t, sess, 1)
	sess.speakTurn(pcm(960, 1))
	_, err = recvAll(t, stream.Recv)
	return err
}

// TestCatalogFollowsItsSource: the checks use the catalog in force when
// the stream's config arrives, as a reloaded file changes it.
func TestCatalogFollowsItsSource(t *testing.T) {
	t.Parallel()
	parse := func(voices string) *catalog.Catalog {
		c, err := catalog.Parse([]byte("models:\n  - model: acme/tts:1\n    kind: tts\n    source: test\n    voices: [" + voices + "]\n    voices_complete: true\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var cur atomic.Pointer[catalog.Catalog]
	cur.Store(parse("{id: old}"))
	h, up := newFakeGateway(t, Config{Catalog: cur.Load, Clock: newTestClock()})
	ctx := testContext(t)
	req := &speechv1.SynthesizeTextRequest{Text: "Hello.", Config: &speechv1.SynthesisConfig{Model: "acme/tts:1", Voice: "new"}}
	_, err := h.synthesizeText(t, ctx, req)
	wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
	noAcquires(t, up)
	cur.Store(parse("{id: old}, {id: new}"))
	if err := servedByFake(t, ctx, h, up, "one", req); err != nil {
		t.Fatalf("after the catalog changed: %v", err)
	}
}

// catalogHarness serves the built-in catalog under an access policy:
// "speaker" may synthesize with deepgram models only, "listener" may
// transcribe with any model, and nobody else may do anything.
func catalogHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`callers:
  - id: speaker
    rpcs: [SynthesizeText]
    models: ["deepgram/*", "slng/deepgram/*"]
  - id: listener
    rpcs: [Transcribe]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Callers = newGate(t, prometheus.NewRegistry(), callers.Options{Identity: "metadata", PolicyFile: policy})
	cfg.Catalog = builtinCatalog(t)
	h, _ := newFakeGateway(t, cfg)
	return h
}

// TestListModels: a caller sees the catalogued models it may use, with
// what the catalog says of them, and no other.
func TestListModels(t *testing.T) {
	t.Parallel()
	h := catalogHarness(t, Config{})
	ctx := testContext(t)
	list := func(caller string, kind speechv1.ModelKind) []*speechv1.ModelInfo {
		t.Helper()
		resp, err := h.catalog.ListModels(asCaller(ctx, caller), &speechv1.ListModelsRequest{Kind: kind})
		if err != nil {
			t.Fatalf("ListModels as %s: %v", caller, err)
		}
		return resp.GetModels()
	}
	ids := func(ms []*speechv1.ModelInfo) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.GetModel())
		}
		return out
	}

	speaker := list("speaker", speechv1.ModelKind_MODEL_KIND_UNSPECIFIED)
	want := []string{"deepgram/aura:2", "slng/deepgram/aura:2-en", "slng/deepgram/aura:2-es"}
	if got := ids(speaker); !slices.Equal(got, want) {
		t.Fatalf("speaker's models = %q, want %q", got, want)
	}
	aura := speaker[0]
	if !aura.GetGatewayDefault() || aura.GetKind() != speechv1.ModelKind_MODEL_KIND_TTS || !aura.GetVoicesComplete() ||
		len(aura.GetVoices()) != 91 || aura.GetVoices()[0].GetModel() != "deepgram/aura:2" || aura.GetDefaultVoice() != "aura-2-thalia-en" ||
		aura.GetSends().GetTimings() != speechv1.Sent_SENT_NO || aura.GetSends().GetPartials() != speechv1.Sent_SENT_UNSPECIFIED ||
		aura.GetEncodings()[3] != speechv1.AudioEncoding_AUDIO_ENCODING_MULAW || aura.GetSampleRatesHz()[0] != 8000 ||
		!strings.Contains(aura.GetSource(), "voice-catalog.generated.ts") {
		t.Errorf("deepgram/aura:2 = %v", aura)
	}

	listener := list("listener", speechv1.ModelKind_MODEL_KIND_UNSPECIFIED)
	for _, m := range listener {
		if m.GetKind() != speechv1.ModelKind_MODEL_KIND_STT {
			t.Errorf("listener sees %s, a %v model it may not use", m.GetModel(), m.GetKind())
		}
	}
	if !slices.Contains(ids(listener), "soniox/speech-ai:rt-v4") || len(listener) < 10 {
		t.Errorf("listener's models = %q, want every STT model", ids(listener))
	}
	if got := list("listener", speechv1.ModelKind_MODEL_KIND_TTS); len(got) != 0 {
		t.Errorf("listener's TTS models = %q, want none", ids(got))
	}
	if got := list("stranger", speechv1.ModelKind_MODEL_KIND_UNSPECIFIED); len(got) != 0 {
		t.Errorf("an unknown caller sees %q, want nothing", ids(got))
	}
	_, err := h.catalog.ListModels(ctx, &speechv1.ListModelsRequest{Kind: 7})
	wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)

	// The gateway's model allowlist hides the rest, to callers the policy
	// lets use anything.
	h = catalogHarness(t, Config{ModelAllowlist: []string{"slng/deepgram/aura:2-en"}})
	resp, err := h.catalog.ListModels(asCaller(ctx, "speaker"), &speechv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// deepgram/aura:2 is the default model, which is always enabled.
	if got, want := ids(resp.GetModels()), []string{"deepgram/aura:2", "slng/deepgram/aura:2-en"}; !slices.Equal(got, want) {
		t.Errorf("with an allowlist, models = %q, want %q", got, want)
	}
}

func TestListVoices(t *testing.T) {
	t.Parallel()
	h := catalogHarness(t, Config{})
	ctx := asCaller(testContext(t), "speaker")
	tests := []struct {
		name, model, language string
		want                  int
		complete              bool
	}{
		{"a model", "deepgram/aura:2", "", 91, true},
		{"a language", "deepgram/aura:2", "es", 17, true},
		{"a language and region", "slng/deepgram/aura:2-en", "en-US", 41, true},
		{"every model the caller may use", "", "es", 34, true},
	}
	for _, tt := range tests {
		resp, err := h.catalog.ListVoices(ctx, &speechv1.ListVoicesRequest{Model: tt.model, Language: tt.language})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(resp.GetVoices()) != tt.want || resp.GetComplete() != tt.complete {
			t.Errorf("%s: %d voices, complete %v; want %d, %v", tt.name, len(resp.GetVoices()), resp.GetComplete(), tt.want, tt.complete)
		}
	}
	for _, v := range []struct{ caller, model, want string }{
		{"speaker", "deepgram/nova:3", `the catalog lists no model "deepgram/nova:3" that this caller may use`},
		{"speaker", "acme/unlisted:1", `the catalog lists no model "acme/unlisted:1"`},
		{"listener", "deepgram/nova:3", "deepgram/nova:3 is a speech-to-text model"},
	} {
		_, err := h.catalog.ListVoices(asCaller(testContext(t), v.caller), &speechv1.ListVoicesRequest{Model: v.model})
		st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
		if got := badRequest(st); len(got) != 1 || !strings.Contains(got[0], v.want) {
			t.Errorf("ListVoices(%s) as %s: %q, want %q", v.model, v.caller, got, v.want)
		}
	}
	// Without a policy, every caller sees every model, and the voices of
	// all TTS models are not all complete.
	h, _ = newFakeGateway(t, Config{Catalog: builtinCatalog(t)})
	resp, err := h.catalog.ListVoices(testContext(t), &speechv1.ListVoicesRequest{})
	if err != nil || resp.GetComplete() || len(resp.GetVoices()) < 91+41+17+8 {
		t.Errorf("every voice: %d voices, complete %v, %v", len(resp.GetVoices()), resp.GetComplete(), err)
	}
}
