package service

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// TestSynthesizeTwentyTurnsAcrossSessions: a route that closes its socket
// after every turn (as slng/rime/arcana does) serves 20 turns on one
// stream. A close between turns dials again at the next text; a close with
// turns queued behind the one spoken hands them to a new session. The
// caller gets every turn, in order, each with exactly its own audio.
func TestSynthesizeTwentyTurnsAcrossSessions(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	sessions := make([]*fakeTTS, 20)
	for i := range sessions {
		sessions[i] = newFakeTTS(fmt.Sprint("s", i+1))
		up.tts <- sessions[i]
	}
	audioFor := func(text string) []byte { return []byte(text + text) }
	ctx := testContext(t)
	b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{Model: "slng/rime/arcana:3-en", Format: &speechv1.AudioFormat{
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000}})
	all := b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetStarted() != nil })
	// next speaks the first turn its session heard, and closes it as the
	// route does.
	spoken := 0
	next := func() {
		t.Helper()
		s := sessions[spoken]
		spoken++
		awaitFlushes(t, s, 1)
		s.speakTurn(audioFor(textsSentTo(s)[0]))
		s.end(io.EOF)
	}
	var texts []string
	for i := range 20 {
		texts = append(texts, fmt.Sprintf("Turn %d of twenty.", i+1))
		b.send(ttsText(texts[i], true))
		if i%3 == 2 {
			// Three turns queued: the first two closes meet turns queued
			// behind the one spoken, the third an idle stream.
			for range 3 {
				next()
			}
			all = append(all, b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudioEnd().GetTurnId() == uint64(i+1) })...)
		}
	}
	for spoken < len(texts) {
		next()
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	rest, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, rest...)
	checkSequences(t, all)
	var ends []uint64
	perTurn := map[uint64][]byte{}
	for _, r := range all {
		if a := r.GetAudio(); a != nil {
			perTurn[a.GetTurnId()] = append(perTurn[a.GetTurnId()], a.GetData()...)
		}
		if e := r.GetAudioEnd(); e != nil {
			ends = append(ends, e.GetTurnId())
		}
	}
	if len(ends) != 20 || !slices.IsSorted(ends) || ends[0] != 1 || ends[19] != 20 {
		t.Fatalf("audio_end for turns %v, want 1 to 20", ends)
	}
	for i, text := range texts {
		if got := perTurn[uint64(i+1)]; !bytes.Equal(got, audioFor(text)) {
			t.Errorf("turn %d: audio %q, want that of %q", i+1, got, text)
		}
	}
	tts, _ := up.asked()
	if len(tts) != 20 {
		t.Fatalf("%d upstream sessions for 20 turns on a route that closes after each, want 20", len(tts))
	}
	for i, a := range tts[1:] {
		if a.Req.Purpose != slngpool.PurposeRollover {
			t.Errorf("acquire %d is for %v, want a rollover", i+2, a.Req.Purpose)
		}
	}
}

// TestSynthesizeRetriesTurnBeforeAudio: SLNG fails a turn with a fatal
// error frame before any of its audio reached the caller; the gateway
// speaks it on a new session and the caller sees success.
func TestSynthesizeRetriesTurnBeforeAudio(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	first, second := newFakeTTS("one"), newFakeTTS("two")
	up.tts <- first
	up.tts <- second
	const text = "Spoken on the second try."
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	awaitFlushes(t, first, 1)
	warning, end := errorFrameThenClose("provider_error")
	first.send(warning)
	first.end(end)
	awaitFlushes(t, second, 1)
	audio := pcm(4800, 7)
	second.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentStart, SegmentID: "seg"})
	second.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: audio})
	second.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentEnd, SegmentID: "seg"})
	second.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatalf("the caller saw the failure: %v", err)
	}
	if got := kinds(resps); got != "started warning reconnected segment_start audio segment_end flushed audio_end" {
		t.Fatalf("responses: %s", got)
	}
	// On the fake clock, no time passes between the failure and the new
	// session.
	want := &speechv1.UpstreamReconnected{Reason: "provider_error", PreviousUpstreamSessionId: "one", UpstreamSessionId: "two",
		Gap: durationpb.New(0), TurnsReplayed: 1}
	if diff := cmp.Diff(want, resps[2].GetReconnected(), protocmp.Transform()); diff != "" {
		t.Fatalf("reconnected (-want +got):\n%s", diff)
	}
	if got := audioOf(resps); !bytes.Equal(got, audio) {
		t.Fatalf("the caller got %d bytes of audio, want the second session's %d", len(got), len(audio))
	}
	if got := textsSentTo(second); !slices.Equal(got, []string{text}) {
		t.Fatalf("the second session heard %q, want the turn again", got)
	}
	released, reused, relErr := first.releasedWith()
	if ue, ok := slngclient.AsUpstreamError(relErr); !released || reused || !ok || ue.Code != "provider_error" {
		t.Fatalf("the failed session was released with %v (released %v, reused %v), want its error frame", relErr, released, reused)
	}
}

// TestSynthesizeFailsAfterAudio: once a turn's audio has reached the
// caller, a failure ends the stream, saying how much of the turn arrived.
func TestSynthesizeFailsAfterAudio(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	s := newFakeTTS("one")
	up.tts <- s
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "A turn long enough for several chunks of audio."})
	if err != nil {
		t.Fatal(err)
	}
	awaitFlushes(t, s, 1)
	for i := range 3 {
		s.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(960, byte(i))})
	}
	warning, end := errorFrameThenClose("provider_error")
	s.send(warning)
	s.end(end)
	resps, err := recvAll(t, stream.Recv)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	info, _ := details(st)
	md := info.GetMetadata()
	var bytes, last uint64
	for _, r := range resps {
		if a := r.GetAudio(); a != nil {
			bytes += uint64(len(a.GetData()))
			last = a.GetSequence()
		}
	}
	if bytes != 3*960 || last != 3 {
		t.Fatalf("%d bytes of audio up to sequence %d before the failure, want the 3 chunks SLNG sent", bytes, last)
	}
	wantMD := map[string]string{
		"turn_id": "1", "delivered_bytes": strconv.FormatUint(bytes, 10),
		"last_sequence": strconv.FormatUint(last, 10), "upstream_code": "provider_error",
		"delivered_audio_ms": strconv.FormatInt((time.Duration(bytes) * time.Second / 48000).Milliseconds(), 10),
	}
	for k, v := range wantMD {
		if md[k] != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, md[k], v, md)
		}
	}
}

// TestDrainTwentyStreams: SIGTERM's drain with 20 streams in flight. Each
// is told in-band, with the grace period; Synthesize streams finish the
// turn they are speaking, Transcribe streams end SLNG's audio and deliver
// every final SLNG sends before it closes, and all end with
// UNAVAILABLE / SERVER_DRAINING at once, without any timer.
func TestDrainTwentyStreams(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock(), DrainGrace: 5 * time.Second})
	var synths []*fakeTTS
	var transcribers []*fakeSTT
	for i := range 10 {
		synths = append(synths, newFakeTTS(fmt.Sprint("tts", i)))
		up.tts <- synths[i]
		s := newFakeSTT(fmt.Sprint("stt", i))
		s.endOnEnd = false // SLNG sends its last finals after the end of the audio, then closes
		transcribers = append(transcribers, s)
		up.stt <- s
	}
	ctx := testContext(t)
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 20)
	// Every stream is under way (audio, or a final, received) before the
	// drain, and has its drain notice before SLNG finishes.
	var underWay, noticed sync.WaitGroup
	underWay.Add(20)
	noticed.Add(20)
	// once calls wg.Done the first time cond holds, and at the end of the
	// stream if it never did.
	once := func(wg *sync.WaitGroup) (mark func(cond bool), end func()) {
		done := false
		mark = func(cond bool) {
			if cond && !done {
				done = true
				wg.Done()
			}
		}
		return mark, func() { mark(true) }
	}
	wantGrace := func(d *speechv1.ServerDraining) error {
		if diff := cmp.Diff(&speechv1.ServerDraining{Grace: durationpb.New(5 * time.Second)}, d, protocmp.Transform()); diff != "" {
			return fmt.Errorf("draining notice (-want +got):\n%s", diff)
		}
		return nil
	}
	speechOf := func(text string) []byte { return []byte(text + text) }
	const tail = "And this u" // the final of the speech SLNG held when its audio ended
	sttText := func(i int) string { return fmt.Sprintf("Transcription stream %d keeps every final.", i) }
	for i := range 10 {
		go func() {
			text := fmt.Sprintf("Synthesis stream %d finishes its turn.", i)
			speaking, speakingEnd := once(&underWay)
			drained, drainedEnd := once(&noticed)
			defer drainedEnd()
			defer speakingEnd()
			b, err := h.tts.Synthesize(ctx)
			if err == nil {
				err = b.Send(ttsConfig(nil))
			}
			if err == nil {
				err = b.Send(ttsText(text, true))
			}
			var resps []*speechv1.SynthesizeResponse
			for err == nil {
				var m *speechv1.SynthesizeResponse
				if m, err = b.Recv(); err == nil {
					resps = append(resps, m)
					speaking(m.GetAudio() != nil)
					drained(m.GetDraining() != nil)
				}
			}
			results <- func() result {
				if s := wantCode(err, codes.Unavailable, ReasonServerDraining); s != "" {
					return result{text, fmt.Errorf("status: %s", s)}
				}
				if !hasDrainNotice(kinds(resps)) {
					return result{text, fmt.Errorf("no draining notice: %s", kinds(resps))}
				}
				for _, r := range resps {
					if d := r.GetDraining(); d != nil {
						if err := wantGrace(d); err != nil {
							return result{text, err}
						}
					}
				}
				if got := kinds(resps); got != "started audio draining audio flushed audio_end" {
					return result{text, fmt.Errorf("responses: %s", got)}
				}
				if got := audioOf(resps); !bytes.Equal(got, speechOf(text)) {
					return result{text, fmt.Errorf("turn cut: %q", got)}
				}
				return result{text, nil}
			}()
		}()
		go func() {
			text := sttText(i)
			heard, heardEnd := once(&underWay)
			drained, drainedEnd := once(&noticed)
			defer drainedEnd()
			defer heardEnd()
			s, err := h.stt.Transcribe(ctx)
			if err == nil {
				err = s.Send(sttConfig(nil))
			}
			if err == nil {
				// Which stream's audio this is, for SLNG's part.
				err = s.Send(sttAudioReq(pcm(3200, byte(i))))
			}
			if err == nil {
				// Speech without its end: only the end of the audio that
				// the drain sends turns it into a final.
				err = s.Send(sttAudioReq(pcm(320, byte(i))))
			}
			var resps []*speechv1.TranscribeResponse
			for err == nil {
				var m *speechv1.TranscribeResponse
				if m, err = s.Recv(); err == nil {
					resps = append(resps, m)
					heard(m.GetFinalTranscript() != nil)
					drained(m.GetDraining() != nil)
				}
			}
			results <- func() result {
				if s := wantCode(err, codes.Unavailable, ReasonServerDraining); s != "" {
					return result{text, fmt.Errorf("status: %s", s)}
				}
				drainedAt := -1
				for n, r := range resps {
					if d := r.GetDraining(); d != nil {
						drainedAt = n
						if err := wantGrace(d); err != nil {
							return result{text, err}
						}
					}
				}
				if drainedAt < 0 {
					return result{text, fmt.Errorf("no draining notice")}
				}
				if got := finalText(resps); got != text+" "+tail {
					return result{text, fmt.Errorf("finals %q", got)}
				}
				if got := finalText(resps[drainedAt:]); got != tail {
					return result{text, fmt.Errorf("finals after the drain notice %q, want %q", got, tail)}
				}
				return result{text, nil}
			}()
		}()
	}
	// SLNG's part: each session starts its turn, or transcribes the
	// speech that ended, whichever stream it serves.
	for _, s := range synths {
		awaitFlushes(t, s, 1)
		audio := speechOf(textsSentTo(s)[0])
		s.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: audio[:len(audio)/2]})
	}
	for _, s := range transcribers {
		waitFor(t, func() bool { return len(s.received()) == 3200+320 }, "the audio of session "+s.id)
		s.send(final(sttText(int(s.received()[0]))))
	}
	awaitGroup(t, ctx, &underWay, "every stream under way")
	drainAt := time.Now()
	h.srv.Drain()
	awaitGroup(t, ctx, &noticed, "every stream's drain notice")
	for _, s := range synths {
		audio := speechOf(textsSentTo(s)[0])
		s.speakTurn(audio[len(audio)/2:])
	}
	for _, s := range transcribers {
		// The drain ended SLNG's audio: SLNG finalizes what it heard, and
		// closes.
		s.wrote(t, "close")
		s.send(final(tail))
		s.end(io.EOF)
	}
	for range 20 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("%s: %v", r.name, r.err)
			}
		case <-ctx.Done():
			t.Fatal("streams still running after the drain")
		}
	}
	if took := time.Since(drainAt); took > 5*time.Second {
		t.Fatalf("streams took %s to end after the drain, beyond the 5 s grace", took)
	}
	for _, s := range transcribers {
		if got := s.writesOf(); !slices.Equal(got, []string{"audio:3200", "audio:320", "close"}) {
			t.Errorf("session %s was written %q, want the audio, then its end", s.id, got)
		}
	}
}

func hasDrainNotice(kinds string) bool {
	return slices.Contains(strings.Fields(kinds), "draining")
}

// wantCode is wantStatus for goroutines: it returns what is wrong, or "".
func wantCode(err error, code codes.Code, reason string) string {
	if got, want := outcomeOf(err), code.String()+"/"+reason; got != want {
		return fmt.Sprintf("%s (%v), want %s", got, err, want)
	}
	return ""
}

// TestCallerIdleTimeout: a stream whose caller goes quiet ends with
// OUT_OF_RANGE / CALLER_IDLE_TIMEOUT exactly when the idle timeout has
// passed since the stream was last busy, but never while a turn is spoken.
func TestCallerIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 5 * time.Minute
	clk := newTestClock()
	// The idle timer alone: while a turn is spoken, no timer is armed.
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, CallerIdleTimeout: idle}))
	sess := newFakeTTS("one")
	up.tts <- sess
	ctx := testContext(t)

	b := h.synthesize(t, ctx, nil)
	started := b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetStarted() != nil })
	wantLimits := &speechv1.StreamLimits{MaxTextBytes: 64 << 10, MaxAudioChunkBytes: 64 << 10, IdleTimeout: durationpb.New(idle)}
	if diff := cmp.Diff(wantLimits, started[0].GetStarted().GetLimits(), protocmp.Transform()); diff != "" {
		t.Fatalf("limits (-want +got):\n%s", diff)
	}
	b.send(ttsText("A turn that takes longer to speak than the idle timeout.", true))
	awaitFlushes(t, sess, 1)
	first, second := pcm(4800, 1), pcm(4800, 2)
	sess.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: first})
	b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
	// Twice the idle timeout passes while the turn is spoken.
	clk.Advance(2 * idle)
	sess.speakTurn(second)
	resps := b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudioEnd() != nil })
	if got := kinds(resps); got != "audio flushed audio_end" || !bytes.Equal(audioOf(resps), second) {
		t.Fatalf("the turn was cut by the idle timeout: %s", got)
	}
	// Idle from the end of the turn, to the millisecond.
	advanceExactly(t, clk, idle)
	rest, err := recvAll(t, b.stream.Recv)
	wantStatus(t, err, codes.OutOfRange, ReasonCallerIdle)
	if len(rest) != 0 {
		t.Fatalf("after the turn: %s", kinds(rest))
	}

	up.stt <- newFakeSTT("two")
	s, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(sttConfig(nil)); err != nil {
		t.Fatal(err)
	}
	if resp := recvResponse(t, s, "started"); resp.GetStarted() == nil {
		t.Fatalf("first response %v", resp)
	}
	advanceExactly(t, clk, idle)
	_, err = recvAll(t, s.Recv)
	wantStatus(t, err, codes.OutOfRange, ReasonCallerIdle)
}

// TestSynthesizeUpstreamClosesWithoutSpeaking: an upstream that closes
// normally before speaking, every time, is not redialled forever: the
// first session and maxReconnects more, then UNAVAILABLE.
func TestSynthesizeUpstreamClosesWithoutSpeaking(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	var sessions []*fakeTTS
	for i := range maxReconnects + 2 {
		sessions = append(sessions, newFakeTTS(fmt.Sprint("s", i+1)))
		up.tts <- sessions[i]
	}
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Never spoken."})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions[:maxReconnects+1] {
		awaitFlushes(t, s, 1)
		s.end(io.EOF) // SLNG's normal close, before any audio
	}
	_, err = recvAll(t, stream.Recv)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	if tts, _ := up.asked(); len(tts) != maxReconnects+1 || len(up.tts) != 1 {
		t.Fatalf("%d upstream sessions, want %d (the first and %d retries): %v", len(tts), maxReconnects+1, maxReconnects, st)
	}
}
