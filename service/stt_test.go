package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestTranscribeRoundTrip is the Transcribe route's wire check, on the
// simulator: SLNG's init, partial, final (with words, confidence and
// language) and utterance-end frames, read by the real client from audio
// cut anywhere, come out as the caller's responses. What the gateway makes
// of each event is tested on fakes (TestTranscribeResponses).
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

// TestTranscribeResponses is TestTranscribeRoundTrip's logic on fakes:
// `started` carries the effective config (the default model and format
// filled in) and SLNG's session; partials, utterance ends, warnings and
// finals come to the caller as SLNG sent them, in stream time.
func TestTranscribeResponses(t *testing.T) {
	t.Parallel()
	sess := newFakeSTT("one")
	h := newFakeHarness(t, nil, []*fakeSTT{sess})
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &sttCall{t: t, stream: stream}
	c.send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{EnablePartials: true}}})
	format := &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000}
	started := c.recv("started").GetStarted()
	if diff := cmp.Diff(&speechv1.RecognitionStarted{
		UpstreamSessionId: "one", UpstreamRequestId: "req-one",
		Config:         &speechv1.RecognitionConfig{Model: "deepgram/nova:3", EnablePartials: true, Format: format},
		UpstreamFormat: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000, Channels: 1},
		Limits:         h.srv.limits(),
	}, started, protocmp.Transform(), protocmp.IgnoreFields(&speechv1.RecognitionStarted{}, "session_id")); diff != "" || started.GetSessionId() == "" {
		t.Fatalf("started (-want +got):\n%s", diff)
	}
	audio := pcmMs(500, 'r')
	c.audio(audio)
	sess.heard(t, audio)
	word := slngclient.Word{Word: "one", Start: 100 * time.Millisecond, End: 300 * time.Millisecond, Confidence: 0.5}
	sess.send(slngclient.STTEvent{Kind: slngclient.STTPartial, Transcript: slngclient.Transcript{
		Text: "One", Start: 100 * time.Millisecond, HasStart: true, Duration: 200 * time.Millisecond, HasDuration: true}})
	sess.send(slngclient.STTEvent{Kind: slngclient.STTUtteranceEnd, LastWordEnd: 300 * time.Millisecond})
	sess.send(slngclient.STTEvent{Kind: slngclient.STTWarning, Err: slngclient.NewErrorFrame("translation_error", "a provider hiccup")})
	sess.send(slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{
		Text: "One.", Confidence: 0.75, Language: "en", Words: []slngclient.Word{word}}})
	partial := wantTranscript("One", 100*time.Millisecond, 300*time.Millisecond, false)
	final := wantTranscript("One.", 100*time.Millisecond, 300*time.Millisecond, false)
	final.Confidence, final.Language = 0.75, "en"
	final.Words = []*speechv1.WordInfo{{Word: "one", PunctuatedWord: "one", StartOffset: durationpb.New(100 * time.Millisecond),
		EndOffset: durationpb.New(300 * time.Millisecond), Confidence: 0.5, Speaker: -1}}
	rest, err := c.rest()
	if err != nil {
		t.Fatal(err)
	}
	wantResponses(t, rest, []*speechv1.TranscribeResponse{
		{Response: &speechv1.TranscribeResponse_PartialTranscript{PartialTranscript: partial}},
		{Response: &speechv1.TranscribeResponse_UtteranceEnd{UtteranceEnd: &speechv1.UtteranceEnd{LastWordEnd: durationpb.New(300 * time.Millisecond)}}},
		{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{Code: "translation_error", Message: "a provider hiccup"}}},
		finalResp(final),
	})
}

// TestTranscribeEncodings stays on the simulator: its point is that the
// audio of each encoding, as the gateway converts or forwards it and the
// init names it, is what SLNG's route decodes back to the speech.
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
// Synthesize, fed to Transcribe, gives back the text, end to end through
// the simulator.
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

// TestTranscribeHalfCloseKeepsPendingSpeech: a half-close is passed on to
// SLNG as the end of the audio, and the stream waits for what SLNG
// finalizes then: the final of speech cut before its pause still reaches
// the caller, and the stream ends, well, only at SLNG's close.
func TestTranscribeHalfCloseKeepsPendingSpeech(t *testing.T) {
	t.Parallel()
	sess := newFakeSTT("one")
	sess.endOnEnd = false
	h := newFakeHarness(t, nil, []*fakeSTT{sess})
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	audio := pcmMs(300, 'a')
	c.audio(audio)
	c.closeSend()
	sess.wrote(t, "close")
	sess.heard(t, audio)
	if got := sess.writesOf(); fmt.Sprint(got) != "[audio:9600 close]" {
		t.Fatalf("upstream writes %q, want the audio then the end of the audio", got)
	}
	sess.send(timedFinal("Cut before the pause", 0, 300*time.Millisecond))
	sess.end(io.EOF)
	resps, err := recvAll(t, c.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	wantResponses(t, resps, []*speechv1.TranscribeResponse{
		finalResp(wantTranscript("Cut before the pause", 0, 300*time.Millisecond, false)),
	})
}

// TestTranscribeFinalize: a finalize goes upstream after the audio before
// it; the final that answers it comes to the caller marked from_finalize,
// with its words and their speakers (diarization asked of SLNG); the
// stream goes on after it.
func TestTranscribeFinalize(t *testing.T) {
	t.Parallel()
	sess := newFakeSTT("one")
	sess.endOnEnd = false
	h, up := newFakeGateway(t, Config{})
	up.stt <- sess
	c := startSTT(t, h, &speechv1.RecognitionConfig{EnableDiarization: true})
	if _, stt := up.asked(); len(stt) != 1 || !stt[0].Cfg.EnableDiarization {
		t.Fatalf("acquires %+v, want one with diarization on", stt)
	}
	first := pcmMs(300, 'a')
	c.audio(first)
	c.finalize()
	sess.wrote(t, "finalize")
	if got := sess.writesOf(); fmt.Sprint(got) != "[audio:9600 finalize]" {
		t.Fatalf("upstream writes %q, want the audio then the finalize", got)
	}
	sess.send(slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{
		Text: "Finalize me", Confidence: 0.75, Language: "en",
		Start: 0, HasStart: true, Duration: 300 * time.Millisecond, HasDuration: true,
		FromFinalize: true, HasFromFinalize: true,
		Words: []slngclient.Word{
			{Word: "finalize", PunctuatedWord: "Finalize", Start: 0, End: 150 * time.Millisecond, Confidence: 0.5, Speaker: 1, HasSpeaker: true},
			{Word: "me", Start: 150 * time.Millisecond, End: 300 * time.Millisecond, Confidence: 0.75},
		},
	}})
	want := wantTranscript("Finalize me", 0, 300*time.Millisecond, false)
	want.Confidence, want.Language, want.FromFinalize = 0.75, "en", true
	want.Words = []*speechv1.WordInfo{
		{Word: "finalize", PunctuatedWord: "Finalize", StartOffset: durationpb.New(0), EndOffset: durationpb.New(150 * time.Millisecond), Confidence: 0.5, Speaker: 1},
		{Word: "me", PunctuatedWord: "me", StartOffset: durationpb.New(150 * time.Millisecond), EndOffset: durationpb.New(300 * time.Millisecond), Confidence: 0.75, Speaker: -1},
	}
	c.want(finalResp(want))

	// The stream goes on after a finalize.
	more := pcmMs(200, 'b')
	c.audio(more)
	c.closeSend()
	sess.wrote(t, "close")
	sess.heard(t, append(bytes.Clone(first), more...))
	sess.send(timedFinal("And more.", 300*time.Millisecond, 200*time.Millisecond))
	sess.end(io.EOF)
	rest, err := recvAll(t, c.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	wantResponses(t, rest, []*speechv1.TranscribeResponse{
		finalResp(wantTranscript("And more.", 300*time.Millisecond, 500*time.Millisecond, false)),
	})
}

// TestTranscribeUpstreamDropsMidStream: sessions that are lost again and
// again without a transcript are replaced maxReconnects times, each
// hearing the audio again; the next loss ends the stream with UNAVAILABLE.
func TestTranscribeUpstreamDropsMidStream(t *testing.T) {
	t.Parallel()
	var sessions []*fakeSTT
	for i := range maxReconnects + 1 {
		sessions = append(sessions, newFakeSTT(fmt.Sprint("s", i)))
	}
	h := newFakeHarness(t, nil, sessions)
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	audio := pcmMs(100, 'w')
	c.audio(audio)
	for i, s := range sessions {
		s.heard(t, audio)
		s.end(errFakeLost)
		if i == len(sessions)-1 {
			break
		}
		r := c.recv("reconnected").GetReconnected()
		if r.GetReason() != "connection_lost" || r.GetPreviousUpstreamSessionId() != s.id ||
			r.GetUpstreamSessionId() != sessions[i+1].id || r.GetAudioReplayed().AsDuration() != 100*time.Millisecond {
			t.Fatalf("reconnect %d: %v", i+1, r)
		}
	}
	_, err := c.stream.Recv()
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	for _, s := range sessions {
		if released, _, err := s.releasedWith(); !released || !errors.Is(err, errFakeLost) {
			t.Errorf("session %s released %v with %v, want its loss", s.id, released, err)
		}
	}
}

// TestTranscribeFinalsTimeout: SLNG sends nothing after the end of the
// audio: the stream waits FinalsTimeout, on the clock, then fails with
// UNAVAILABLE rather than hang or pretend success.
func TestTranscribeFinalsTimeout(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	sess := newFakeSTT("one")
	sess.endOnEnd = false // stalled
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, FinalsTimeout: 10 * time.Second}))
	up.stt <- sess
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	c.audio(pcmMs(100, 's'))
	c.closeSend()
	sess.wrote(t, "close")
	advanceExactly(t, clk, 10*time.Second)
	_, err := c.stream.Recv()
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
}

// TestTranscribeFinalsWithoutTiming: the bridge's finals often carry no
// start, or only a duration, and no from_finalize (the AsyncAPI's shape).
// Every one is delivered, its offsets estimated (from where the last final
// ended to the audio sent, or its duration) and marked so, and counted.
func TestTranscribeFinalsWithoutTiming(t *testing.T) {
	t.Parallel()
	sess := newFakeSTT("one")
	h := newFakeHarness(t, nil, []*fakeSTT{sess})
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	first, second := pcmMs(500, 'a'), pcmMs(300, 'b')
	c.audio(first)
	sess.heard(t, first)
	sess.send(final("No timing here."))
	c.want(finalResp(wantTranscript("No timing here.", 0, 500*time.Millisecond, true)))
	c.audio(second)
	sess.heard(t, append(bytes.Clone(first), second...))
	sess.send(slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{
		Text: "Nor here.", Duration: 250 * time.Millisecond, HasDuration: true}})
	c.want(finalResp(wantTranscript("Nor here.", 500*time.Millisecond, 750*time.Millisecond, true)))
	rest, err := c.rest()
	if err != nil || len(rest) != 0 {
		t.Fatalf("the end: %v, %v", rest, err)
	}
	if v := testutil.ToFloat64(h.metrics.finalsEstimated); v != 2 {
		t.Errorf("estimated finals metric = %v, want 2", v)
	}
}
