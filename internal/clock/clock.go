// Package clock is time as a component takes it: Now and timers, from the
// real clock or from a fake one that moves only when a test advances it,
// so that back-offs, pauses and lifetimes measured in seconds or minutes
// are tested in no time and the same way on every run.
//
// A Fake may be used concurrently; its timers fire from Advance, on the
// caller's goroutine, into channels with room for one time, as the real
// ones do.
package clock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is a source of time.
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer on this clock.
	NewTimer(d time.Duration) Timer
}

// Timer is a *time.Timer of a Clock.
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// Stop and Reset are time.Timer's: after either, no time from before
	// is delivered.
	Stop() bool
	Reset(d time.Duration) bool
	// ResetAt is Reset to fire at the time at. A deadline computed from
	// an earlier Now stays that deadline, however far the time moved
	// since: on a fake clock a test may move it at any moment.
	ResetAt(at time.Time) bool
}

// Real is the system's clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
func (r realTimer) ResetAt(at time.Time) bool  { return r.t.Reset(time.Until(at)) }

// Fake is a clock whose time moves only by Advance.
type Fake struct {
	mu    sync.Mutex
	now   time.Time
	armed []*fakeTimer
	// changed is closed, and replaced, whenever a timer is armed or
	// disarmed: Armed's waiters look again.
	changed chan struct{}
}

// NewFake returns a Fake whose time starts at start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now is the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer arms a timer that fires when the fake time reaches Now()+d; at
// once when d is not positive.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// Advance moves the time d on and fires, in order, the timers it reaches.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.fireLocked()
}

// Armed is the number of timers armed and not fired.
func (f *Fake) Armed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.armed)
}

// WaitArmed blocks until at least n timers are armed, or ctx ends (its
// error): how a test knows that the code under test waits on the clock
// again.
func (f *Fake) WaitArmed(ctx context.Context, n int) error {
	return f.waitUntil(ctx, func() bool { return len(f.armed) >= n })
}

// WaitDue blocks until a timer is armed to fire within d of the fake
// time, or ctx ends (its error). A component with one timer that it moves
// earlier when a nearer deadline comes (a loop over several deadlines)
// has a timer armed all along; WaitArmed cannot tell that it took the
// nearer deadline yet, WaitDue can.
func (f *Fake) WaitDue(ctx context.Context, d time.Duration) error {
	return f.waitUntil(ctx, func() bool {
		return slices.ContainsFunc(f.armed, func(t *fakeTimer) bool { return !t.at.After(f.now.Add(d)) })
	})
}

// waitUntil blocks until cond, called under f.mu, holds, or ctx ends.
func (f *Fake) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		ok, changed := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fake) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// fireLocked fires the armed timers that the time has reached.
func (f *Fake) fireLocked() {
	slices.SortStableFunc(f.armed, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	n := 0
	for _, t := range f.armed {
		if t.at.After(f.now) {
			break
		}
		select {
		case t.c <- f.now:
		default: // a time not yet received: a real timer would not queue a second
		}
		n++
	}
	if n > 0 {
		f.armed = slices.Delete(f.armed, 0, n)
		f.changedLocked()
	}
}

type fakeTimer struct {
	f  *Fake
	c  chan time.Time
	at time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.stopLocked()
}

func (t *fakeTimer) stopLocked() bool {
	select {
	case <-t.c: // as time.Timer since Go 1.23: nothing stale after Stop
	default:
	}
	i := slices.Index(t.f.armed, t)
	if i < 0 {
		return false
	}
	t.f.armed = slices.Delete(t.f.armed, i, i+1)
	t.f.changedLocked()
	return true
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.resetLocked(t.f.now.Add(d))
}

func (t *fakeTimer) ResetAt(at time.Time) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.resetLocked(at)
}

func (t *fakeTimer) resetLocked(at time.Time) bool {
	active := t.stopLocked()
	t.at = at
	t.f.armed = append(t.f.armed, t)
	t.f.changedLocked()
	t.f.fireLocked()
	return active
}
