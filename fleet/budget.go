package fleet

import (
	"context"
	"sync"
	"time"
)

// Budget is the SLNG session budget: at most a fixed number of upstream
// sessions per SLNG credential, standbys included, across every replica
// sharing the Fleet. It is what the session pool asks before it dials or
// keeps a session; see slngpool.Budget.
type Budget struct {
	sem   *Semaphore
	limit int

	mu   sync.Mutex
	held map[string][]*Lease // by credential fingerprint
}

// Budget returns the session budget of limit sessions per credential
// (more than 0). Its leases are a Semaphore named "upstream".
func (f *Fleet) Budget(limit int) *Budget {
	return &Budget{sem: f.semaphore("upstream", f.opts.Linger), limit: limit, held: map[string][]*Lease{}}
}

// Acquire reserves one session of the credential cred (a fingerprint,
// never the key itself: it is part of a Redis key), waiting up to wait
// for one to free up. Errors: ErrFull, ctx's error, ErrClosed.
func (b *Budget) Acquire(ctx context.Context, cred string, wait time.Duration) error {
	l, err := b.sem.Acquire(ctx, cred, b.limit, wait)
	if err != nil {
		return err
	}
	b.keep(cred, l)
	return nil
}

// keep records l as a session of cred held, for Release to give back.
func (b *Budget) keep(cred string, l *Lease) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held[cred] = append(b.held[cred], l)
}

// reserve is what standbys leave to callers: a tenth of the limit, at
// least one session.
func reserve(limit int64) int64 { return max(1, limit/10) }

// AcquireSpare reserves one session of cred for a standby, without
// waiting, and only while a tenth of the budget (at least one session)
// would still be free for callers. Errors: ErrFull, ErrClosed.
func (b *Budget) AcquireSpare(ctx context.Context, cred string) error {
	spare := int64(b.limit) - reserve(int64(b.limit))
	if spare <= 0 {
		return ErrFull
	}
	l, err := b.sem.try(ctx, cred, spare)
	if err != nil {
		return err
	}
	if l == nil {
		return ErrFull
	}
	b.keep(cred, l)
	return nil
}

// Spare reports whether a session of cred already held may stay as a
// standby: whether a tenth of the budget (at least one session) is free
// for callers besides it. It blocks for at most one Redis round trip.
func (b *Budget) Spare(ctx context.Context, cred string) bool {
	n, mode, replicas := b.sem.count(ctx, cred)
	limit := share(int64(b.limit), mode, replicas)
	return n <= limit-reserve(limit)
}

// Release gives back one session of cred; any one, since they are
// interchangeable. It never blocks.
func (b *Budget) Release(cred string) {
	b.mu.Lock()
	list := b.held[cred]
	if len(list) == 0 {
		b.mu.Unlock()
		return
	}
	l := list[len(list)-1]
	if len(list) == 1 {
		delete(b.held, cred)
	} else {
		b.held[cred] = list[:len(list)-1]
	}
	b.mu.Unlock()
	l.Release()
}

// Limit is the budget per credential.
func (b *Budget) Limit() int { return b.limit }
