package fleet

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Semaphore counts leases per key (an SLNG credential, a caller), at most
// a limit per key across the fleet. Get one with Fleet.Semaphore.
type Semaphore struct {
	f      *Fleet
	name   string
	linger time.Duration // how long a released lease still counts

	mu   sync.Mutex
	keys map[string]*semKey
}

// semKey is what this replica holds of one key.
type semKey struct {
	// held are the members of the leases held, renewed by the heartbeat.
	held map[string]struct{}
	// lingering are when released leases stop counting locally, for the
	// local and fallback modes (Redis keeps its own).
	lingering []time.Time
}

// Semaphore returns the semaphore called name, creating it on first use.
// The name appears in Redis keys and in metric labels. Its released leases
// stop counting at once.
func (f *Fleet) Semaphore(name string) *Semaphore {
	return f.semaphore(name, 0)
}

// semaphore is Semaphore with released leases counting for linger.
func (f *Fleet) semaphore(name string, linger time.Duration) *Semaphore {
	return named(f, f.sems, name, func() *Semaphore {
		f.m.leases.WithLabelValues(name)
		f.m.refused.WithLabelValues(name)
		return &Semaphore{f: f, name: name, linger: linger, keys: map[string]*semKey{}}
	})
}

// Lease is one unit of a Semaphore, held until Release.
type Lease struct {
	s           *Semaphore
	key, member string
	once        sync.Once
}

// Release gives the lease back. A Semaphore's lease is free across the
// fleet when Release returns, which takes one Redis round trip (at most
// OpTimeout): a caller whose stream ended may start the next on any
// replica. A Budget's never blocks: Redis hears of it from the heartbeat,
// at once, and it still counts for Options.Linger. Only the first call
// counts.
func (l *Lease) Release() {
	if l == nil || l.s == nil {
		return
	}
	l.once.Do(func() { l.s.release(l.key, l.member) })
}

// Acquire takes a lease of key when fewer than limit are held across the
// fleet (in fallback: fewer than this replica's share), waiting up to
// wait for one to free up. limit 0 or less means no limit: the lease
// counts nothing. Errors: ErrFull when none freed up in time, ctx's error,
// ErrClosed. A Redis failure is not an error: the Fleet falls back and
// decides locally.
func (s *Semaphore) Acquire(ctx context.Context, key string, limit int, wait time.Duration) (*Lease, error) {
	if limit <= 0 {
		return &Lease{}, nil
	}
	deadline := time.Now().Add(wait)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		l, err := s.try(ctx, key, int64(limit))
		if err != nil || l != nil {
			return l, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			s.f.m.refused.WithLabelValues(s.name).Inc()
			return nil, ErrFull
		}
		// Jittered, so that replicas waiting for the same key do not ask
		// in step.
		poll := s.f.opts.PollInterval
		d := min(left, poll/2+time.Duration(rand.Int64N(int64(poll))))
		if t == nil {
			t = time.NewTimer(d)
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.f.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// Held reports the leases of key this replica holds.
func (s *Semaphore) Held(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.keys[key]; k != nil {
		return len(k.held)
	}
	return 0
}

func (s *Semaphore) rkey(key string) string {
	return s.f.opts.Prefix + "sem:" + s.name + ":" + key
}

// try takes a lease if one is free now; nil, nil if none is.
func (s *Semaphore) try(ctx context.Context, key string, limit int64) (*Lease, error) {
	if s.f.ctx.Err() != nil {
		return nil, ErrClosed
	}
	mode, replicas := s.f.state()
	member := s.f.member()
	if mode == ModeShared {
		ok, slow, err := s.tryShared(ctx, key, member, limit)
		switch {
		case err == nil && !ok:
			return nil, nil
		case err == nil:
			return s.hold(key, member), nil
		case ctx.Err() != nil:
			// The lease may have been taken just before: let it go.
			s.f.queueRelease(s.rkey(key), member, 0)
			return nil, ctx.Err()
		case s.f.ctx.Err() != nil:
			return nil, ErrClosed
		case slow:
			// Redis is slow: the local share decides, under this very
			// member. A lease granted here reaches Redis with the next
			// heartbeat (renewals add back what Redis lacks); one refused
			// here is let go there, in case Redis took it meanwhile.
			if l := s.tryLocal(key, member, limit, ModeFallback, replicas); l != nil {
				return l, nil
			}
			s.f.queueRelease(s.rkey(key), member, 0)
			return nil, nil
		}
		s.f.fail("acquire", err)
		mode, replicas = s.f.state()
	}
	return s.tryLocal(key, member, limit, mode, replicas), nil
}

// tryLocal takes member as a lease of key if this replica holds fewer than
// its share of limit in mode; nil if it does not.
func (s *Semaphore) tryLocal(key, member string, limit int64, mode Mode, replicas int) *Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keyLocked(key)
	k.prune(time.Now())
	if int64(len(k.held)+len(k.lingering)) >= share(limit, mode, replicas) {
		return nil
	}
	return s.holdLocked(k, key, member)
}

// count returns the live leases of key, across the fleet when shared and
// at this replica otherwise, with the mode and replicas that limits are
// to be shared by.
func (s *Semaphore) count(ctx context.Context, key string) (int64, Mode, int) {
	mode, replicas := s.f.state()
	if mode == ModeShared {
		octx, cancel := s.f.opCtx(ctx)
		start := time.Now()
		n, err := countScript.Run(octx, s.f.rdb, []string{s.rkey(key)}).Int64()
		s.f.m.redisSeconds.WithLabelValues("count").Observe(time.Since(start).Seconds())
		cancel()
		if err == nil {
			return n, mode, replicas
		}
		if ctx.Err() == nil && s.f.ctx.Err() == nil {
			s.f.fail("count", err)
		}
		mode, replicas = s.f.state()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[key]
	if k == nil {
		return 0, mode, replicas
	}
	k.prune(time.Now())
	return int64(len(k.held) + len(k.lingering)), mode, replicas
}

// tryShared runs the acquire script within StartBudget: slow says that
// the budget ran out before Redis answered.
func (s *Semaphore) tryShared(ctx context.Context, key, member string, limit int64) (ok, slow bool, err error) {
	octx, cancel := s.f.boundCtx(ctx, s.f.opts.StartBudget)
	defer cancel()
	start := time.Now()
	n, err := acquireScript.Run(octx, s.f.rdb, []string{s.rkey(key)}, member, limit, s.f.opts.LeaseTTL.Milliseconds()).Int()
	s.f.m.redisSeconds.WithLabelValues("acquire").Observe(time.Since(start).Seconds())
	if errors.Is(err, redis.Nil) {
		err = errors.New("acquire script returned nothing")
	}
	return n == 1, s.f.overBudget(ctx, octx, "acquire", err), err
}

// hold records a lease Redis granted.
func (s *Semaphore) hold(key, member string) *Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holdLocked(s.keyLocked(key), key, member)
}

// holdLocked records member as a lease of key (whose entry is k) held here.
func (s *Semaphore) holdLocked(k *semKey, key, member string) *Lease {
	k.held[member] = struct{}{}
	s.f.m.leases.WithLabelValues(s.name).Inc()
	return &Lease{s: s, key: key, member: member}
}

func (s *Semaphore) keyLocked(key string) *semKey {
	k := s.keys[key]
	if k == nil {
		k = &semKey{held: map[string]struct{}{}}
		s.keys[key] = k
	}
	return k
}

// prune forgets released leases that no longer count.
func (k *semKey) prune(now time.Time) {
	i := 0
	for i < len(k.lingering) && !k.lingering[i].After(now) {
		i++
	}
	k.lingering = k.lingering[i:]
}

func (s *Semaphore) release(key, member string) {
	s.mu.Lock()
	if k := s.keys[key]; k != nil {
		delete(k.held, member)
		now := time.Now()
		k.prune(now)
		if s.linger > 0 {
			k.lingering = append(k.lingering, now.Add(s.linger))
		}
		if len(k.held) == 0 && len(k.lingering) == 0 {
			delete(s.keys, key)
		}
	}
	s.mu.Unlock()
	s.f.m.leases.WithLabelValues(s.name).Dec()
	if mode, _ := s.f.state(); s.linger == 0 && mode == ModeShared {
		ctx, cancel := s.f.opCtx(s.f.ctx)
		defer cancel()
		start := time.Now()
		err := releaseScript.Run(ctx, s.f.rdb, []string{s.rkey(key)}, member, 0).Err()
		s.f.m.redisSeconds.WithLabelValues("release").Observe(time.Since(start).Seconds())
		if err == nil {
			return
		}
		if s.f.ctx.Err() == nil {
			s.f.fail("release", err)
		}
	}
	s.f.queueRelease(s.rkey(key), member, s.linger)
}

// queueRelease has the heartbeat tell Redis of a released lease, which
// still counts for linger.
func (f *Fleet) queueRelease(rkey, member string, linger time.Duration) {
	if f.rdb == nil {
		return
	}
	f.mu.Lock()
	if len(f.released) >= maxReleased {
		f.released = f.released[1:] // it expires in Redis by itself
	}
	f.released = append(f.released, releasedLease{key: rkey, member: member, linger: linger})
	if !f.releaseArmed {
		f.releaseArmed = true
		f.releaseTimer.Reset(releaseDelay)
	}
	f.mu.Unlock()
}

// releaseDelay gathers the releases of a busy replica into one heartbeat:
// a lease released reaches Redis at most this much later.
const releaseDelay = 20 * time.Millisecond

// renewal is one semaphore key's renewal in a heartbeat: the members it
// renews, as they were held when the heartbeat copied them.
type renewal struct {
	s       *Semaphore
	key     string
	members []string
	op      *op
}

// renewals are the renewals of every lease held, to send.
func (s *Semaphore) renewals(ttl int64) []renewal {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []renewal
	now := time.Now()
	for key, k := range s.keys {
		k.prune(now)
		if len(k.held) == 0 {
			if len(k.lingering) == 0 {
				delete(s.keys, key)
			}
			continue
		}
		members := make([]string, 0, len(k.held))
		args := make([]any, 0, len(k.held)+1)
		args = append(args, ttl)
		for m := range k.held {
			members = append(members, m)
			args = append(args, m)
		}
		out = append(out, renewal{s: s, key: key, members: members, op: &op{script: renewScript, keys: []string{s.rkey(key)}, args: args}})
	}
	return out
}

// releasedSince returns the leases of r released after the heartbeat
// copied them: Redis may have renewed them after their release, and so
// hold them again until they expire.
func (r renewal) releasedSince() []releasedLease {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	k := r.s.keys[r.key]
	var out []releasedLease
	for _, m := range r.members {
		if k != nil {
			if _, held := k.held[m]; held {
				continue
			}
		}
		out = append(out, releasedLease{key: r.s.rkey(r.key), member: m, linger: r.s.linger})
	}
	return out
}
