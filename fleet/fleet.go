package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// ErrFull is returned by Semaphore.Acquire and Budget.Acquire when no
// lease could be had within the wait.
var ErrFull = errors.New("fleet: limit reached")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("fleet: closed")

// Mode is how a Fleet enforces its limits.
type Mode string

// The modes. Local: no Redis was configured, every limit holds per
// process. Shared: Redis holds the counts. Fallback: Redis is configured
// but unreachable, and each limit holds locally at this replica's share.
const (
	ModeLocal    Mode = "local"
	ModeShared   Mode = "shared"
	ModeFallback Mode = "fallback"
)

// Options configure a Fleet. The zero value of every field is its
// documented default.
type Options struct {
	// Prefix starts every Redis key, so that gateways of different
	// deployments can share one Redis. Default "speech-gateway:".
	Prefix string
	// LeaseTTL is how long a lease outlives the last heartbeat of the
	// replica holding it: a crashed replica's leases are free again within
	// it. The heartbeat runs every LeaseTTL/3 (at most every second).
	// Default 10 s.
	LeaseTTL time.Duration
	// Linger is how long a released lease of a Budget still counts,
	// because SLNG counts a closed connection until it notices the close;
	// Redis hears of the release up to 20 ms late, with those of other
	// sessions. Default 200 ms; negative means none.
	Linger time.Duration
	// OpTimeout bounds every Redis command; one that takes longer puts the
	// Fleet in fallback. Default 250 ms.
	OpTimeout time.Duration
	// PollInterval is how often a waiting Acquire asks again, with jitter.
	// Default 20 ms.
	PollInterval time.Duration
	// Logger receives mode changes; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "speech-gateway:"
	}
	o.LeaseTTL = positiveOr(o.LeaseTTL, 10*time.Second)
	if o.Linger == 0 {
		o.Linger = 200 * time.Millisecond
	}
	o.Linger = max(o.Linger, 0) // negative: none
	o.OpTimeout = positiveOr(o.OpTimeout, 250*time.Millisecond)
	o.PollInterval = positiveOr(o.PollInterval, 20*time.Millisecond)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// positiveOr is d, or def when d is not positive.
func positiveOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Status is what a Fleet reports about itself, for /readyz and logs.
type Status struct {
	Mode Mode
	// Replicas is the number of replicas last seen alive in Redis (1 in
	// local mode); fallback shares divide limits by it.
	Replicas int
	// Since is when the Fleet entered Mode.
	Since time.Time
	// Err is the Redis failure that caused the fallback, "" otherwise.
	Err string
}

// String is the one-line form /readyz shows.
func (s Status) String() string {
	switch s.Mode {
	case ModeShared:
		return fmt.Sprintf("fleet: shared limits in redis, %d replicas", s.Replicas)
	case ModeFallback:
		return fmt.Sprintf("fleet: redis unreachable since %s (%s); local share of each limit, 1/%d",
			s.Since.UTC().Format(time.RFC3339), s.Err, s.Replicas)
	}
	return "fleet: local limits (no redis)"
}

// Fleet owns the Redis connection, this replica's identity and the
// heartbeat that renews its leases, flushes its counts and probes Redis
// while it is unreachable. Close stops it.
type Fleet struct {
	rdb  redis.UniversalClient // nil: local
	opts Options
	id   string
	log  *zap.Logger
	m    *Metrics
	tick time.Duration

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
	seq    atomic.Uint64
	// beforeExec, when set, runs in heartbeat between the copy of what
	// to send and the sending: tests place a release there.
	beforeExec atomic.Pointer[func()]

	mu       sync.Mutex
	mode     Mode
	since    time.Time
	lastErr  error
	replicas int
	sems     map[string]*Semaphore
	counters map[string]*Counter
	// released are leases given back while shared, whose Redis update the
	// heartbeat makes (see Semaphore.release), releaseDelay after the
	// first: releaseTimer wakes it, armed while releaseArmed.
	released     []releasedLease
	releaseTimer *time.Timer
	releaseArmed bool
}

type releasedLease struct {
	key, member string
	linger      time.Duration
}

// maxReleased bounds the queue of releases waiting for the heartbeat; past
// it the oldest are dropped, and expire in Redis by themselves.
const maxReleased = 1 << 16

// New returns a local Fleet: every limit holds per process. Close it.
func New(opts Options) *Fleet {
	f := newFleet(nil, ModeLocal, opts)
	f.m.setMode(ModeLocal)
	return f
}

// Connect returns a Fleet that shares its limits through the Redis at url
// (redis://[user:password@]host:port/db, or rediss:// for TLS). It fails
// when Redis does not answer now: a replica that has never seen the others
// cannot know its share of a limit. Close it.
func Connect(ctx context.Context, url string, opts Options) (*Fleet, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		// Not wrapped: the parser's error quotes the URL, password and all.
		return nil, errors.New("fleet: the redis url is not redis://[user:password@]host:port/db or rediss://…")
	}
	opts = opts.withDefaults()
	// Every command is bounded by OpTimeout and never retried by the
	// client: a slow Redis means fallback, not a stuck stream.
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = opts.OpTimeout, opts.OpTimeout, opts.OpTimeout
	ro.ContextTimeoutEnabled = true
	ro.MaxRetries = -1
	ro.PoolTimeout = opts.OpTimeout
	ro.DisableIdentity = true
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	rdb := redis.NewClient(ro)
	f := newFleet(rdb, ModeShared, opts)
	if err := f.heartbeat(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("fleet: redis at %s does not answer: %w", ro.Addr, err)
	}
	f.m.setMode(ModeShared)
	f.log.Info("fleet limits shared through redis", zap.String("redis", ro.Addr),
		zap.String("replica", f.id), zap.Int("replicas", f.Status().Replicas))
	f.start()
	return f, nil
}

func newFleet(rdb redis.UniversalClient, mode Mode, opts Options) *Fleet {
	opts = opts.withDefaults()
	var b [6]byte
	_, _ = rand.Read(b[:])
	f := &Fleet{
		rdb:      rdb,
		opts:     opts,
		id:       hex.EncodeToString(b[:]),
		log:      opts.Logger.Named("fleet"),
		m:        opts.Metrics,
		tick:     min(opts.LeaseTTL/3, time.Second),
		kick:     make(chan struct{}, 1),
		mode:     mode,
		since:    time.Now(),
		replicas: 1,
		sems:     map[string]*Semaphore{},
		counters: map[string]*Counter{},
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.releaseTimer = time.AfterFunc(time.Hour, f.wake)
	f.releaseTimer.Stop()
	return f
}

// named returns the semaphore or counter called name in m (one of f's
// maps), made by create on first use: the heartbeat renews and flushes
// what the maps hold.
func named[T any](f *Fleet, m map[string]*T, name string, create func() *T) *T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v := m[name]; v != nil {
		return v
	}
	v := create()
	m[name] = v
	return v
}

// start starts the heartbeat of a shared Fleet.
func (f *Fleet) start() {
	f.wg.Add(1)
	go f.loop()
}

// Close sends the releases already made, stops the heartbeat and closes
// the Redis connection. Leases still held are not released in Redis: they
// expire after LeaseTTL, as a crashed replica's would. It is safe to call
// more than once.
func (f *Fleet) Close() {
	if mode, _ := f.state(); f.rdb != nil && mode == ModeShared {
		// Hand back what was released (a closing pool's budget sessions)
		// now, bounded by OpTimeout, rather than leave it held in Redis
		// for a lease TTL during a rolling deploy.
		_ = f.heartbeat(f.ctx)
	}
	f.releaseTimer.Stop()
	f.cancel()
	f.wg.Wait()
	if f.rdb != nil {
		_ = f.rdb.Close()
	}
}

// ID is this replica's id in Redis: random per process.
func (f *Fleet) ID() string { return f.id }

// Status reports the mode and what it is based on.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Status{Mode: f.mode, Replicas: f.replicas, Since: f.since}
	if f.mode == ModeFallback && f.lastErr != nil {
		s.Err = f.lastErr.Error()
	}
	return s
}

// state returns the mode and the divisor of limits in fallback.
func (f *Fleet) state() (Mode, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode, f.replicas
}

// share is this replica's part of limit in mode.
func share(limit int64, mode Mode, replicas int) int64 {
	if mode != ModeFallback || replicas <= 1 {
		return limit
	}
	return max(1, limit/int64(replicas))
}

// fail puts a shared Fleet in fallback after a Redis failure.
func (f *Fleet) fail(op string, err error) {
	f.m.redisErrors.WithLabelValues(op).Inc()
	f.mu.Lock()
	if f.mode != ModeShared {
		f.lastErr = err
		f.mu.Unlock()
		return
	}
	f.mode, f.since, f.lastErr = ModeFallback, time.Now(), err
	replicas := f.replicas
	f.mu.Unlock()
	f.m.setMode(ModeFallback)
	f.m.fallbacks.Inc()
	f.log.Warn("redis unreachable: limits hold locally at this replica's share until it answers",
		zap.String("op", op), zap.Error(err), zap.Int("replicas", replicas))
}

// recovered puts a Fleet in fallback back to shared limits.
func (f *Fleet) recovered(replicas int) {
	f.mu.Lock()
	was := f.mode
	f.replicas = max(replicas, 1)
	if was == ModeFallback {
		f.mode, f.since, f.lastErr = ModeShared, time.Now(), nil
	}
	f.mu.Unlock()
	f.m.replicas.Set(float64(max(replicas, 1)))
	if was == ModeFallback {
		f.m.setMode(ModeShared)
		f.log.Info("redis answers again: limits are shared again", zap.Int("replicas", replicas))
	}
}

// opCtx bounds one Redis command by OpTimeout and by Close.
func (f *Fleet) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.OpTimeout)
	stop := context.AfterFunc(f.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (f *Fleet) member() string {
	return f.id + ":" + strconv.FormatUint(f.seq.Add(1), 36)
}

func (f *Fleet) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
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

// queueReleases queues on pipe the release of each lease in Redis.
func queueReleases(ctx context.Context, pipe redis.Pipeliner, leases []releasedLease) {
	for _, r := range leases {
		releaseScript.Eval(ctx, pipe, []string{r.key}, r.member, r.linger.Milliseconds())
	}
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
	pipe := f.rdb.Pipeline()
	queueReleases(ctx, pipe, leases)
	if _, err := pipe.Exec(ctx); err != nil {
		f.requeue(leases)
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

// heartbeat, in one round trip: registers this replica and counts the
// live ones; applies queued releases; renews every lease held (putting
// back any Redis lost); adds the counts made since the last one, each
// batch once however often it is sent (see batch). Releases made while it
// ran are sent again after it (releaseAgain).
func (f *Fleet) heartbeat(ctx context.Context) error {
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

	ctx, cancel := f.opCtx(ctx)
	defer cancel()
	start := time.Now()
	pipe := f.rdb.Pipeline()
	ttl := f.opts.LeaseTTL.Milliseconds()
	reg := registerScript.Eval(ctx, pipe, []string{f.opts.Prefix + "replicas"}, f.id, ttl)
	queueReleases(ctx, pipe, released)
	var renewals []renewal
	for _, s := range sems {
		renewals = append(renewals, s.renewals(ctx, pipe, ttl)...)
	}
	var flushes []flush
	for _, c := range counters {
		flushes = append(flushes, c.flushes(ctx, pipe)...)
	}
	if fn := f.beforeExec.Load(); fn != nil {
		(*fn)()
	}
	_, err := pipe.Exec(ctx)
	f.m.redisSeconds.WithLabelValues("heartbeat").Observe(time.Since(start).Seconds())
	if err != nil {
		for _, fl := range flushes {
			fl.c.unflush(fl)
		}
		f.requeue(released)
		return err
	}
	restored := 0
	var again []releasedLease
	for _, r := range renewals {
		n, _ := r.cmd.Int()
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
	replicas, _ := reg.Int()
	f.recovered(replicas)
	return nil
}
