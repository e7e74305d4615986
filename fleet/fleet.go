package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
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
	// deployments can share one Redis. Default "speech-gateway:", also in
	// place of one with braces, which would change the keys' Cluster hash
	// tags.
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
	// StartBudget bounds the Redis round trip of each check made when a
	// stream starts (Semaphore.Acquire, Budget.Acquire, Counter.Value):
	// past it the local share decides that check, as in fallback, without
	// putting the Fleet in fallback, and the check is counted
	// (speech_gateway_fleet_redis_slow_total). A slow Redis then costs a
	// stream start at most this much per check. Default 50 ms; at most
	// OpTimeout.
	StartBudget time.Duration
	// FallbackReplicas is what each limit is divided by in fallback until
	// Redis has answered once and said how many replicas there are: a
	// replica that starts while Redis is down. Default 1.
	FallbackReplicas int
	// PollInterval is how often a waiting Acquire asks again, with jitter.
	// Default 20 ms.
	PollInterval time.Duration
	// Logger receives mode changes; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// DefaultOptions are the options a Fleet uses for a zero Options: every
// knob at its documented default.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Prefix == "" || strings.ContainsAny(o.Prefix, "{}") {
		// No braces: the keys' Cluster hash tags are the Fleet's own.
		o.Prefix = "speech-gateway:"
	}
	o.LeaseTTL = positiveOr(o.LeaseTTL, 10*time.Second)
	if o.Linger == 0 {
		o.Linger = 200 * time.Millisecond
	}
	o.Linger = max(o.Linger, 0) // negative: none
	o.OpTimeout = positiveOr(o.OpTimeout, 250*time.Millisecond)
	o.StartBudget = min(positiveOr(o.StartBudget, 50*time.Millisecond), o.OpTimeout)
	o.FallbackReplicas = max(o.FallbackReplicas, 1)
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
	// prepared is set once Redis's version is checked and the scripts
	// loaded (prepare); the heartbeat does it first until then.
	prepared atomic.Bool

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

// Connect returns a Fleet that shares its limits through the Redis that r
// describes. When Redis does not answer now, the Fleet starts in fallback
// (each limit at 1/Options.FallbackReplicas) and shares its limits once
// Redis answers. It fails when r is not valid, or when Redis answers but
// refuses it: a wrong password or a missing permission, or a version
// older than MinVersion. Close it.
func Connect(ctx context.Context, r Redis, opts Options) (*Fleet, error) {
	opts = opts.withDefaults()
	rdb, addr, err := r.client(opts.OpTimeout)
	if err != nil {
		return nil, err
	}
	f := newFleet(rdb, ModeShared, opts)
	f.replicas = opts.FallbackReplicas
	if err := f.heartbeat(ctx); err != nil {
		if refusal(err) || ctx.Err() != nil {
			f.Close()
			return nil, fmt.Errorf("fleet: redis %s: %w", addr, err)
		}
		// Started in fallback, logged by fail: the heartbeat probes.
		f.fail("connect", err)
		f.start()
		return f, nil
	}
	f.m.setMode(ModeShared)
	f.log.Info("fleet limits shared through redis", zap.String("redis", addr),
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
	return f.boundCtx(ctx, f.opts.OpTimeout)
}

// boundCtx bounds one Redis command by d and by Close.
func (f *Fleet) boundCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, d)
	stop := context.AfterFunc(f.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// overBudget reports whether a check at stream start that failed with err
// under octx (bounded by StartBudget) only ran out of its budget, and
// counts it: Redis is slow, not gone, so the local share decides this
// check and the Fleet stays shared.
func (f *Fleet) overBudget(ctx, octx context.Context, op string, err error) bool {
	if err == nil || ctx.Err() != nil || f.ctx.Err() != nil {
		return false
	}
	// The socket's deadline, which is octx's, may pass just before octx
	// reports it.
	var nerr net.Error
	if !errors.Is(octx.Err(), context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &nerr) && nerr.Timeout()) {
		return false
	}
	f.m.slow.WithLabelValues(op).Inc()
	return true
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
