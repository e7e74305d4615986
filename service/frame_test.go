package service

import (
	"context"
	"slices"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestClearWaitsForTheRestOfAFrame: a clear that the caller sends while
// the stream has an SLNG frame's audio but not yet its alignment (the
// events of one frame, handed one after the other) waits for the rest of
// the frame, so that the clear counts the characters whose audio was
// delivered as spoken.
func TestClearWaitsForTheRestOfAFrame(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: newTestClock()}))
	s := newFakeTTS("one")
	up.tts <- s
	b := h.synthesize(t, testContext(t), timedConfig(elevenModel, true))
	b.recv("started")
	b.send(ttsText("Hello there.", true))
	synthWantSent(t, s, "text:Hello there.", "flush")

	// 20 ms of audio in which "He" is spoken, 8 ms a character, as one
	// frame's two events.
	frame := alignedFrame(20, "He", 0, 8)
	frame[0].FrameGoesOn = true
	s.send(frame[0])
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudio() != nil })
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if poll.Until(ctx, 5*time.Millisecond, func() bool { return slices.Contains(s.sentList(), "clear") }) == nil {
		t.Fatal("the clear went up between a frame's audio and its alignment")
	}
	s.send(frame[1])
	waitFor(t, func() bool { return slices.Contains(s.sentList(), "clear") }, "the clear, after the frame")
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
	rest := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetCleared() != nil })
	d := rest[len(rest)-1].GetCleared().GetDelivered()
	if d.GetSpokenText() != "He" || d.GetSpokenSource() != speechv1.SpokenSource_SPOKEN_SOURCE_TIMINGS {
		t.Fatalf("cleared after 20 ms of audio says %q spoken (%v), want \"He\" from the timings", d.GetSpokenText(), d.GetSpokenSource())
	}
}
