package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// catalogServer answers like a gateway's CatalogService, and records the
// requests it got.
type catalogServer struct {
	speechv1.UnimplementedCatalogServiceServer
	kinds  chan speechv1.ModelKind
	voices chan *speechv1.ListVoicesRequest
}

func (c *catalogServer) ListModels(_ context.Context, req *speechv1.ListModelsRequest) (*speechv1.ListModelsResponse, error) {
	c.kinds <- req.GetKind()
	lin, mulaw := speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW
	return &speechv1.ListModelsResponse{Models: []*speechv1.ModelInfo{
		{Model: "deepgram/aura:2", Kind: speechv1.ModelKind_MODEL_KIND_TTS, GatewayDefault: true,
			Voices: []*speechv1.Voice{{VoiceId: "a"}, {VoiceId: "b"}}, VoicesComplete: true,
			Encodings: []speechv1.AudioEncoding{lin, mulaw}, EncodingsComplete: true,
			SampleRatesHz: []int32{8000, 22050}, SampleRatesComplete: true,
			Sends: &speechv1.ModelSends{Timings: speechv1.Sent_SENT_NO}},
		{Model: "soniox/speech-ai:rt-v4", Kind: speechv1.ModelKind_MODEL_KIND_STT,
			Encodings: []speechv1.AudioEncoding{lin}, SampleRatesHz: []int32{16000},
			Sends: &speechv1.ModelSends{Partials: speechv1.Sent_SENT_YES, UtteranceEnd: speechv1.Sent_SENT_YES}},
		{Model: "acme/tts:1", Kind: speechv1.ModelKind_MODEL_KIND_TTS},
	}}, nil
}

func (c *catalogServer) ListVoices(_ context.Context, req *speechv1.ListVoicesRequest) (*speechv1.ListVoicesResponse, error) {
	c.voices <- req
	if req.GetModel() != "deepgram/aura:2" {
		return nil, status.Error(codes.InvalidArgument, "no such model")
	}
	return &speechv1.ListVoicesResponse{Complete: req.GetLanguage() == "", Voices: []*speechv1.Voice{
		{VoiceId: "aura-2-thalia-en", DisplayName: "Thalia", Language: "en", Model: req.GetModel()},
		{VoiceId: "x", Model: req.GetModel()},
	}}, nil
}

func startCatalogServer(t *testing.T) (string, *catalogServer) {
	t.Helper()
	srv := grpc.NewServer()
	c := &catalogServer{kinds: make(chan speechv1.ModelKind, 10), voices: make(chan *speechv1.ListVoicesRequest, 10)}
	speechv1.RegisterCatalogServiceServer(srv, c)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String(), c
}

func TestModelsAndVoices(t *testing.T) {
	t.Parallel()
	addr, srv := startCatalogServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, append(args, "--addr", addr), nil, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	out, info, err := cmd("models", "--kind", "tts")
	if err != nil {
		t.Fatal(err)
	}
	if k := <-srv.kinds; k != speechv1.ModelKind_MODEL_KIND_TTS {
		t.Errorf("--kind tts asked for %v", k)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"MODEL", "KIND", "VOICES", "ENCODINGS", "RATES", "(kHz)", "SENDS"},
		{"deepgram/aura:2", "(default)", "tts", "2", "linear16,mulaw", "8,22.05", "-"},
		{"soniox/speech-ai:rt-v4", "stt", "-", "linear16+", "16+", "partials,utterance_end"},
		{"acme/tts:1", "tts", "?", "?", "?", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("models printed:\n%s", out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, got, w)
		}
	}
	if !strings.Contains(info, "3 models") {
		t.Errorf("stderr = %q", info)
	}
	if _, _, err := cmd("models", "--kind", "asr"); !errors.Is(err, errUsage) {
		t.Errorf("--kind asr: %v, want a usage error", err)
	}

	// The model before the flags, and after them.
	for _, args := range [][]string{{"voices", "deepgram/aura:2", "--language", "en"}, {"voices", "--language", "en", "deepgram/aura:2"}} {
		out, info, err = cmd(args...)
		if err != nil {
			t.Fatal(err)
		}
		if req := <-srv.voices; req.GetModel() != "deepgram/aura:2" || req.GetLanguage() != "en" {
			t.Errorf("%q asked for %v", args, req)
		}
		if f := strings.Fields(strings.Split(out, "\n")[1]); strings.Join(f, " ") != "aura-2-thalia-en Thalia en" {
			t.Errorf("%q printed:\n%s", args, out)
		}
		if !strings.Contains(out, "x  ") || !strings.Contains(info, "2 voices listed; the model may offer others") {
			t.Errorf("%q printed %q, %q", args, out, info)
		}
	}
	if _, info, _ := cmd("voices", "deepgram/aura:2"); !strings.Contains(info, "every voice the model offers") {
		t.Errorf("a complete list: stderr %q", info)
	}
	<-srv.voices
	if _, _, err := cmd("voices"); !errors.Is(err, errUsage) {
		t.Errorf("voices without a model: %v, want a usage error", err)
	}
	if _, _, err := cmd("voices", "acme/none:1"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an unknown model: %v, want the gateway's INVALID_ARGUMENT", err)
	}
}
