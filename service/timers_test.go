package service

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Stream timers on a fake clock: each fires exactly at its setting, not a
// moment before, however busy the machine is.

// advanceTo waits until the stream's loop has a timer due within d on
// clk, then moves clk on by d. The loop keeps one timer and moves it
// earlier as nearer deadlines come, so waiting for a timer armed at all
// could advance before the loop took the deadline the test is about.
func advanceTo(t *testing.T, clk *clock.Fake, d time.Duration) {
	t.Helper()
	if err := clk.WaitDue(testContext(t), d); err != nil {
		t.Fatalf("no stream timer due within %s: %v", d, err)
	}
	clk.Advance(d)
}

// advanceJustShort waits as advanceTo does for a timer due within d, and
// moves clk on to a millisecond before d.
func advanceJustShort(t *testing.T, clk *clock.Fake, d time.Duration) {
	t.Helper()
	if err := clk.WaitDue(testContext(t), d); err != nil {
		t.Fatalf("no stream timer due within %s: %v", d, err)
	}
	clk.Advance(d - time.Millisecond)
}

// newTestClock is a fake clock for a gateway's stream timers.
func newTestClock() *clock.Fake { return clock.NewFake(time.Unix(1_000_000, 0)) }

// onlyTimersSet turns off every stream timer cfg leaves at its default, so
// that the loop waits only on the timers the test is about and
// advanceExactly can tell one did not fire early. (FinalsTimeout has no
// off: it is armed only after the caller's half-close.)
func onlyTimersSet(cfg Config) Config {
	for _, d := range []*time.Duration{&cfg.MaxStreamDuration, &cfg.CallerIdleTimeout, &cfg.CallerStallTimeout,
		&cfg.FirstMessageTimeout, &cfg.TurnTimeout, &cfg.ClearTimeout, &cfg.FinalizeTimeout} {
		if *d == 0 {
			*d = -1
		}
	}
	return cfg
}

// advanceExactly advances clk to just before d from when the loop armed its
// timer, checks that the timer has not fired, and then moves it onto d.
func advanceExactly(t *testing.T, clk *clock.Fake, d time.Duration) {
	t.Helper()
	advanceJustShort(t, clk, d)
	if clk.Armed() != 1 {
		t.Fatalf("the timer fired before %s", d)
	}
	clk.Advance(time.Millisecond)
}

// settled waits until no response waits for the caller. A send to the
// caller that is under way when the fake clock jumps looks as if it had
// lasted the whole jump: a test that advances the clock past the stall
// timeout while the caller reads waits for this first.
func settled(t *testing.T, h *harness) {
	t.Helper()
	waitFor(t, func() bool { return h.counter(t, "speech_gateway_caller_buffered_bytes", nil) == 0 }, "the caller to have every response")
}

// TestFirstMessageTimeoutOnTheClock: a stream that sends no config ends at
// the first-message timeout, not before.
func TestFirstMessageTimeoutOnTheClock(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	h, _ := newFakeGateway(t, Config{Clock: clk, FirstMessageTimeout: 10 * time.Second})
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	advanceJustShort(t, clk, 10*time.Second)
	if err := clk.WaitArmed(testContext(t), 1); err != nil || clk.Armed() != 1 {
		t.Fatalf("the timer fired early")
	}
	clk.Advance(time.Millisecond)
	_, err = stream.Recv()
	wantStatus(t, err, codes.OutOfRange, ReasonFirstMessageTimeout)
}

// TestCallerStallOnTheClock: a caller that stops reading while its turn's
// audio waits is let go exactly at the stall timeout: its SLNG session is
// released, not kept, and the caller hears CALLER_STALLED after the audio
// that had reached it.
func TestCallerStallOnTheClock(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	const stall = 30 * time.Second
	h, up := newFakeGateway(t, Config{Clock: clk, CallerStallTimeout: stall, StreamBufferBytes: 256 << 10})
	sess := newFakeTTS("one")
	up.tts <- sess
	ctx := testContext(t)
	stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "A long answer."})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetStarted() == nil {
		t.Fatalf("want started, got %v, %v", r, err)
	}
	waitFor(t, func() bool { return len(sess.sentList()) == 2 }, "the text and its flush")
	// 4 MiB: more than gRPC's windows and the stream's bound hold, so the
	// gateway's send to the caller blocks and the stream stops reading SLNG.
	const total = 4 << 20
	for range total / (64 << 10) {
		sess.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(64<<10, 7)})
	}
	sess.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	waitFor(t, func() bool { return h.counter(t, "speech_gateway_caller_pauses_total", nil) >= 1 }, "the stream to stop reading SLNG")
	// The stall is timed from the send the caller's flow control blocks:
	// the test moves the clock once what waits for the caller holds still.
	last, still := -1.0, 0
	waitFor(t, func() bool {
		n := h.counter(t, "speech_gateway_caller_buffered_bytes", nil)
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		return still >= 30
	}, "the send to the caller to block")

	advanceJustShort(t, clk, stall)
	if released, _, _ := sess.releasedWith(); released {
		t.Fatal("the session was let go before the stall timeout")
	}
	clk.Advance(time.Millisecond)
	waitFor(t, func() bool { released, _, _ := sess.releasedWith(); return released }, "the session's release")
	if _, reused, err := sess.releasedWith(); reused || !errors.Is(err, errCallerStalled) {
		t.Fatalf("session released with %v (kept %v), want errCallerStalled and not kept", err, reused)
	}
	resps, err := recvAll(t, stream.Recv)
	wantStatus(t, err, codes.ResourceExhausted, ReasonCallerStalled)
	if got := len(audioOf(resps)); got >= total {
		t.Fatalf("the caller read all %d bytes of audio after it resumed, want what had reached it at most", got)
	}
	if n := h.counter(t, "speech_gateway_caller_buffered_bytes", nil); n != 0 {
		t.Fatalf("%v bytes still counted as waiting for the caller", n)
	}
}

// TestMaxStreamDurationOnTheClock: a Transcribe stream ends at the
// maximum duration, even while audio and transcripts flow.
func TestMaxStreamDurationOnTheClock(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	const limit = time.Hour
	h, up := newFakeGateway(t, Config{Clock: clk, MaxStreamDuration: limit, CallerIdleTimeout: -1})
	sess := newFakeSTT("one")
	up.stt <- sess
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.TranscribeRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}})
	recvResponse(t, stream, "started")
	for i := range 59 {
		send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: pcm(3200, 1)}})
		waitFor(t, func() bool { return len(sess.received()) == (i+1)*3200 }, "the audio")
		sess.send(final(fmt.Sprint("minute ", i)))
		if f := recvResponse(t, stream, "final").GetFinalTranscript(); f.GetText() != fmt.Sprint("minute ", i) {
			t.Fatalf("want minute %d's final, got %v", i, f)
		}
		settled(t, h)
		clk.Advance(time.Minute) // no timer is due: the hour runs on
	}
	settled(t, h)
	advanceJustShort(t, clk, time.Minute)
	if released, _, _ := sess.releasedWith(); released {
		t.Fatal("the stream ended before its maximum duration")
	}
	clk.Advance(time.Millisecond)
	_, err = recvAll(t, stream.Recv)
	wantStatus(t, err, codes.OutOfRange, ReasonStreamDurationExceeded)
	waitFor(t, func() bool { released, _, _ := sess.releasedWith(); return released }, "the session's release")
}
