package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
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
// nothing: ClearTimeout after the clear, on the clock, the caller gets
// `cleared` anyway, the session is retired, and the next turn, sent after
// the clear, is spoken on a new session (the turn watchdog is off: only
// the clear's timeout can have moved it).
func TestClearUnansweredRetiresSession(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	one, two := newFakeTTS("one"), newFakeTTS("two")
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, ClearTimeout: time.Second}))
	up.tts <- one
	up.tts <- two
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.send(ttsText("A long turn that is cleared.", true))
	waitFor(t, func() bool { return len(one.sentList()) == 2 }, "the turn upstream")
	one.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(960, 1)})
	resps := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudio() != nil })
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	waitFor(t, func() bool { return slices.Contains(one.sentList(), "clear") }, "the clear upstream")
	advanceExactly(t, clk, time.Second)
	resps = append(resps, b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetCleared() != nil })...)
	if released, reused, err := one.releasedWith(); !released || reused || err != nil || !one.isClosed() {
		t.Fatalf("the session that left the clear unanswered: released %v, reused %v, with %v, closed %v; want retired",
			released, reused, err, one.isClosed())
	}
	b.send(ttsText("After the clear.", true))
	waitFor(t, func() bool { return len(two.sentList()) == 2 }, "the next turn on a new session")
	if got := two.sentList(); fmt.Sprint(got) != "[text:After the clear. flush]" {
		t.Fatalf("the new session got %q", got)
	}
	spoken := pcm(960, 2)
	two.speakTurn(spoken)
	resps = append(resps, closeAndRecv(t, b)...)
	audio, ends := turns(resps)
	if ends[1] != "cleared" || ends[2] != "flushed audio_end" || !bytes.Equal(audio[2], spoken) {
		t.Fatalf("turn 1 ended %q; turn 2 ended %q with %d bytes of audio", ends[1], ends[2], len(audio[2]))
	}
	if fmt.Sprint(one.sentList()) != "[text:A long turn that is cleared. flush clear]" {
		t.Errorf("the retired session got %q", one.sentList())
	}
	if tts, _ := up.asked(); len(tts) != 2 {
		t.Errorf("%d upstream sessions, want the retired one and a new one", len(tts))
	}
	if got := h.counter(t, "speech_gateway_upstream_unanswered_total", map[string]string{"kind": "tts", "request": "clear"}); got != 1 {
		t.Errorf("unanswered clears = %v, want 1", got)
	}
}

// TestFinalizeUnanswered: a route that never answers a finalize:
// FinalizeTimeout after it, on the clock, the audio no final covers goes
// to a new session with the finalize; when that one does not answer
// either, FinalizeTimeout later, the caller gets a finalize_timeout
// warning, and the stream goes on to its end.
func TestFinalizeUnanswered(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	one, two := newFakeSTT("one"), newFakeSTT("two")
	two.endOnEnd = false
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, FinalizeTimeout: 5 * time.Second}))
	up.stt <- one
	up.stt <- two
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	unfinished := pcmMs(300, 'u')
	c.audio(unfinished)
	c.finalize()
	one.wrote(t, "finalize")
	advanceExactly(t, clk, 5*time.Second)
	c.want(reconnectedResp(&speechv1.UpstreamReconnected{Reason: "finalize_unanswered", PreviousUpstreamSessionId: "one",
		UpstreamSessionId: "two", AudioReplayed: durationpb.New(300 * time.Millisecond), Gap: durationpb.New(0)}))
	two.wrote(t, "finalize")
	if got := two.writesOf(); fmt.Sprint(got) != "[audio:3200 audio:3200 audio:3200 finalize]" {
		t.Fatalf("the new session got %q, want the audio again, then the finalize", got)
	}
	if released, _, err := one.releasedWith(); !released || !errors.Is(err, errFinalizeUnanswered) || !one.isClosed() {
		t.Errorf("the first session: released %v with %v, closed %v", released, err, one.isClosed())
	}
	advanceExactly(t, clk, 5*time.Second)
	if w := c.recv("the warning").GetWarning(); w.GetCode() != "finalize_timeout" {
		t.Fatalf("got %v, want a finalize_timeout warning", w)
	}
	c.closeSend()
	two.wrote(t, "close")
	two.send(final("Unfinished"))
	two.end(io.EOF)
	rest, err := recvAll(t, c.stream.Recv)
	if err != nil || finalText(rest) != "Unfinished" {
		t.Fatalf("the end: %q, %v", finalText(rest), err)
	}
	if got := h.counter(t, "speech_gateway_upstream_unanswered_total", map[string]string{"kind": "stt", "request": "finalize"}); got != 2 {
		t.Errorf("unanswered finalizes = %v, want 2", got)
	}
}

// TestPartialsOffAreDropped: a route that sends partials although init
// turned them off (Sarvam Saaras): a caller that turned them off gets
// none, each counted as dropped; one that asked for them gets them.
func TestPartialsOffAreDropped(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	partial := func(text string) slngclient.STTEvent {
		return slngclient.STTEvent{Kind: slngclient.STTPartial, Transcript: slngclient.Transcript{Text: text}}
	}
	for i, on := range []bool{false, true} {
		sess := newFakeSTT(fmt.Sprint("s", i))
		up.stt <- sess
		c := startSTT(t, h, &speechv1.RecognitionConfig{EnablePartials: on})
		if _, stt := up.asked(); stt[i].Cfg.EnablePartials != on {
			t.Fatalf("partials %v: init asked for partials %v", on, stt[i].Cfg.EnablePartials)
		}
		audio := pcmMs(300, 'p')
		c.audio(audio)
		sess.heard(t, audio)
		sess.send(partial("Partials"))
		sess.send(partial("Partials are"))
		sess.send(timedFinal("Partials are the caller's choice.", 0, 300*time.Millisecond))
		resps, err := c.rest()
		if err != nil || finalText(resps) != "Partials are the caller's choice." {
			t.Fatalf("partials %v: %q, %v", on, finalText(resps), err)
		}
		var partials []string
		for _, r := range resps {
			if p := r.GetPartialTranscript(); p != nil {
				partials = append(partials, p.GetText())
			}
		}
		if want := map[bool]string{false: "[]", true: "[Partials Partials are]"}[on]; fmt.Sprint(partials) != want {
			t.Errorf("partials %v: got %q, want %s", on, partials, want)
		}
	}
	if got := h.counter(t, "speech_gateway_stt_partials_dropped_total", nil); got != 2 {
		t.Errorf("partials counted as dropped: %v, want 2", got)
	}
}

// TestRolloverWithTurnsQueued: turns queued back to back leave no moment
// between turns, yet once the session is MaxUpstreamSessionAge old, on
// the clock, it is replaced at the next turn boundary: the turns not yet
// spoken go to the new session, and every turn is spoken whole, none
// fails.
func TestRolloverWithTurnsQueued(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	const age = 10 * time.Second // under the turn watchdog's 15 s, which stays on
	one, two := newFakeTTS("one"), newFakeTTS("two")
	one.readyAt = clk.Now()
	h, up := newFakeGateway(t, Config{Clock: clk, MaxUpstreamSessionAge: age})
	up.tts <- one
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	texts := []string{"Turn 1 of three.", "Turn 2 of three.", "Turn 3 of three."}
	var sent []string
	for _, text := range texts {
		b.send(ttsText(text, true))
		sent = append(sent, "text:"+text, "flush")
	}
	waitFor(t, func() bool { return len(one.sentList()) == len(sent) }, "the turns upstream")
	spoken := [][]byte{pcm(960, 1), pcm(960, 2), pcm(960, 3)}
	one.speakTurn(spoken[0]) // young: no rollover
	resps := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudioEnd() != nil })
	clk.Advance(age)
	two.readyAt = clk.Now()
	up.tts <- two
	one.speakTurn(spoken[1]) // old: replaced at this boundary, turn 3 queued behind
	waitFor(t, func() bool { return len(two.sentList()) == 2 }, "the queued turn on the new session")
	if got := two.sentList(); fmt.Sprint(got) != fmt.Sprint(sent[4:]) {
		t.Fatalf("the new session got %q, want %q", got, sent[4:])
	}
	two.speakTurn(spoken[2])
	resps = append(resps, closeAndRecv(t, b)...)
	audio, ends := turns(resps)
	var rollovers []*speechv1.UpstreamReconnected
	for _, r := range resps {
		if rc := r.GetReconnected(); rc != nil {
			rollovers = append(rollovers, rc)
		}
	}
	for i := range texts {
		id := uint64(i + 1)
		if !bytes.Equal(audio[id], spoken[i]) || ends[id] != "flushed audio_end" {
			t.Errorf("turn %d: %d bytes, %q", id, len(audio[id]), ends[id])
		}
	}
	want := &speechv1.UpstreamReconnected{Reason: "rollover", PreviousUpstreamSessionId: "one", UpstreamSessionId: "two",
		Gap: durationpb.New(0), TurnsReplayed: 1}
	if len(rollovers) != 1 {
		t.Fatalf("%d reconnects, want one rollover", len(rollovers))
	}
	if diff := cmp.Diff(want, rollovers[0], protocmp.Transform()); diff != "" {
		t.Errorf("rollover (-want +got):\n%s", diff)
	}
	// The gateway closed the old session; SLNG never had to end it.
	if released, reused, err := one.releasedWith(); !released || reused || err != nil || !one.isClosed() {
		t.Errorf("the old session: released %v, reused %v, with %v, closed %v", released, reused, err, one.isClosed())
	}
}
