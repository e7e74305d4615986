package service

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

func ttsConfig(c *speechv1.SynthesisConfig) *speechv1.SynthesizeRequest {
	return &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: c}}
}

func ttsText(s string, flush bool) *speechv1.SynthesizeRequest {
	return &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: s, Flush: flush}}}
}

func sttConfig(c *speechv1.RecognitionConfig) *speechv1.TranscribeRequest {
	return &speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: c}}
}

func sttAudioReq(b []byte) *speechv1.TranscribeRequest {
	return &speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}}
}

// TestValidation drives every invalid request of docs/errors.md through
// the real gateway and checks INVALID_ARGUMENT, INVALID_REQUEST and the
// BadRequest field. A request refused at its first message never acquires
// a session; one whose config is valid acquires one, and is refused at
// the message after.
func TestValidation(t *testing.T) {
	t.Parallel()
	cfg := Config{
		MaxTextBytes:       100,
		MaxAudioChunkBytes: 100,
		ModelAllowlist:     []string{"deepgram/aura:2", "cartesia/sonic:3"},
	}
	opts, err := structpb.NewStruct(map[string]any{"sample_rate": 8000})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 101)
	// gateway serves cfg with one session of each kind to lend.
	gateway := func(t *testing.T) (*harness, *fakeUpstream) {
		c := cfg
		c.Clock = newTestClock()
		h, up := newFakeGateway(t, c)
		up.tts <- newFakeTTS("tts")
		up.stt <- newFakeSTT("stt")
		return h, up
	}

	ttsCases := []struct {
		name  string
		reqs  []*speechv1.SynthesizeRequest
		field string
	}{
		{"no messages", nil, "config"},
		{"text before config", []*speechv1.SynthesizeRequest{ttsText("hi", true)}, "config"},
		{"config twice", []*speechv1.SynthesizeRequest{ttsConfig(nil), ttsConfig(nil)}, "config"},
		{"malformed model", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Model: "aura/../../v1?x=1"})}, "config.model"},
		{"model without provider", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Model: "aura"})}, "config.model"},
		{"model not allowed", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Model: "elevenlabs/eleven:3"})}, "config.model"},
		{"unknown encoding", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{Encoding: 42}})}, "config.format.encoding"},
		{"rate too low", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{SampleRateHz: 7999}})}, "config.format.sample_rate_hz"},
		{"rate too high", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{SampleRateHz: 48001}})}, "config.format.sample_rate_hz"},
		{"speed", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{Speed: 9})}, "config.speed"},
		{"reserved option", []*speechv1.SynthesizeRequest{ttsConfig(&speechv1.SynthesisConfig{ModelOptions: opts})}, "config.model_options"},
		{"empty text", []*speechv1.SynthesizeRequest{ttsConfig(nil), ttsText("", true)}, "text.text"},
		{"oversized text", []*speechv1.SynthesizeRequest{ttsConfig(nil), ttsText(long, true)}, "text.text"},
		{"empty request", []*speechv1.SynthesizeRequest{ttsConfig(nil), {}}, "request"},
	}
	for _, tc := range ttsCases {
		t.Run("Synthesize/"+tc.name, func(t *testing.T) {
			t.Parallel()
			h, up := gateway(t)
			ctx := testContext(t)
			stream, err := h.tts.Synthesize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.reqs {
				if err := stream.Send(r); err != nil {
					break
				}
			}
			_ = stream.CloseSend()
			_, err = recvAll(t, stream.Recv)
			st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
			if f := fieldViolations(st); !slices.Contains(f, tc.field) {
				t.Fatalf("fields = %v, want %s", f, tc.field)
			}
			want := 0
			if len(tc.reqs) > 1 && isTTSConfig(tc.reqs[0]) {
				want = 1
			}
			if tts, stt := up.asked(); len(tts) != want || len(stt) != 0 {
				t.Fatalf("%d TTS and %d STT sessions acquired, want %d and none", len(tts), len(stt), want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		req  *speechv1.SynthesizeTextRequest
	}{
		{"empty", &speechv1.SynthesizeTextRequest{}},
		{"oversized", &speechv1.SynthesizeTextRequest{Text: long}},
	} {
		t.Run("SynthesizeText/"+tc.name, func(t *testing.T) {
			t.Parallel()
			h, up := gateway(t)
			_, err := h.synthesizeText(t, testContext(t), tc.req)
			st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
			if f := fieldViolations(st); !slices.Equal(f, []string{"text"}) {
				t.Fatalf("fields = %v", f)
			}
			noAcquires(t, up)
		})
	}

	sttCases := []struct {
		name  string
		reqs  []*speechv1.TranscribeRequest
		field string
	}{
		{"no messages", nil, "config"},
		{"audio before config", []*speechv1.TranscribeRequest{sttAudioReq([]byte{1, 2})}, "config"},
		{"config twice", []*speechv1.TranscribeRequest{sttConfig(nil), sttConfig(nil)}, "config"},
		{"malformed model", []*speechv1.TranscribeRequest{sttConfig(&speechv1.RecognitionConfig{Model: "nova#3"})}, "config.model"},
		{"unknown encoding", []*speechv1.TranscribeRequest{sttConfig(&speechv1.RecognitionConfig{Format: &speechv1.AudioFormat{Encoding: -1}})}, "config.format.encoding"},
		{"rate", []*speechv1.TranscribeRequest{sttConfig(&speechv1.RecognitionConfig{Format: &speechv1.AudioFormat{SampleRateHz: 96000}})}, "config.format.sample_rate_hz"},
		{"speakers", []*speechv1.TranscribeRequest{sttConfig(&speechv1.RecognitionConfig{MinSpeakers: 3, MaxSpeakers: 2})}, "config.max_speakers"},
		{"empty audio", []*speechv1.TranscribeRequest{sttConfig(nil), sttAudioReq(nil)}, "audio"},
		{"oversized audio", []*speechv1.TranscribeRequest{sttConfig(nil), sttAudioReq(make([]byte, 101))}, "audio"},
		{"empty request", []*speechv1.TranscribeRequest{sttConfig(nil), {}}, "request"},
	}
	for _, tc := range sttCases {
		t.Run("Transcribe/"+tc.name, func(t *testing.T) {
			t.Parallel()
			h, up := gateway(t)
			ctx := testContext(t)
			stream, err := h.stt.Transcribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.reqs {
				if err := stream.Send(r); err != nil {
					break
				}
			}
			_ = stream.CloseSend()
			_, err = recvAll(t, stream.Recv)
			st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
			if f := fieldViolations(st); !slices.Contains(f, tc.field) {
				t.Fatalf("fields = %v, want %s", f, tc.field)
			}
			want := 0
			if len(tc.reqs) > 1 && isSTTConfig(tc.reqs[0]) {
				want = 1
			}
			if tts, stt := up.asked(); len(tts) != 0 || len(stt) != want {
				t.Fatalf("%d TTS and %d STT sessions acquired, want none and %d", len(tts), len(stt), want)
			}
		})
	}
}

// TestHostileModelNames: names that could change the upstream URL, or are
// not model names at all, are refused before any session is acquired.
func TestHostileModelNames(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	names := []string{
		"deepgram/../aura:2", "deepgram/aura:2?token=x", "deepgram/aura:2#frag", "deepgram%2faura:2",
		"deepgram/%2e%2e/aura", "deepgram/aura 2", "deepgram/aura:2\n", "deepgram/\x00aura", "deepgram/äura:2",
		"deepgram/aura:2:3", "/deepgram/aura", "deepgram//aura", "deepgram/aura/", ".", "..", strings.Repeat("a/", 100) + "b",
	}
	for _, name := range names {
		ctx := testContext(t)
		stream, err := h.tts.Synthesize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(ttsConfig(&speechv1.SynthesisConfig{Model: name}))
		_ = stream.CloseSend()
		_, err = recvAll(t, stream.Recv)
		st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
		if f := fieldViolations(st); !slices.Contains(f, "config.model") {
			t.Fatalf("%q: fields %v", name, f)
		}
		s, err := h.stt.Transcribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(sttConfig(&speechv1.RecognitionConfig{Model: name}))
		_ = s.CloseSend()
		_, err = recvAll(t, s.Recv)
		wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
	}
	noAcquires(t, up)
}

func isTTSConfig(r *speechv1.SynthesizeRequest) bool {
	_, ok := r.GetRequest().(*speechv1.SynthesizeRequest_Config)
	return ok
}

func isSTTConfig(r *speechv1.TranscribeRequest) bool {
	_, ok := r.GetRequest().(*speechv1.TranscribeRequest_Config)
	return ok
}
