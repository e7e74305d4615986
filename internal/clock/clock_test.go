package clock

import (
	"context"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a, b, c := f.NewTimer(2*time.Second), f.NewTimer(time.Second), f.NewTimer(3*time.Second)
	if f.Armed() != 3 {
		t.Fatalf("Armed() = %d, want 3", f.Armed())
	}
	if !c.Stop() || c.Stop() {
		t.Fatal("Stop of an armed timer, then of a stopped one")
	}
	f.Advance(time.Second)
	if got := <-b.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("b fired at %v", got)
	}
	select {
	case <-a.C():
		t.Fatal("a fired a second early")
	default:
	}
	f.Advance(5 * time.Second)
	if got := <-a.C(); !got.Equal(start.Add(6 * time.Second)) {
		t.Fatalf("a fired at %v, want the time Advance reached", got)
	}
	select {
	case <-c.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	// Reset rearms from now, and drops a time not received.
	f.Advance(0)
	b.Reset(time.Minute)
	f.Advance(59 * time.Second)
	if f.Armed() != 1 {
		t.Fatalf("Armed() = %d, want b alone", f.Armed())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- f.WaitArmed(ctx, 2) }()
	a.Reset(0) // fires at once: still one armed
	if got := <-a.C(); !got.Equal(f.Now()) {
		t.Fatalf("a zero Reset fired at %v, want now", got)
	}
	c.Reset(time.Hour)
	if err := <-waited; err != nil {
		t.Fatalf("WaitArmed: %v", err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := f.WaitArmed(short, 3); err == nil {
		t.Fatal("WaitArmed returned nil for 3 timers, with 2 armed")
	}
}

// TestWaitDue: a timer moved to an earlier deadline is seen by WaitDue,
// where WaitArmed is already satisfied by the later one.
func TestWaitDue(t *testing.T) {
	t.Parallel()
	f := NewFake(time.Unix(0, 0))
	timer := f.NewTimer(time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := f.WaitDue(ctx, time.Hour); err != nil {
		t.Fatalf("WaitDue(an hour): %v", err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := f.WaitDue(short, time.Second); err == nil {
		t.Fatal("WaitDue(a second) returned nil with a timer an hour away")
	}
	waited := make(chan error, 1)
	go func() { waited <- f.WaitDue(ctx, time.Second) }()
	timer.Reset(time.Second)
	if err := <-waited; err != nil {
		t.Fatalf("WaitDue after the timer moved to a second: %v", err)
	}
}

// TestResetAt: a deadline stays where it was set, wherever the time has
// moved since it was computed.
func TestResetAt(t *testing.T) {
	t.Parallel()
	start := time.Unix(0, 0)
	f := NewFake(start)
	timer := f.NewTimer(time.Hour)
	deadline := f.Now().Add(time.Minute)
	f.Advance(30 * time.Second) // between the reading of Now and the reset
	timer.ResetAt(deadline)
	f.Advance(30*time.Second - time.Nanosecond)
	select {
	case <-timer.C():
		t.Fatal("fired before its deadline")
	default:
	}
	f.Advance(time.Nanosecond)
	if got := <-timer.C(); !got.Equal(deadline) {
		t.Fatalf("fired at %v, want %v", got, deadline)
	}
	timer.ResetAt(start) // a deadline passed fires at once
	if got := <-timer.C(); !got.Equal(deadline) {
		t.Fatalf("a past deadline fired at %v, want now (%v)", got, deadline)
	}
}

func TestReal(t *testing.T) {
	t.Parallel()
	r := Real()
	before := time.Now()
	tm := r.NewTimer(time.Millisecond)
	if got := <-tm.C(); got.Before(before) {
		t.Fatalf("fired at %v, before %v", got, before)
	}
	if tm.Stop() {
		t.Fatal("Stop after firing reported an armed timer")
	}
	if r.Now().Before(before) {
		t.Fatal("Now went back")
	}
	at := r.Now().Add(time.Millisecond)
	tm.ResetAt(at)
	if got := <-tm.C(); got.Before(at) {
		t.Fatalf("ResetAt fired at %v, before %v", got, at)
	}
}
