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
// than that. Get one with Fleet.Counter.
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
	// yet in Redis, flushing the part being sent.
	local, pending, flushing int64
	// shared is the window's total in Redis when last seen, ours
	// included; seen is when.
	shared int64
	seen   time.Time
}

// maxCounterEntries bounds the keys a Counter tracks per window pair;
// adds for new keys beyond it count locally only.
const maxCounterEntries = 1 << 16

// Counter returns the counter called name, counting in windows of window,
// creating it on first use. The name appears in Redis keys.
func (f *Fleet) Counter(name string, window time.Duration) *Counter {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.counters[name]; c != nil {
		return c
	}
	c := &Counter{f: f, name: name, window: window, entries: map[centryKey]*centry{}}
	f.counters[name] = c
	return c
}

// window returns the index of the current window and the time left in it.
func (c *Counter) current(now time.Time) (int64, time.Duration) {
	w := now.UnixNano() / int64(c.window)
	end := time.Unix(0, (w+1)*int64(c.window))
	return w, end.Sub(now)
}

func (c *Counter) rkey(key string, win int64) string {
	return c.f.opts.Prefix + "count:" + c.name + ":" + key + ":" + strconv.FormatInt(win, 10)
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
	e := c.entries[centryKey{key, w}]
	if e == nil {
		if len(c.entries) >= maxCounterEntries {
			return
		}
		e = &centry{}
		c.entries[centryKey{key, w}] = e
	}
	e.local += n
	if c.f.rdb != nil {
		e.pending += n
	}
}

// Value returns the count of key in the current window across the fleet,
// and the time until the window ends. In fallback it is this replica's
// count times the replicas last seen, so that comparing it with a limit
// applies this replica's share. It blocks for at most one Redis round
// trip (OpTimeout), when it has not seen the key's total lately.
func (c *Counter) Value(ctx context.Context, key string) (int64, time.Duration) {
	now := time.Now()
	w, left := c.current(now)
	mode, replicas := c.f.state()
	c.mu.Lock()
	e := c.entries[centryKey{key, w}]
	var local, pending, shared int64
	fresh := false
	if e != nil {
		local, pending, shared = e.local, e.pending+e.flushing, e.shared
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
	octx, cancel := c.f.opCtx(ctx)
	defer cancel()
	start := time.Now()
	total, err := c.f.rdb.Get(octx, c.rkey(key, w)).Int64()
	c.f.m.redisSeconds.WithLabelValues("read").Observe(time.Since(start).Seconds())
	if errors.Is(err, redis.Nil) {
		total, err = 0, nil
	}
	if err != nil {
		if ctx.Err() == nil && c.f.ctx.Err() == nil {
			c.f.fail("read", err)
		}
		return local * int64(max(replicas, 1)), left
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e = c.entries[centryKey{key, w}]
	if e == nil {
		if len(c.entries) >= maxCounterEntries {
			return total, left
		}
		e = &centry{}
		c.entries[centryKey{key, w}] = e
	}
	// What Redis has includes what was flushed, not what is pending or
	// being flushed.
	e.shared, e.seen = total, time.Now()
	return total + e.pending + e.flushing, left
}

// flush is one key's pending count on its way to Redis in a heartbeat.
type flush struct {
	c   *Counter
	k   centryKey
	n   int64
	cmd *redis.IntCmd
}

// flushes queues on pipe the pending counts of the current and the
// previous window.
func (c *Counter) flushes(ctx context.Context, pipe redis.Pipeliner) []flush {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []flush
	ttl := 2 * c.window
	for k, e := range c.entries {
		if e.pending == 0 {
			continue
		}
		n := e.pending
		e.pending, e.flushing = 0, e.flushing+n
		rk := c.rkey(k.key, k.win)
		cmd := pipe.IncrBy(ctx, rk, n)
		pipe.PExpire(ctx, rk, ttl)
		out = append(out, flush{c: c, k: k, n: n, cmd: cmd})
	}
	return out
}

// flushed records a flush Redis took.
func (c *Counter) flushed(fl flush) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[fl.k]; e != nil {
		e.flushing -= fl.n
		e.shared, e.seen = fl.cmd.Val(), time.Now()
	}
}

// unflush puts back a flush that failed, for the next heartbeat.
func (c *Counter) unflush(fl flush) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[fl.k]; e != nil {
		e.flushing -= fl.n
		e.pending += fl.n
	}
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
		if k.win < w-1 || (k.win < w && e.pending == 0 && e.flushing == 0) {
			delete(c.entries, k)
		}
	}
}
