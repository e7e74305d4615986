package service

import (
	"fmt"
	"strings"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// Behaviours of SLNG's routes from the second reading of its clients
// (slng-real-clients.md), each through the real gateway.

// TestLetterlessTextsJoined: a text without a letter never goes upstream
// alone: it goes with the next text of its turn, or with the flush as the
// turn's last text.
func TestLetterlessTextsJoined(t *testing.T) {
	t.Parallel()
	sess := newFakeTTS("one")
	h := newFakeHarness(t, []*fakeTTS{sess}, nil)
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetStarted() != nil })
	for _, text := range []string{"42", " ", "apples, ", "7", ".", " Number ", "9"} {
		b.send(ttsText(text, false))
	}
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
	want := []string{"text:42 apples, ", "text:7. Number ", "text:9", "flush"}
	waitFor(t, func() bool { return len(sess.sentList()) >= len(want) }, "the turn upstream")
	if got := sess.sentList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("upstream got %q, want %q", got, want)
	}
}

// TestClearUnansweredRetiresSession: a route that answers `clear` with
// nothing: after ClearTimeout the caller gets `cleared` anyway, the
// session is retired, and the next turn, sent after the clear, is spoken
// on a new session long before the turn watchdog.
func TestClearUnansweredRetiresSession(t *testing.T) {
	t.Parallel()
	p, _ := slngsim.ProfileByName("clear-unanswered")
	h := newHarness(t, slngsim.Options{Profile: &p, Realtime: true},
		Config{ClearTimeout: 300 * time.Millisecond, TurnTimeout: time.Minute})
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.send(ttsText(strings.Repeat("A long turn that is cleared. ", 10), true))
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudio() != nil })
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetCleared() != nil })
	b.send(ttsText("After the clear.", true))
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	if ends[2] != "flushed audio_end" {
		t.Fatalf("turn 2 ended with %q", ends[2])
	}
	if got, _ := slngsim.Decode(audio[2], "linear16", 24000); got != "After the clear." {
		t.Fatalf("turn 2 = %q", got)
	}
	if n := len(h.sim.Sessions()); n != 2 {
		t.Errorf("%d upstream sessions, want the retired one and a new one", n)
	}
	if got := h.counter(t, "speech_gateway_upstream_unanswered_total", map[string]string{"kind": "tts", "request": "clear"}); got != 1 {
		t.Errorf("unanswered clears = %v, want 1", got)
	}
}

// TestFinalizeUnanswered: a route that never answers a finalize: after
// FinalizeTimeout the audio no final covers goes to a new session with
// the finalize; when that one does not answer either, the caller gets a
// finalize_timeout warning, and the stream goes on to its end.
func TestFinalizeUnanswered(t *testing.T) {
	t.Parallel()
	p := slngsim.ProfileRich()
	p.LostFinalizes = -1
	h := newHarness(t, slngsim.Options{Profile: &p}, Config{FinalizeTimeout: 200 * time.Millisecond})
	ctx := testContext(t)
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(sttConfig(&speechv1.RecognitionConfig{})); err != nil {
		t.Fatal(err)
	}
	unfinished := slngsim.Synthesize("Unfinished", "linear16", 16000)
	unfinished = unfinished[:len(unfinished)-2*96] // no silence: only a finalize or the end makes it final
	for _, r := range []*speechv1.TranscribeRequest{sttAudioReq(unfinished),
		{Request: &speechv1.TranscribeRequest_Finalize{Finalize: &speechv1.Finalize{}}}} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	var reconnect *speechv1.UpstreamReconnected
	for {
		r := recvResponse(t, stream, "the finalize's answer")
		if rc := r.GetReconnected(); rc != nil {
			reconnect = rc
		}
		if w := r.GetWarning(); w != nil {
			if w.GetCode() != "finalize_timeout" {
				t.Fatalf("warning %v", w)
			}
			break
		}
		if r.GetFinalTranscript() != nil {
			t.Fatalf("a final answered a finalize the route never answers: %v", r)
		}
	}
	if reconnect.GetReason() != "finalize_unanswered" || reconnect.GetAudioReplayed().AsDuration() <= 0 {
		t.Fatalf("reconnected %v, want the audio replayed to a new session first", reconnect)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	rest, err := recvAll(t, stream.Recv)
	if err != nil || finalText(rest) != "Unfinished" {
		t.Fatalf("the end: %q, %v", finalText(rest), err)
	}
	if got := h.counter(t, "speech_gateway_upstream_unanswered_total", map[string]string{"kind": "stt", "request": "finalize"}); got != 2 {
		t.Errorf("unanswered finalizes = %v, want 2", got)
	}
}

// TestPartialsOffAreDropped: a route that sends partials although init
// turned them off (Sarvam Saaras): a caller that turned them off gets
// none; one that asked for them gets them.
func TestPartialsOffAreDropped(t *testing.T) {
	t.Parallel()
	p, _ := slngsim.ProfileByName("partials-always")
	h := newHarness(t, slngsim.Options{Profile: &p}, Config{})
	audio := spoken([]string{"Partials are the caller's choice."})
	for _, on := range []bool{false, true} {
		resps, err := h.transcribe(t, testContext(t), &speechv1.RecognitionConfig{EnablePartials: on}, audio, 640)
		if err != nil || finalText(resps) != "Partials are the caller's choice." {
			t.Fatalf("partials %v: %q, %v", on, finalText(resps), err)
		}
		partials := 0
		for _, r := range resps {
			if r.GetPartialTranscript() != nil {
				partials++
			}
		}
		if (partials > 0) != on {
			t.Errorf("partials %v: %d partials", on, partials)
		}
	}
	if got := h.counter(t, "speech_gateway_stt_partials_dropped_total", nil); got == 0 {
		t.Error("no partial counted as dropped")
	}
}

// TestRolloverWithTurnsQueued: turns queued back to back leave no moment
// between turns, yet the session is replaced at a turn boundary once it
// reaches MaxUpstreamSessionAge, long before SLNG's own limit would cut a
// turn: every turn is spoken whole, none fails.
func TestRolloverWithTurnsQueued(t *testing.T) {
	t.Parallel()
	p := slngsim.ProfileRich()
	p.ReapAfter = 1500 * time.Millisecond // SLNG's connection limit, scaled down
	h := newHarness(t, slngsim.Options{Profile: &p, Realtime: true}, Config{MaxUpstreamSessionAge: 300 * time.Millisecond})
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	var texts []string
	for i := range 8 {
		texts = append(texts, fmt.Sprintf("Turn %d of eight, queued behind the others.", i+1))
		b.send(ttsText(texts[i], true))
	}
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	rollovers := 0
	for _, r := range resps {
		if r.GetReconnected().GetReason() == "rollover" {
			rollovers++
		}
	}
	for i, text := range texts {
		if got, _ := slngsim.Decode(audio[uint64(i+1)], "linear16", 24000); got != text || ends[uint64(i+1)] != "flushed audio_end" {
			t.Errorf("turn %d: %q, %q", i+1, got, ends[uint64(i+1)])
		}
	}
	if rollovers == 0 {
		t.Error("no rollover: the session was never replaced")
	}
	for _, s := range h.sim.Sessions() {
		if s.CloseCode == 1008 {
			t.Errorf("session %s was reaped (SLNG's limit), not rolled over", s.ID)
		}
	}
}
