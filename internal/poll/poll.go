// Package poll runs a check at a fixed interval until the check says it
// is done or a context ends: the loop behind the gateway's file watchers
// and idle checks, and the tests' waits for a condition, written once,
// with one ticker and no timer per round.
package poll

import (
	"context"
	"time"
)

// Every calls check every interval, the first time one interval from now,
// until check returns true or ctx ends. It blocks until then; run it on a
// goroutine whose owner waits for it.
func Every(ctx context.Context, interval time.Duration, check func() (done bool)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if check() {
				return
			}
		}
	}
}

// Until calls cond at once and then every interval until it holds (nil)
// or ctx ends first (ctx's error): a wait for a condition that nothing
// announces.
func Until(ctx context.Context, interval time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	held := false
	Every(ctx, interval, func() bool {
		held = cond()
		return held
	})
	if held {
		return nil
	}
	return ctx.Err()
}

// T is what Wait needs of a test; *testing.T and *testing.B have it.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Wait is Until for tests, the one wait of theirs for a condition that
// nothing announces: it checks cond at once and then every 5 ms, and fails
// t, naming what it waited for, when ctx ends first.
func Wait(t T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	if err := Until(ctx, 5*time.Millisecond, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
