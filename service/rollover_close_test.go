package service

import (
	"sync"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestRolloverCloseDelaysNothing: when a Synthesize stream rolls over with
// a turn queued, the old session's graceful close, however long SLNG takes
// to answer it, does not hold the queued turn back from the new session.
func TestRolloverCloseDelaysNothing(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	h, up := newFakeGateway(t, Config{Clock: clk, MaxUpstreamSessionAge: time.Minute, CloseTimeout: time.Hour,
		CallerStallTimeout: -1, TurnTimeout: -1, CallerIdleTimeout: -1})
	first, second := newFakeTTS("one"), newFakeTTS("two")
	first.readyAt, second.readyAt = clk.Now(), clk.Now()
	first.closeHeld = make(chan struct{})
	var closeOnce sync.Once
	letClose := func() { closeOnce.Do(func() { close(first.closeHeld) }) }
	t.Cleanup(letClose) // before the gateway's cleanup, which waits for the close
	up.tts <- first
	up.tts <- second
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.recv("started")
	b.send(ttsText("One.", true))
	b.send(ttsText("Two.", true))
	waitFor(t, func() bool { return len(first.sentList()) == 4 }, "both turns on the first session")
	first.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(960, 1)})
	if r := b.recv("turn 1's audio"); r.GetAudio() == nil {
		t.Fatalf("want turn 1's audio, got %v", r)
	}
	// The first session is past its age when its turn ends, with turn 2
	// queued and none of its audio come.
	clk.Advance(2 * time.Minute)
	first.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if r := b.recv("flushed"); r.GetFlushed().GetTurnId() != 1 {
		t.Fatalf("want turn 1's flushed, got %v", r)
	}
	if r := b.recv("audio_end"); r.GetAudioEnd().GetTurnId() != 1 {
		t.Fatalf("want turn 1's end, got %v", r)
	}
	if r := b.recv("reconnected"); r.GetReconnected().GetUpstreamSessionId() != "two" {
		t.Fatalf("want the rollover to session two, got %v", r)
	}
	waitFor(t, func() bool { return len(second.sentList()) == 2 }, "turn 2 on the new session while the old one closes")
	second.speakTurn(pcm(960, 2))
	if r := b.recv("turn 2's audio"); r.GetAudio().GetTurnId() != 2 {
		t.Fatalf("want turn 2's audio, got %v", r)
	}
	if released, _, _ := first.releasedWith(); released {
		t.Fatal("the old session was given back before its close ended")
	}
	letClose()
	waitFor(t, func() bool { released, _, _ := first.releasedWith(); return released }, "the old session given back")
	if _, reused, err := first.releasedWith(); reused || err != nil {
		t.Fatalf("old session released with %v (kept %v), want a clean close", err, reused)
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, b.stream.Recv); err != nil {
		t.Fatal(err)
	}
}
