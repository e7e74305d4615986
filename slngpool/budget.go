package slngpool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrBudget is returned when the Budget had no session for the caller
// within AcquireTimeout. It wraps ErrExhausted.
var ErrBudget = fmt.Errorf("%w: upstream session budget reached", ErrExhausted)

// Budget bounds SLNG sessions beyond this pool, per credential: at most a
// number of sessions per SLNG key across every gateway replica
// (fleet.Budget). The pool asks it before it dials, before it keeps a
// released session as a standby, and tells it when a session ends. A
// credential is a fingerprint of the key, never the key.
type Budget interface {
	// Acquire reserves one session of cred for a caller, waiting up to
	// wait; an error means none could be had.
	Acquire(ctx context.Context, cred string, wait time.Duration) error
	// AcquireSpare reserves one for a standby, without waiting and only
	// while callers would still find room; an error means not now.
	AcquireSpare(ctx context.Context, cred string) error
	// Spare reports whether a session of cred already held may stay as a
	// standby: false when callers are short of room.
	Spare(ctx context.Context, cred string) bool
	// Release gives one session of cred back. It must not block.
	Release(cred string)
}

// takeBudget reserves a session of k's credential for a caller. When none
// is free it first retires one of this pool's standbys, then waits up to
// the acquire's deadline. Errors: ErrBudget, ctx's error, ErrClosed.
func (p *Pool) takeBudget(ctx context.Context, k poolKey, until time.Time) error {
	b := p.opts.Budget
	if b == nil || b.Acquire(ctx, k.cred, 0) == nil {
		return nil
	}
	// Only a standby of the same credential frees a session of its budget.
	p.evictOldest(func(o poolKey) bool { return o.cred == k.cred })
	err := b.Acquire(ctx, k.cred, max(until.Sub(p.now()), 0)) // the Budget waits in real time
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case p.ctx.Err() != nil:
		return ErrClosed
	}
	return ErrBudget
}

// spareBudget reserves a session of k's credential for a standby dial.
func (p *Pool) spareBudget(k poolKey) bool {
	return p.opts.Budget == nil || p.opts.Budget.AcquireSpare(p.ctx, k.cred) == nil
}

// keepBudget reports whether a released session of k may stay as a
// standby under the Budget.
func (p *Pool) keepBudget(k poolKey) bool {
	return p.opts.Budget == nil || p.opts.Budget.Spare(p.ctx, k.cred)
}

// freeSlot frees the slot, and the Budget's session, of a session of k
// that has ended or was never dialled.
func (p *Pool) freeSlot(k poolKey) {
	<-p.slots
	if p.opts.Budget != nil {
		p.opts.Budget.Release(k.cred)
	}
}

// errBudgetSkip is why a standby was not dialled: the Budget had no room.
var errBudgetSkip = errors.New("no room in the upstream session budget")
