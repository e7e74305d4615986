package service

import (
	"sync"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestRolloverCloseDelaysNothing: when a Synthesize stream rolls over with
// a turn queued, the old session's graceful close, however long SLNG takes
// to answer it, does not hold the queued turn back from the new session.
func TestRolloverCloseDelaysNothing(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
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
	ctx := testContext(t)
	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.SynthesizeRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	text := func(s string) *speechv1.SynthesizeRequest {
		return &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: s, Flush: true}}}
	}
	recv := func() *speechv1.SynthesizeResponse {
		t.Helper()
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}})
	recv() // started
	send(text("One."))
	send(text("Two."))
	waitFor(t, func() bool { return len(first.sentList()) == 4 }, "both turns on the first session")
	first.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(960, 1)})
	if r := recv(); r.GetAudio() == nil {
		t.Fatalf("want turn 1's audio, got %v", r)
	}
	// The first session is past its age when its turn ends, with turn 2
	// queued and none of its audio come.
	clk.Advance(2 * time.Minute)
	first.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if r := recv(); r.GetFlushed().GetTurnId() != 1 {
		t.Fatalf("want turn 1's flushed, got %v", r)
	}
	if r := recv(); r.GetAudioEnd().GetTurnId() != 1 {
		t.Fatalf("want turn 1's end, got %v", r)
	}
	if r := recv(); r.GetReconnected().GetUpstreamSessionId() != "two" {
		t.Fatalf("want the rollover to session two, got %v", r)
	}
	waitFor(t, func() bool { return len(second.sentList()) == 2 }, "turn 2 on the new session while the old one closes")
	second.speakTurn(pcm(960, 2))
	if r := recv(); r.GetAudio().GetTurnId() != 2 {
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
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatal(err)
	}
}
