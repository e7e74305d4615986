package service

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestSynthesizeTwentyTurnsAcrossSessions: a model that closes its socket
// after every audio_end serves 20 turns on one stream; the audio, run
// through the simulator's recognizer, gives back all 20 texts.
func TestSynthesizeTwentyTurnsAcrossSessions(t *testing.T) {
	t.Parallel()
	const model = "slng/rime/arcana:3-en" // closes after audio_end in the simulator
	h := newHarness(t, slngsim.Options{}, Config{})
	ctx := testContext(t)
	b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{Model: model, Format: &speechv1.AudioFormat{
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000}})
	var texts []string
	var all []*speechv1.SynthesizeResponse
	for i := range 20 {
		texts = append(texts, fmt.Sprintf("Turn %d of twenty.", i+1))
		b.send(ttsText(texts[i], true))
		if i%3 == 0 {
			// Wait now and then, so that the close meets both an idle
			// stream and turns queued behind the one being spoken.
			all = append(all, b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudioEnd() != nil })...)
		}
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
	ends := 0
	for _, r := range all {
		if r.GetAudioEnd() != nil {
			ends++
		}
	}
	if ends != 20 {
		t.Fatalf("%d audio_end for 20 turns", ends)
	}
	got, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, audioOf(all), 3200)
	if err != nil {
		t.Fatal(err)
	}
	checkFinals(t, got, texts)
	if n := len(h.sim.Sessions()); n < 21 {
		t.Fatalf("only %d upstream sessions for 20 turns on a model that closes after each", n)
	}
}

// TestSynthesizeRetriesTurnBeforeAudio: SLNG fails a turn before any of its
// audio reached the caller; the gateway speaks it on a new session and the
// caller sees success.
func TestSynthesizeRetriesTurnBeforeAudio(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Script: onFirstConnection("*=error:provider_error@first-audio,fatal")}, Config{})
	const text = "Spoken on the second try."
	resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatalf("the caller saw the failure: %v", err)
	}
	if got := kinds(resps); got != "started warning reconnected segment_start audio segment_end flushed audio_end" {
		t.Fatalf("responses: %s", got)
	}
	rc := resps[2].GetReconnected()
	if rc.GetReason() != "provider_error" || rc.GetTurnsReplayed() != 1 || rc.GetUpstreamSessionId() == rc.GetPreviousUpstreamSessionId() {
		t.Fatalf("reconnected = %v", rc)
	}
	if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != text {
		t.Fatalf("audio says %q", got)
	}
}

// TestSynthesizeFailsAfterAudio: once a turn's audio has reached the
// caller, a failure ends the stream, saying how much of the turn arrived.
func TestSynthesizeFailsAfterAudio(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=error:provider_error@chunks:3,fatal")}, Config{})
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "A turn long enough for several chunks of audio."})
	if err != nil {
		t.Fatal(err)
	}
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
	if bytes == 0 {
		t.Fatal("no audio before the failure")
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
// is told in-band, Synthesize streams finish their turn, Transcribe
// streams deliver every final of the audio they sent, and all end within
// the grace period.
func TestDrainTwentyStreams(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Realtime: true}, Config{DrainGrace: 5 * time.Second})
	ctx := testContext(t)
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 20)
	var ready sync.WaitGroup
	for i := range 10 {
		ready.Add(2)
		go func() {
			text := fmt.Sprintf("Synthesis stream %d finishes its turn.", i)
			b, err := h.tts.Synthesize(ctx)
			if err == nil {
				err = b.Send(ttsConfig(nil))
			}
			if err == nil {
				err = b.Send(ttsText(text, true))
			}
			var resps []*speechv1.SynthesizeResponse
			speaking := false
			for err == nil {
				var m *speechv1.SynthesizeResponse
				if m, err = b.Recv(); err == nil {
					resps = append(resps, m)
					if m.GetAudio() != nil && !speaking {
						speaking = true
						ready.Done()
					}
				}
			}
			if !speaking {
				ready.Done()
			}
			results <- func() result {
				if s := wantCode(err, codes.Unavailable, ReasonServerDraining); s != "" {
					return result{text, fmt.Errorf("status: %s", s)}
				}
				if !hasDrainNotice(kinds(resps)) {
					return result{text, fmt.Errorf("no draining notice: %s", kinds(resps))}
				}
				if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != text {
					return result{text, fmt.Errorf("turn cut: %q", got)}
				}
				return result{text, nil}
			}()
		}()
		go func() {
			text := fmt.Sprintf("Transcription stream %d keeps every final.", i)
			s, err := h.stt.Transcribe(ctx)
			if err == nil {
				err = s.Send(sttConfig(nil))
			}
			if err == nil {
				err = s.Send(sttAudioReq(slngsim.Synthesize(text, "linear16", 16000)))
			}
			if err == nil {
				// Speech without its end: only the drain's finalize
				// turns it into a final.
				// 10 characters: 2 symbols of 96 samples each.
				err = s.Send(sttAudioReq(slngsim.Synthesize("And this unfinished", "linear16", 16000)[:10*2*96*2]))
			}
			ready.Done()
			var resps []*speechv1.TranscribeResponse
			for err == nil {
				var m *speechv1.TranscribeResponse
				if m, err = s.Recv(); err == nil {
					resps = append(resps, m)
				}
			}
			results <- func() result {
				if s := wantCode(err, codes.Unavailable, ReasonServerDraining); s != "" {
					return result{text, fmt.Errorf("status: %s", s)}
				}
				drained := false
				for _, r := range resps {
					drained = drained || r.GetDraining() != nil
				}
				if !drained {
					return result{text, fmt.Errorf("no draining notice")}
				}
				if got := finalText(resps); got != text+" And this u" {
					return result{text, fmt.Errorf("finals %q", got)}
				}
				return result{text, nil}
			}()
		}()
	}
	ready.Wait()
	waitFor(t, func() bool { return h.sim.Stats().STTFinals >= 10 }, "every transcription to have a final")
	drainAt := time.Now()
	h.srv.Drain()
	for range 20 {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		}
	}
	if took := time.Since(drainAt); took > 5*time.Second {
		t.Fatalf("streams took %s to end after the drain, beyond the 5 s grace", took)
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
// OUT_OF_RANGE / CALLER_IDLE_TIMEOUT, but never while a turn is spoken.
func TestCallerIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	h := newHarness(t, slngsim.Options{Realtime: true}, Config{CallerIdleTimeout: idle})
	ctx := testContext(t)

	b := h.synthesize(t, ctx, nil)
	started := b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetStarted() != nil })
	if got := started[0].GetStarted().GetLimits().GetIdleTimeout().AsDuration(); got != idle {
		t.Fatalf("limits.idle_timeout = %s", got)
	}
	// A turn that takes longer than the idle timeout to speak.
	const text = "A real-time turn that takes longer to speak than the idle timeout."
	b.send(ttsText(text, true))
	start := time.Now()
	resps, err := recvAll(t, b.stream.Recv)
	wantStatus(t, err, codes.OutOfRange, ReasonCallerIdle)
	if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != text {
		t.Fatalf("the turn was cut by the idle timeout: %q", got)
	}
	if took := time.Since(start); took < idle {
		t.Fatalf("ended after %s", took)
	}

	s, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(sttConfig(nil)); err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(t, s.Recv)
	wantStatus(t, err, codes.OutOfRange, ReasonCallerIdle)
}

// TestSynthesizeUpstreamClosesWithoutSpeaking: an upstream that closes
// normally before speaking, every time, is not redialled forever.
func TestSynthesizeUpstreamClosesWithoutSpeaking(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=close:1000@first-audio")}, Config{})
	_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Never spoken."})
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	if n := len(h.sim.Sessions()); n != maxReconnects+1 {
		t.Fatalf("%d upstream sessions, want %d (the first and %d retries): %v", n, maxReconnects+1, maxReconnects, st)
	}
}
