package fleet

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// op is one script call of a heartbeat, made ready under the locks of the
// semaphores and counters and sent after they are released: no lock is
// held across a round trip.
type op struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd // set when sent
}

// maxBatch bounds the script calls of one heartbeat round trip. A replica
// with many callers (the counters track up to 65536 keys per window)
// sends them in several round trips, each bounded by OpTimeout, rather
// than one that Redis cannot answer in time.
const maxBatch = 512

// execOps sends ops in order, maxBatch at a time, each batch one pipeline
// of EVALSHA bounded by OpTimeout. It returns how many ops were applied
// (whole batches, in order) and the first error. Scripts Redis lost (a
// restart, a failover) are loaded again and the batch sent once more:
// every script is safe to apply twice.
func (f *Fleet) execOps(ctx context.Context, ops []*op) (int, error) {
	done := 0
	for done < len(ops) {
		batch := ops[done:min(done+maxBatch, len(ops))]
		if err := f.execBatch(ctx, batch); err != nil {
			return done, err
		}
		done += len(batch)
	}
	return done, nil
}

func (f *Fleet) execBatch(ctx context.Context, batch []*op) error {
	for attempt := 0; ; attempt++ {
		bctx, cancel := f.opCtx(ctx)
		pipe := f.rdb.Pipeline()
		for _, o := range batch {
			o.cmd = o.script.EvalSha(bctx, pipe, o.keys, o.args...)
		}
		_, err := pipe.Exec(bctx)
		if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = f.loadScripts(bctx)
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		cancel()
		return err
	}
}

// requeue puts back releases a failed heartbeat did not deliver, ahead of
// newer ones, within maxReleased.
func (f *Fleet) requeue(released []releasedLease) {
	if len(released) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	all := append(released, f.released...)
	f.released = all[max(0, len(all)-maxReleased):]
}

// releaseOps are the script calls that release each lease in Redis.
func releaseOps(leases []releasedLease) []*op {
	ops := make([]*op, len(leases))
	for i, r := range leases {
		ops[i] = &op{script: releaseScript, keys: []string{r.key}, args: []any{r.member, r.linger.Milliseconds()}}
	}
	return ops
}

// releaseAgain sends again, now, the releases of leases released while a
// heartbeat renewed them. Without it, a renewal that reached Redis after
// a release would hold the lease for another LeaseTTL, and refuse a
// caller's next stream meanwhile. A release already applied changes
// nothing when sent twice.
func (f *Fleet) releaseAgain(ctx context.Context, leases []releasedLease) {
	if len(leases) == 0 {
		return
	}
	if done, err := f.execOps(ctx, releaseOps(leases)); err != nil {
		f.requeue(leases[done:])
	}
}

// loop is the heartbeat: every tick, and at once when a lease is
// released, it brings Redis up to date (or probes it, in fallback).
func (f *Fleet) loop() {
	defer f.wg.Done()
	t := time.NewTicker(f.tick)
	defer t.Stop()
	var notBefore time.Time // after failures, when Redis may be tried again
	fails := 0
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
		if time.Now().Before(notBefore) {
			continue // Redis is failing: releases wait for the next probe
		}
		if err := f.heartbeat(f.ctx); err != nil && f.ctx.Err() == nil {
			f.fail("heartbeat", err)
			// Back off the probes of a Redis that does not answer: the
			// tick doubles per failure, up to 8 ticks, so that neither
			// releases nor ticks make it a tight loop.
			fails = min(fails+1, 3)
			notBefore = time.Now().Add(f.tick<<fails - f.tick/2)
			continue
		}
		fails, notBefore = 0, time.Time{}
	}
}

// heartbeat registers this replica and counts the live ones; applies
// queued releases; renews every lease held (putting back any Redis lost);
// adds the counts made since the last one, each batch once however often
// it is sent (see batch). It sends all of it in that order, in round
// trips of at most maxBatch calls. Releases made while it ran are sent
// again after it (releaseAgain). Before its first success it checks the
// version of Redis and loads the scripts (prepare).
func (f *Fleet) heartbeat(ctx context.Context) error {
	if !f.prepared.Load() {
		if err := f.prepare(ctx); err != nil {
			if refusal(err) {
				f.log.Error("redis refuses the fleet: limits stay local until it is fixed", zap.Error(err))
			}
			return err
		}
		f.prepared.Store(true)
	}
	f.mu.Lock()
	released := f.released
	f.released, f.releaseArmed = nil, false
	sems := make([]*Semaphore, 0, len(f.sems))
	for _, s := range f.sems {
		sems = append(sems, s)
	}
	counters := make([]*Counter, 0, len(f.counters))
	for _, c := range f.counters {
		counters = append(counters, c)
	}
	mode := f.mode
	f.mu.Unlock()

	ttl := f.opts.LeaseTTL.Milliseconds()
	reg := &op{script: registerScript, keys: []string{f.opts.Prefix + "replicas"}, args: []any{f.id, ttl}}
	ops := append([]*op{reg}, releaseOps(released)...)
	var renewals []renewal
	for _, s := range sems {
		renewals = append(renewals, s.renewals(ttl)...)
	}
	for _, r := range renewals {
		ops = append(ops, r.op)
	}
	firstFlush := len(ops)
	var flushes []flush
	for _, c := range counters {
		flushes = append(flushes, c.flushes()...)
	}
	for _, fl := range flushes {
		ops = append(ops, fl.op)
	}
	if fn := f.beforeExec.Load(); fn != nil {
		(*fn)()
	}
	start := time.Now()
	done, err := f.execOps(ctx, ops)
	f.m.redisSeconds.WithLabelValues("heartbeat").Observe(time.Since(start).Seconds())
	if err != nil {
		// What was applied stays applied; the rest goes again next time.
		for i, fl := range flushes {
			if firstFlush+i < done {
				fl.c.flushed(fl)
			} else {
				fl.c.unflush(fl)
			}
		}
		f.requeue(released[max(0, min(done-1, len(released))):])
		return err
	}
	restored := 0
	var again []releasedLease
	for _, r := range renewals {
		n, _ := r.op.cmd.Int()
		restored += n
		again = append(again, r.releasedSince()...)
	}
	f.releaseAgain(ctx, again)
	if restored > 0 && mode == ModeFallback {
		f.log.Info("leases taken during the fallback are shared again", zap.Int("leases", restored))
	}
	for _, fl := range flushes {
		fl.c.flushed(fl)
	}
	for _, c := range counters {
		c.prune()
	}
	replicas, _ := reg.cmd.Int()
	f.recovered(replicas)
	return nil
}
