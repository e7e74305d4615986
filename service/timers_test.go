package service

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/speech-gateway/speech-gateway/internal/clock"
)

// Stream timers on a fake clock: each fires exactly at its setting, not a
// moment before, however busy the machine is.

// advanceTo waits until the stream's loop waits on clk, then moves clk on
// by d.
func advanceTo(t *testing.T, clk *clock.Fake, d time.Duration) {
	t.Helper()
	if err := clk.WaitArmed(testContext(t), 1); err != nil {
		t.Fatalf("no stream timer armed: %v", err)
	}
	clk.Advance(d)
}

// TestFirstMessageTimeoutOnTheClock: a stream that sends no config ends at
// the first-message timeout, not before.
func TestFirstMessageTimeoutOnTheClock(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h, _ := newFakeGateway(t, Config{Clock: clk, FirstMessageTimeout: 10 * time.Second})
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	advanceTo(t, clk, 10*time.Second-time.Millisecond)
	if err := clk.WaitArmed(testContext(t), 1); err != nil || clk.Armed() != 1 {
		t.Fatalf("the timer fired early")
	}
	clk.Advance(time.Millisecond)
	_, err = stream.Recv()
	wantStatus(t, err, codes.OutOfRange, ReasonFirstMessageTimeout)
}
