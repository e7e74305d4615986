package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
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
		sttAudioReq(audio),
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
	if err := stream.Send(sttAudioReq(slngsim.Synthesize("And more.", "linear16", 16000))); err != nil {
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

// TestTranscribeFinalsWithoutTiming: the bridge's finals often carry no
// start, duration or from_finalize (the AsyncAPI's shape). Every one is
// delivered, marked offsets_estimated, and counted.
func TestTranscribeFinalsWithoutTiming(t *testing.T) {
	t.Parallel()
	p, err := slngsim.ProfileByName("asyncapi-finals-no-duration")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, slngsim.Options{Profile: &p}, Config{})
	texts := []string{"No timing here.", "Nor here."}
	var audio []byte
	for _, s := range texts {
		audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
	}
	resps, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 3200)
	if err != nil {
		t.Fatal(err)
	}
	if got := finalText(resps); got != strings.Join(texts, " ") {
		t.Fatalf("finals %q", got)
	}
	var last time.Duration
	for _, r := range resps {
		f := r.GetFinalTranscript()
		if f == nil || f.GetText() == "" {
			continue
		}
		if !f.GetOffsetsEstimated() || f.GetStartOffset().AsDuration() < last || f.GetEndOffset().AsDuration() < f.GetStartOffset().AsDuration() {
			t.Errorf("final %v: want estimated offsets that move forward", f)
		}
		last = f.GetEndOffset().AsDuration()
	}
	if v := testutil.ToFloat64(h.metrics.finalsEstimated); v < 2 {
		t.Errorf("estimated finals metric = %v, want 2", v)
	}
}

// TestTranscriptOutsideTheProtocol: a final for audio never sent is a
// route breaking its own protocol: a warning and a metric, never a panic;
// a final the session before a reconnect already delivered is dropped and
// counted; the first final after a finalize answers it where the route has
// no correlation field.
func TestTranscriptOutsideTheProtocol(t *testing.T) {
	t.Parallel()
	s := &Server{metrics: NewMetrics(nil)}
	tr := &sttCore{coreBase: coreBase{srv: s}, clock: clockOf(&speechv1.AudioFormat{
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000})}
	now := time.Now()
	final := func(text string, start, dur time.Duration, timed bool) slngclient.STTEvent {
		return slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{
			Text: text, Start: start, HasStart: timed, Duration: dur, HasDuration: timed}}
	}
	r := tr.translate(final("Nothing was said.", 0, 0, false), now)
	if r.GetWarning().GetCode() != "upstream_protocol" {
		t.Fatalf("final before any audio gave %v, want a warning", r)
	}
	if v := testutil.ToFloat64(s.metrics.finalsDropped.WithLabelValues("no_audio")); v != 1 {
		t.Errorf("dropped no_audio = %v", v)
	}
	if v := testutil.ToFloat64(s.metrics.violations.WithLabelValues("stt", "final_without_audio")); v != 1 {
		t.Errorf("violations = %v", v)
	}

	tr.sent = 32000 // one second of audio sent
	if f := tr.translate(final("One.", 0, time.Second, true), now).GetFinalTranscript(); f.GetText() != "One." || f.GetOffsetsEstimated() {
		t.Fatalf("timed final = %v", f)
	}
	if r := tr.translate(final("One.", 0, time.Second, true), now); r != nil {
		t.Errorf("a final ending where the last one did was delivered again: %v", r)
	}
	if v := testutil.ToFloat64(s.metrics.finalsDropped.WithLabelValues("duplicate")); v != 1 {
		t.Errorf("dropped duplicate = %v", v)
	}

	tr.finalizes = []int64{64000}
	tr.sent = 96000
	f := tr.translate(final("Two.", 0, 0, false), now).GetFinalTranscript()
	if !f.GetFromFinalize() || !f.GetOffsetsEstimated() || f.GetStartOffset().AsDuration() != time.Second ||
		f.GetEndOffset().AsDuration() != 2*time.Second || len(tr.finalizes) != 0 {
		t.Errorf("untimed final after a finalize = %v (pending %v)", f, tr.finalizes)
	}
}

// BenchmarkTranscribeChunk measures one 20 ms chunk of 16 kHz LINEAR16
// (640 bytes) going up through the whole gateway, unpaced: the client's
// Send, gRPC over an in-memory connection, the up pump, the owner's write
// and the simulator's read. Flow control makes the client wait for the
// gateway, so the time per chunk is the slowest stage's.
func BenchmarkTranscribeChunk(b *testing.B) {
	h := newHarness(b, slngsim.Options{}, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		b.Fatal(err)
	}
	chunk := &speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: make([]byte, 640)}}
	b.SetBytes(640)
	b.ReportAllocs()
	for b.Loop() {
		if err := stream.Send(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := stream.CloseSend(); err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
}
