package fleet

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Counter counts per key in fixed windows (e.g. characters per caller per
// minute) across the fleet. Adds are local and reach Redis with the next
// heartbeat, so a count made on another replica shows here within about a
// second; Value asks Redis itself when what it knows of a key is older
// than that. It tracks up to 65536 keys per window pair; keys beyond
// count, and are limited, together, as one. Get one with Fleet.Counter.
type Counter struct {
	f      *Fleet
	name   string
	window time.Duration

	mu      sync.Mutex
	entries map[centryKey]*centry
	pruned  int64 // the window of the last pruneLocked
}

type centryKey struct {
	key string
	win int64 // window index: Unix time / window
}

type centry struct {
	// local is everything added here in the window; pending the part not
	// yet on its way to Redis.
	local, pending int64
	// batch is the part on its way to Redis, until Redis confirms it;
	// nil when none is.
	batch *batch
	// shared is the window's total in Redis when last seen, ours
	// included; seen is when.
	shared int64
	seen   time.Time
}

// batch is one flush of a key's count. A heartbeat that fails sends the
// same batch again, with the same seq, until Redis confirms it: Redis may
// have applied it before the failure (a reply lost, a timeout), and
// flushScript applies each seq of a replica once.
type batch struct {
	seq, n   int64
	inflight bool // in a heartbeat now
}

// unconfirmed is what of e is not known to be in Redis.
func (e *centry) unconfirmed() int64 {
	if e.batch == nil {
		return e.pending
	}
	return e.pending + e.batch.n
}

// maxCounterEntries bounds the keys a Counter tracks per window pair;
// adds for new keys beyond it count together under overflowKey.
const maxCounterEntries = 1 << 16

// overflowKey counts, and limits together, the keys that found a
// Counter's table full: made-up keys (random caller ids) must not escape
// a limit by outnumbering the table. It holds a space, which no caller id
// does.
const overflowKey = "(overflow) "

// Counter returns the counter called name, counting in windows of window,
// creating it on first use. The name appears in Redis keys.
func (f *Fleet) Counter(name string, window time.Duration) *Counter {
	return named(f, f.counters, name, func() *Counter {
		return &Counter{f: f, name: name, window: window, entries: map[centryKey]*centry{}}
	})
}

// window returns the index of the current window and the time left in it.
func (c *Counter) current(now time.Time) (int64, time.Duration) {
	w := now.UnixNano() / int64(c.window)
	end := time.Unix(0, (w+1)*int64(c.window))
	return w, end.Sub(now)
}

// rkey is the Redis key of key's count in window win. Its part in braces
// is a Cluster hash tag: flushScript's second key, this one followed by
// ":flushed", has the same tag (the first '{' is the prefix's, and the
// first '}' after it is within this key), so both are in one slot.
func (c *Counter) rkey(key string, win int64) string {
	return c.f.opts.Prefix + "count:{" + c.name + ":" + key + ":" + strconv.FormatInt(win, 10) + "}"
}

// Add counts n for key in the current window. It never blocks.
func (c *Counter) Add(key string, n int64) {
	if n == 0 {
		return
	}
	w, _ := c.current(time.Now())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(w)
	e := c.entryLocked(c.slotLocked(key, w))
	e.local += n
	if c.f.rdb != nil {
		e.pending += n
	}
}

// slotLocked is where key's count of window w is kept: under key, or,
// when the table is full and key has no entry, under overflowKey.
func (c *Counter) slotLocked(key string, w int64) centryKey {
	k := centryKey{key, w}
	if _, ok := c.entries[k]; ok || len(c.entries) < maxCounterEntries {
		return k
	}
	return centryKey{overflowKey, w}
}

// entryLocked is the entry of k, made on first use.
func (c *Counter) entryLocked(k centryKey) *centry {
	e := c.entries[k]
	if e == nil {
		e = &centry{}
		c.entries[k] = e
	}
	return e
}

// Value returns the count of key in the current window across the fleet,
// and the time until the window ends. In fallback it is this replica's
// count times the replicas last seen, so that comparing it with a limit
// applies this replica's share. It blocks for at most one Redis round
// trip (at most Options.StartBudget), when it has not seen the key's total
// lately.
func (c *Counter) Value(ctx context.Context, key string) (int64, time.Duration) {
	now := time.Now()
	w, left := c.current(now)
	mode, replicas := c.f.state()
	c.mu.Lock()
	k := c.slotLocked(key, w)
	e := c.entries[k]
	var local, pending, shared int64
	fresh := false
	if e != nil {
		local, pending, shared = e.local, e.unconfirmed(), e.shared
		fresh = now.Sub(e.seen) < c.f.tick
	}
	c.mu.Unlock()
	switch mode {
	case ModeLocal:
		return local, left
	case ModeFallback:
		return local * int64(max(replicas, 1)), left
	}
	if fresh {
		return shared + pending, left
	}
	octx, cancel := c.f.boundCtx(ctx, c.f.opts.StartBudget)
	defer cancel()
	start := time.Now()
	total, err := c.f.rdb.Get(octx, c.rkey(k.key, w)).Int64()
	c.f.m.redisSeconds.WithLabelValues("read").Observe(time.Since(start).Seconds())
	if errors.Is(err, redis.Nil) {
		total, err = 0, nil
	}
	if err != nil {
		// Slow (past StartBudget): this read only takes the local share;
		// gone: the Fleet falls back.
		if !c.f.overBudget(ctx, octx, "read", err) && ctx.Err() == nil && c.f.ctx.Err() == nil {
			c.f.fail("read", err)
		}
		return local * int64(max(replicas, 1)), left
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e = c.entryLocked(k)
	// What Redis has includes what was flushed, not what is pending or
	// being flushed (perhaps it does, if a reply was lost: then the
	// value is high until the batch is confirmed, which is the safe side).
	e.shared, e.seen = total, time.Now()
	return total + e.unconfirmed(), left
}

// flush is one key's batch on its way to Redis in a heartbeat.
type flush struct {
	c  *Counter
	k  centryKey
	b  *batch
	op *op
}

// flushes are the batches to send of every key that has one not yet
// confirmed, or else a pending count, for the current and the previous
// window.
func (c *Counter) flushes() []flush {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []flush
	ttl := (2 * c.window).Milliseconds()
	for k, e := range c.entries {
		if e.batch == nil && e.pending != 0 {
			e.batch = &batch{seq: int64(c.f.seq.Add(1)), n: e.pending}
			e.pending = 0
		}
		if e.batch == nil || e.batch.inflight {
			continue
		}
		e.batch.inflight = true
		rk := c.rkey(k.key, k.win)
		out = append(out, flush{c: c, k: k, b: e.batch, op: &op{script: flushScript,
			keys: []string{rk, rk + ":flushed"}, args: []any{c.f.id, e.batch.seq, e.batch.n, ttl}}})
	}
	return out
}

// flushed records a batch Redis took.
func (c *Counter) flushed(fl flush) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[fl.k]; e != nil && e.batch == fl.b {
		e.batch = nil
		total, _ := fl.op.cmd.Int64()
		e.shared, e.seen = total, time.Now()
	}
}

// unflush keeps a batch that failed for the next heartbeat, which sends
// it as it is.
func (c *Counter) unflush(fl flush) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fl.b.inflight = false
}

// prune forgets the windows that have ended.
func (c *Counter) prune() {
	w, _ := c.current(time.Now())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(w)
}

// pruneLocked, once per window w, forgets the windows before it whose
// counts Redis has, and all older ones: their Redis keys expire, and no
// limit looks at them any more.
func (c *Counter) pruneLocked(w int64) {
	if w <= c.pruned {
		return
	}
	c.pruned = w
	for k, e := range c.entries {
		if k.win < w-1 || (k.win < w && e.unconfirmed() == 0) {
			delete(c.entries, k)
		}
	}
}
