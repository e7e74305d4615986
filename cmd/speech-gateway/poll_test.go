package main

import (
	"context"
	"time"
)

// pollUntil calls cond every interval, the first time at once, until it
// holds (nil) or ctx ends (ctx's error).
func pollUntil(ctx context.Context, interval time.Duration, cond func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
