package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestRunServesDevCatalog: in --dev, CatalogService lists SLNG's models as
// the simulator plays them; what it says the simulator's routes send, they
// send; and a voice the catalog does not list for a model fails before
// the gateway dials anything.
func TestRunServesDevCatalog(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--pool-warm=false"}, nil)
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	resp, err := speechv1.NewCatalogServiceClient(conn).ListModels(ctx, &speechv1.ListModelsRequest{Kind: speechv1.ModelKind_MODEL_KIND_STT})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*speechv1.ModelInfo{}
	for _, m := range resp.GetModels() {
		byName[m.GetModel()] = m
		if m.GetKind() != speechv1.ModelKind_MODEL_KIND_STT || !strings.HasPrefix(m.GetSource(), "slngsim") {
			t.Errorf("ListModels(STT) in dev mode lists %v", m)
		}
	}
	if nova := byName["deepgram/nova:3"]; nova == nil || !nova.GetGatewayDefault() {
		t.Fatalf("deepgram/nova:3 = %v, want the default", nova)
	}

	// The simulator's routes send what the dev catalog says: Deepgram Nova
	// partials and no utterance_end, as on SLNG's bridge, Soniox both.
	for _, tc := range []struct {
		model string
		ends  speechv1.Sent
	}{{"deepgram/nova:3", speechv1.Sent_SENT_NO}, {"soniox/speech-ai:rt-v4", speechv1.Sent_SENT_YES}} {
		info := byName[tc.model]
		if info.GetSends().GetPartials() != speechv1.Sent_SENT_YES || info.GetSends().GetUtteranceEnd() != tc.ends {
			t.Errorf("%s sends %v, want partials and utterance_end %v", tc.model, info.GetSends(), tc.ends)
		}
		partials, ends := transcribeCounts(ctx, t, conn, tc.model)
		if partials == 0 || (ends > 0) != (tc.ends == speechv1.Sent_SENT_YES) {
			t.Errorf("%s sent %d partials and %d utterance ends; the catalog says %v", tc.model, partials, ends, info.GetSends())
		}
	}

	_, before := g.get(t, g.adminLis, "/metrics")
	tts, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{
		Text: "Wrong voice.", Config: &speechv1.SynthesisConfig{Model: "deepgram/aura:2", Voice: "aura-2-nobody-en"}})
	if err == nil {
		_, err = tts.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `has no voice "aura-2-nobody-en"`) {
		t.Fatalf("a voice the model lacks: %v, want INVALID_ARGUMENT", err)
	}
	_, after := g.get(t, g.adminLis, "/metrics")
	if d, a := metricLine(before, "speech_gateway_upstream_dial_seconds_count"), metricLine(after, "speech_gateway_upstream_dial_seconds_count"); d != a {
		t.Errorf("the refused stream dialled SLNG: %s, then %s", d, a)
	}
}

// transcribeCounts transcribes a sentence with model at live pace and
// counts the partial transcripts and utterance ends that come back.
func transcribeCounts(ctx context.Context, t *testing.T, conn grpc.ClientConnInterface, model string) (partials, ends int) {
	t.Helper()
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.TranscribeRequest) {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{
		Model: model, EnablePartials: true, EnableVad: true}}})
	audio := slngsim.Synthesize("Catalogued claims hold.", "linear16", 16000)
	for off := 0; off < len(audio); off += 640 { // 20 ms chunks, as a live source sends
		send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: audio[off:min(off+640, len(audio))]}})
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for _, m := range recvAll(t, stream.Recv) {
		if m.GetPartialTranscript() != nil {
			partials++
		}
		if m.GetUtteranceEnd() != nil {
			ends++
		}
	}
	return partials, ends
}

// metricLine is the first line of a /metrics page that starts with name.
func metricLine(page, name string) string {
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, name) {
			return line
		}
	}
	return ""
}

// TestRunReloadsCatalogFile: --catalog-file replaces the built-in catalog,
// and a change to it is in force at the next check, counted; a file that
// does not parse, or lacks the default voice, keeps the previous one and
// is counted too; a gateway given one refuses to start.
func TestRunReloadsCatalogFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	// Written whole and renamed, as a ConfigMap is: a reader never sees
	// half a file.
	writeFile := func(content string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write := func(voices string) {
		t.Helper()
		writeFile("models:\n  - model: acme/tts:1\n    kind: tts\n    source: the operator\n    voices: [" + voices + "]\n    voices_complete: true\n")
	}
	write("{id: first}")
	g := startGateway(t, []string{"--dev", "--catalog-file", path, "--catalog-reload-interval", "10ms"}, nil)
	client := speechv1.NewCatalogServiceClient(g.dial(t))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	voices := func() string {
		resp, err := client.ListVoices(ctx, &speechv1.ListVoicesRequest{Model: "acme/tts:1"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, v := range resp.GetVoices() {
			ids = append(ids, v.GetVoiceId())
		}
		return strings.Join(ids, ",")
	}
	if got := voices(); got != "first" {
		t.Fatalf("voices = %q, want the file's", got)
	}
	if _, err := client.ListVoices(ctx, &speechv1.ListVoicesRequest{Model: "deepgram/aura:2"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("the built-in catalog is still listed beside the file: %v", err)
	}
	write("{id: first}, {id: second}")
	if poll.Until(ctx, 10*time.Millisecond, func() bool { return voices() == "first,second" }) != nil {
		t.Fatal("the changed file was not put in force")
	}
	writeFile("models: [{model: acme/tts:1}]\n")
	if poll.Until(ctx, 10*time.Millisecond, func() bool {
		_, page := g.get(t, g.adminLis, "/metrics")
		return strings.Contains(page, `speech_gateway_catalog_reloads_total{result="error"} 1`)
	}) != nil {
		t.Fatal("the invalid file was not counted")
	}
	if got := voices(); got != "first,second" {
		t.Errorf("voices = %q after an invalid file, want the previous catalog's", got)
	}
	// A file that parses but lacks the default voice would fail every
	// stream that names none: refused as the invalid one was.
	writeFile("models:\n  - model: deepgram/aura:2\n    kind: tts\n    source: the operator\n    voices: [{id: aura-2-nobody-en}]\n    voices_complete: true\n")
	if poll.Until(ctx, 10*time.Millisecond, func() bool {
		_, page := g.get(t, g.adminLis, "/metrics")
		return strings.Contains(page, `speech_gateway_catalog_reloads_total{result="error"} 2`)
	}) != nil {
		t.Fatal("the file without the default voice was not refused")
	}
	if got := voices(); got != "first,second" {
		t.Errorf("voices = %q after a file without the default voice, want the previous catalog's", got)
	}
	_, page := g.get(t, g.adminLis, "/metrics")
	for _, want := range []string{`speech_gateway_catalog_reloads_total{result="ok"} 1`, "speech_gateway_catalog_models 1"} {
		if !strings.Contains(page, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	args := []string{"--dev", "--catalog-file", path, "--listen", "127.0.0.1:0", "--admin-listen", ""}
	if err := run(ctx, args, envFrom(nil), &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "--default-voice") {
		t.Errorf("run with a catalog file without the default voice = %v, want it refused", err)
	}
	writeFile("models: [{model: acme/tts:1}]\n")
	if err := run(ctx, args, envFrom(nil), &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "no source") {
		t.Errorf("run with an invalid catalog file = %v, want it refused", err)
	}
}

// TestRunRefusesDefaultVoiceOutsideCatalog: a default voice the catalog
// says the default model lacks would fail every stream that names
// neither; the gateway refuses to start with it.
func TestRunRefusesDefaultVoiceOutsideCatalog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := run(ctx, []string{"--dev", "--default-voice", "aura-2-nobody-en", "--listen", "127.0.0.1:0", "--admin-listen", ""}, envFrom(nil), &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), `--default-voice: model deepgram/aura:2 has no voice "aura-2-nobody-en"`) {
		t.Errorf("run with a default voice the default model lacks = %v, want it refused", err)
	}
}
