package service

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestTranscribeRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	utterances := []string{"First, a greeting.", "Then a question?", "Finally: the end!"}
	var audio []byte
	for _, u := range utterances {
		audio = append(audio, slngsim.Synthesize(u, "linear16", 16000)...)
	}
	// 3,333-byte chunks split samples and symbols anywhere.
	resps, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{
		EnablePartials: true, EnableWordTimestamps: true, EnableVad: true,
	}, audio, 3333)
	if err != nil {
		t.Fatal(err)
	}
	if resps[0].GetStarted() == nil || resps[0].GetStarted().GetConfig().GetModel() != "deepgram/nova:3" ||
		resps[0].GetStarted().GetConfig().GetFormat().GetSampleRateHz() != 16000 {
		t.Fatalf("first response = %v", resps[0])
	}
	if got := finalText(resps); got != strings.Join(utterances, " ") {
		t.Fatalf("finals = %q", got)
	}
	var partials, ends int
	var prevEnd time.Duration
	for _, r := range resps {
		if r.GetPartialTranscript() != nil {
			partials++
		}
		if r.GetUtteranceEnd() != nil {
			ends++
		}
		f := r.GetFinalTranscript()
		if f == nil {
			continue
		}
		start, end := f.GetStartOffset().AsDuration(), f.GetEndOffset().AsDuration()
		if start < prevEnd || end <= start || f.GetDuration().AsDuration() != end-start {
			t.Errorf("final %q at %v-%v after %v", f.GetText(), start, end, prevEnd)
		}
		prevEnd = end
		if len(f.GetWords()) == 0 || f.GetWords()[0].GetStartOffset().AsDuration() < start ||
			f.GetWords()[0].GetSpeaker() != -1 || f.GetConfidence() <= 0 || f.GetLanguage() == "" {
			t.Errorf("final details: %v", f)
		}
	}
	if partials == 0 || ends != len(utterances) {
		t.Errorf("partials = %d, utterance ends = %d", partials, ends)
	}
	total := time.Duration(float64(len(audio)/2) / 16000 * float64(time.Second))
	if prevEnd > total {
		t.Errorf("last final ends at %v, after the audio (%v)", prevEnd, total)
	}
}

// TestTranscribeHalfCloseKeepsPendingSpeech sends speech without its
// end-of-utterance marker and half-closes: the final must still arrive.
func TestTranscribeHalfCloseKeepsPendingSpeech(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	audio := slngsim.Synthesize("Cut before the pause", "linear16", 16000)
	audio = audio[:len(audio)-2*96] // drop the silent symbol
	resps, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got := finalText(resps); got != "Cut before the pause" {
		t.Fatalf("finals = %q", got)
	}
}

func TestTranscribeFinalize(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	ctx := testContext(t)
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	audio := slngsim.Synthesize("Finalize me", "linear16", 16000)
	audio = audio[:len(audio)-2*96]
	for _, r := range []*speechv1.TranscribeRequest{
		sttConfig(&speechv1.RecognitionConfig{EnableDiarization: true}),
		sttAudio(audio),
		{Request: &speechv1.TranscribeRequest_Finalize{Finalize: &speechv1.Finalize{}}},
	} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	var final *speechv1.Transcript
	for final == nil {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		final = m.GetFinalTranscript()
	}
	if final.GetText() != "Finalize me" || !final.GetFromFinalize() || final.GetWords()[0].GetSpeaker() < 0 {
		t.Fatalf("final = %v", final)
	}
	// The stream goes on after a finalize.
	if err := stream.Send(sttAudio(slngsim.Synthesize("And more.", "linear16", 16000))); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	rest, err := recvAll(t, stream.Recv)
	if err != nil || finalText(rest) != "And more." {
		t.Fatalf("after finalize: %q, %v", finalText(rest), err)
	}
}

func TestTranscribeEncodings(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	for enc, name := range map[speechv1.AudioEncoding]string{
		speechv1.AudioEncoding_AUDIO_ENCODING_MULAW: "mulaw",
		speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:  "alaw",
		speechv1.AudioEncoding_AUDIO_ENCODING_OPUS:  "opus",
	} {
		resps, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{
			Format: &speechv1.AudioFormat{Encoding: enc, SampleRateHz: 8000},
		}, slngsim.Synthesize("Phone call.", name, 8000), 160)
		if err != nil || finalText(resps) != "Phone call." {
			t.Fatalf("%s: %q, %v", name, finalText(resps), err)
		}
	}
}

// TestSynthesizeThenTranscribe is the product's own round trip: audio from
// Synthesize, fed to Transcribe, gives back the text.
func TestSynthesizeThenTranscribe(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	text := "Speech in, speech out: the gateway loses nothing."
	resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{
		Text: text, Config: &speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{SampleRateHz: 16000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	finals, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{}, audioOf(resps), 640)
	if err != nil || finalText(finals) != text {
		t.Fatalf("transcribed %q, %v", finalText(finals), err)
	}
}

func TestTranscribeUpstreamDropsMidStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=drop@chunks:3")}, Config{})
	audio := slngsim.Synthesize(strings.Repeat("words ", 20), "linear16", 16000)
	_, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 1000)
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
}

func TestTranscribeFinalsTimeout(t *testing.T) {
	t.Parallel()
	// The upstream stalls at the first final: the half-close waits
	// FinalsTimeout, then fails rather than hang or pretend success.
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=stall@first-final")}, Config{FinalsTimeout: 300 * time.Millisecond})
	_, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{}, slngsim.Synthesize("Stuck", "linear16", 16000), 1000)
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
}
