// Package slngpool hands out SLNG sessions: warm standby sessions kept ready
// per configuration, a cap on the number of upstream sessions, dial retries
// with backoff and jitter, and a circuit breaker per model and region.
//
// A warm session is one that has connected, sent `init` and received
// `ready`, which costs a TLS handshake and several round trips that a
// caller would otherwise wait for. Sessions are keyed by kind, model,
// region, credential and init config, so a session never serves a
// configuration or a credential other than the one it was opened with.
//
// Every dial has a purpose: a caller waiting for its first session, a
// rollover of a running stream, a standby for a configuration used
// recently, or a prewarmed one. Callers' dials follow the retry policy of
// Options and nothing else, apart from a generous process-wide dial rate.
// The pool's own dials are budgeted: a token bucket for the process, a
// backoff per configuration that stops after a few failures until a caller
// uses the configuration again, and a pause per SLNG key whenever SLNG
// rate-limits or refuses that key. The pool also learns, per
// configuration, how long SLNG lets a standby sit idle and how often
// callers come, and keeps no standby where one would die unused.
//
// An optional Budget bounds sessions per key beyond the pool, e.g. across
// the gateway's replicas: every dial and every standby kept takes one of
// its sessions, and standbys leave callers room (budget.go).
package slngpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// ErrExhausted is returned when no upstream session could be had within
// AcquireTimeout because MaxSessions are in use.
var ErrExhausted = errors.New("slng session pool exhausted")

// ErrDialRate is returned when a caller's dial would wait for the DialRate
// bucket longer than AcquireTimeout or its deadline allows. It wraps
// ErrExhausted: to the caller it is the same shortage.
var ErrDialRate = fmt.Errorf("%w: dial rate limit reached", ErrExhausted)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("slng session pool closed")

// Options configure a Pool. The zero value of every field is its documented
// default.
type Options struct {
	// DisableWarm turns off standby sessions and reuse: every acquire
	// dials and every release closes. Caps, retries and breakers remain.
	DisableWarm bool
	// MaxSessions caps upstream sessions, in use, idle and being dialled,
	// since SLNG limits concurrent connections per key. Default 256.
	MaxSessions int
	// MaxIdle caps standby sessions across all configurations (default 32)
	// and MaxIdlePerKey per configuration (default 2).
	MaxIdle, MaxIdlePerKey int
	// MaxIdleAge retires a standby session idle this long. It stays below
	// SLNG's idle timeout (not published; about 30 s is assumed), so that a
	// standby is never one SLNG is about to reap, even for a model that
	// ignores keepalives. Default 25 s. A configuration whose standbys SLNG
	// ends sooner gets a shorter age of its own (see the package doc).
	MaxIdleAge time.Duration
	// MaxSessionAge: a session older than this is not handed out, since
	// SLNG ends connections at a maximum duration (30 minutes on some
	// plans), even mid-reply. Default 20 min.
	MaxSessionAge time.Duration
	// RecentTTL keeps one standby session for each configuration used in
	// the last RecentTTL. Default 2 min; negative disables it (only
	// Prewarm profiles are kept warm).
	RecentTTL time.Duration
	// MaxRecent bounds the configurations remembered. Default 64.
	MaxRecent int
	// Prewarm lists configurations kept warm from the start.
	Prewarm []Profile
	// CheckoutPingTimeout bounds the ping that checks a standby session
	// just before it is handed out. Default 500 ms; negative skips it.
	CheckoutPingTimeout time.Duration
	// AcquireTimeout bounds the wait for capacity when MaxSessions are in
	// use, and for a DialRate token. Default 2 s.
	AcquireTimeout time.Duration
	// DialAttempts bounds dials per acquire for retryable failures
	// (default 3), waiting BackoffBase, doubling up to BackoffMax, with
	// jitter, between them (defaults 100 ms and 2 s). Retries stay within
	// the caller's deadline.
	DialAttempts            int
	BackoffBase, BackoffMax time.Duration
	// DialRate bounds SLNG dials per second, of every purpose, for the
	// whole pool, with a burst of twice as many: the last guard against
	// hammering SLNG, generous enough that callers do not meet it. A
	// caller waits for a token at most AcquireTimeout, within its
	// deadline, and otherwise gets ErrDialRate. Default 100; negative
	// means no limit.
	DialRate float64
	// BackgroundDialRate bounds the dials no caller waits for (standbys and
	// prewarm) per second, with a burst of twice as many. They also take
	// a DialRate token only while that bucket is at least half full, so
	// that callers come first. Default 5; negative means no limit.
	BackgroundDialRate float64
	// StandbyBackoffBase and StandbyBackoffMax space the background dials
	// of a configuration that fails: the wait doubles from the base to the
	// max, with jitter (defaults 1 s and 60 s). The same backoff pauses
	// background dials for an SLNG key that SLNG rate-limits without a
	// Retry-After.
	StandbyBackoffBase, StandbyBackoffMax time.Duration
	// StandbyFailures consecutive failures of a configuration (failed
	// dials, sessions that ended right after ready, standbys that died
	// unused) stop its background dials until a caller uses it again.
	// Default 3.
	StandbyFailures int
	// BreakerFailures consecutive failures that say SLNG is unwell open the
	// breaker of a model and region (default 5); it stays open for
	// BreakerOpenTimeout (default 10 s), then lets one probe through.
	BreakerFailures    int
	BreakerOpenTimeout time.Duration
	// EarlyDeath: a session that ends with an upstream error within this
	// long of ready counts against its breaker even when the error alone
	// would not. Default 5 s.
	EarlyDeath time.Duration
	// MaxBreakers bounds the breakers kept. Default 1024.
	MaxBreakers int
	// Budget, when set, bounds sessions per credential beyond this pool
	// (budget.go): a caller waits for it as for MaxSessions, and standbys
	// take only what callers would not miss.
	Budget Budget
	// Logger receives state changes; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defRate := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxSessions, 256)
	def(&o.MaxIdle, 32)
	def(&o.MaxIdlePerKey, 2)
	def(&o.MaxRecent, 64)
	def(&o.DialAttempts, 3)
	def(&o.StandbyFailures, 3)
	def(&o.BreakerFailures, 5)
	def(&o.MaxBreakers, 1024)
	defDur(&o.MaxIdleAge, 25*time.Second)
	defDur(&o.MaxSessionAge, 20*time.Minute)
	defDur(&o.RecentTTL, 2*time.Minute)
	defDur(&o.CheckoutPingTimeout, 500*time.Millisecond)
	defDur(&o.AcquireTimeout, 2*time.Second)
	defDur(&o.BackoffBase, 100*time.Millisecond)
	defDur(&o.BackoffMax, 2*time.Second)
	defDur(&o.StandbyBackoffBase, time.Second)
	defDur(&o.StandbyBackoffMax, time.Minute)
	o.StandbyBackoffMax = max(o.StandbyBackoffMax, o.StandbyBackoffBase)
	defDur(&o.BreakerOpenTimeout, 10*time.Second)
	defDur(&o.EarlyDeath, 5*time.Second)
	defRate(&o.DialRate, 100)
	defRate(&o.BackgroundDialRate, 5)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// newLimiter is a token bucket of r tokens a second with a burst of 2r
// (at least 1), or nil for no limit (r < 0).
func newLimiter(r float64) *rate.Limiter {
	if r < 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(r), max(1, int(math.Ceil(2*r))))
}

// Profile is a configuration to keep warm. Exactly one of TTS and STT is
// set.
type Profile struct {
	Endpoint slngclient.Endpoint
	TTS      *slngclient.TTSConfig
	STT      *slngclient.STTConfig
	// Count is the number of standby sessions, default 1 (at most
	// MaxIdlePerKey).
	Count int
}

// session is what the pool needs of a TTS or STT session.
type session interface {
	ID() string
	Done() <-chan struct{}
	Err() error
	Ping(ctx context.Context) error
	Stats() slngclient.Stats
	CloseNow()
}

// dialFunc opens one session of a configuration.
type dialFunc func(ctx context.Context) (session, error)

// poolKey identifies a configuration: sessions are interchangeable only
// within one key.
type poolKey struct {
	kind, model, region, worldPart string
	cred                           string // fingerprint of the credentials, never the key
	config                         string // canonical JSON of the init config
	// own is set for the gateway's own key (the endpoint names none), and
	// gen is then the key's generation: KeyChanged starts a new one, so
	// that sessions of the old key never serve again.
	own bool
	gen uint64
}

// idleSession is a standby session and the goroutine watching it: SLNG
// must send nothing to an idle session, so anything it sends, or the
// session ending, spoils it.
type idleSession struct {
	key     poolKey
	s       session
	since   time.Time
	stop    context.CancelFunc
	watched chan struct{} // closed when the watcher exits
	spoiled bool          // set by the watcher before watched closes
	err     error         // what spoiled it, set with spoiled
}

// Pool hands out sessions. Its methods may be called concurrently.
type Pool struct {
	client *slngclient.Client
	opts   Options
	log    *zap.Logger
	m      *Metrics
	br     *breakers

	slots chan struct{} // one token per upstream session, in use, idle or dialling
	// all bounds every dial, bg the pool's own; nil means no limit.
	all, bg *rate.Limiter

	ctx    context.Context // ends at Close; owns background dials
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	mu      sync.Mutex
	closed  bool
	idle    map[poolKey][]*idleSession // most recently idle last
	nIdle   int
	dialing map[poolKey]int
	routes  map[poolKey]*route
	gen     uint64               // the generation of the gateway's own key; see KeyChanged
	pauses  map[string]*keyPause // by credential fingerprint
}

// New returns a pool dialling with client and starts its maintenance
// goroutine, which Close stops.
func New(client *slngclient.Client, opts Options) (*Pool, error) {
	if client == nil {
		return nil, errors.New("slngpool: client is required")
	}
	if math.IsNaN(opts.DialRate) || math.IsNaN(opts.BackgroundDialRate) {
		return nil, errors.New("slngpool: a dial rate is not a number")
	}
	opts = opts.withDefaults()
	p := &Pool{
		client:  client,
		opts:    opts,
		log:     opts.Logger.Named("pool"),
		m:       opts.Metrics,
		slots:   make(chan struct{}, opts.MaxSessions),
		all:     newLimiter(opts.DialRate),
		bg:      newLimiter(opts.BackgroundDialRate),
		kick:    make(chan struct{}, 1),
		idle:    map[poolKey][]*idleSession{},
		dialing: map[poolKey]int{},
		routes:  map[poolKey]*route{},
		pauses:  map[string]*keyPause{},
	}
	p.br = &breakers{m: map[string]*breaker{}, max: opts.MaxBreakers, opts: &p.opts, log: p.log, metrics: p.m}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for _, pr := range opts.Prewarm {
		if err := p.Prewarm(pr); err != nil {
			return nil, err
		}
	}
	p.wg.Add(1)
	go p.maintain()
	p.wake()
	return p, nil
}

// Prewarm keeps pr's configuration warm from now on. It is ignored when
// DisableWarm is set. A configuration SLNG refuses is not dialled again
// until a caller uses it; Rejected lists it.
func (p *Pool) Prewarm(pr Profile) error {
	var k poolKey
	var dial dialFunc
	switch {
	case pr.TTS != nil && pr.STT == nil:
		k, dial = p.ttsKey(pr.Endpoint, *pr.TTS)
	case pr.STT != nil && pr.TTS == nil:
		k, dial = p.sttKey(pr.Endpoint, *pr.STT)
	default:
		return errors.New("slngpool: a prewarm profile sets exactly one of TTS and STT")
	}
	if err := slngclient.ValidateModel(pr.Endpoint.Model); err != nil {
		return err
	}
	if p.opts.DisableWarm {
		return nil
	}
	n := min(max(pr.Count, 1), p.opts.MaxIdlePerKey)
	p.mu.Lock()
	r := p.routes[k]
	if r == nil {
		r = p.addRouteLocked(k, dial)
		r.proven = true // nothing says otherwise, and no caller's session to wait for
	}
	r.profile, r.target = true, n
	p.mu.Unlock()
	p.wake()
	return nil
}

// Lease is a session handed to one caller; Release returns it.
type Lease struct {
	p    *Pool
	key  poolKey
	br   *breaker
	s    session
	once sync.Once
	// TTS or STT is the session, by kind.
	TTS *slngclient.TTSSession
	STT *slngclient.STTSession
	// Warm reports that a standby session served the acquire.
	Warm bool
}

// AcquireTTS returns a TTS session for ep and cfg: a warm one when there is
// one, else a new one. Errors are *CircuitOpenError, ErrExhausted (or
// ErrDialRate, which wraps it), ErrClosed, the ctx's error, or
// slngclient's dial errors. Its dials are caller dials, or rollovers when
// ctx comes from WithRollover.
func (p *Pool) AcquireTTS(ctx context.Context, ep slngclient.Endpoint, cfg slngclient.TTSConfig) (*Lease, error) {
	k, dial := p.ttsKey(ep, cfg)
	l, err := p.acquire(ctx, k, ep, dial)
	if err != nil {
		return nil, err
	}
	l.TTS = l.s.(*slngclient.TTSSession)
	return l, nil
}

// AcquireSTT is AcquireTTS for speech to text.
func (p *Pool) AcquireSTT(ctx context.Context, ep slngclient.Endpoint, cfg slngclient.STTConfig) (*Lease, error) {
	k, dial := p.sttKey(ep, cfg)
	l, err := p.acquire(ctx, k, ep, dial)
	if err != nil {
		return nil, err
	}
	l.STT = l.s.(*slngclient.STTSession)
	return l, nil
}

func (p *Pool) ttsKey(ep slngclient.Endpoint, cfg slngclient.TTSConfig) (poolKey, dialFunc) {
	return p.key("tts", ep, cfg), func(ctx context.Context) (session, error) {
		s, err := p.client.DialTTS(ctx, ep, cfg)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return s, nil
	}
}

func (p *Pool) sttKey(ep slngclient.Endpoint, cfg slngclient.STTConfig) (poolKey, dialFunc) {
	return p.key("stt", ep, cfg), func(ctx context.Context) (session, error) {
		s, err := p.client.DialSTT(ctx, ep, cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

func (p *Pool) key(kind string, ep slngclient.Endpoint, cfg any) poolKey {
	// encoding/json sorts map keys, so equal configs encode equally.
	b, err := json.Marshal(cfg)
	if err != nil {
		b = []byte("unencodable") // its dial fails the same way
	}
	h := sha256.New()
	h.Write([]byte(ep.APIKey))
	h.Write([]byte{0})
	h.Write([]byte(ep.ProviderKey))
	k := poolKey{
		kind: kind, model: ep.Model, region: ep.Region, worldPart: ep.WorldPart,
		cred:   hex.EncodeToString(h.Sum(nil)[:16]),
		config: string(b),
		own:    ep.APIKey == "",
	}
	if k.own {
		p.mu.Lock()
		k.gen = p.gen
		p.mu.Unlock()
	}
	return k
}

func (p *Pool) acquire(ctx context.Context, k poolKey, ep slngclient.Endpoint, dial dialFunc) (*Lease, error) {
	if err := slngclient.ValidateModel(ep.Model); err != nil {
		return nil, err
	}
	if p.ctx.Err() != nil {
		return nil, ErrClosed
	}
	purpose := purposeOf(ctx)
	br := p.br.get(ep.Model, ep.Region)
	// Each use is noted after the warm check, so that the standby it may
	// start is for the next caller.
	if s := p.takeWarm(ctx, k); s != nil {
		p.m.acquires.WithLabelValues(k.kind, "hit").Inc()
		p.m.inUse.WithLabelValues(k.kind).Inc()
		p.noteUse(k, dial, useOther, nil)
		return &Lease{p: p, key: k, br: br, s: s, Warm: true}, nil
	}
	// Fail fast while the breaker is open, before waiting for capacity.
	if br.cb.State() == gobreaker.StateOpen {
		if _, err := br.allow(); err != nil {
			p.m.acquires.WithLabelValues(k.kind, "circuit_open").Inc()
			p.noteUse(k, dial, useOther, nil)
			return nil, err
		}
	}
	if err := p.takeSlot(ctx); err != nil {
		if errors.Is(err, ErrExhausted) {
			p.m.acquires.WithLabelValues(k.kind, "exhausted").Inc()
		}
		p.noteUse(k, dial, useOther, nil)
		return nil, err
	}
	if err := p.takeBudget(ctx, k); err != nil {
		<-p.slots
		if errors.Is(err, ErrExhausted) {
			p.m.acquires.WithLabelValues(k.kind, "exhausted").Inc()
		}
		p.noteUse(k, dial, useOther, nil)
		return nil, err
	}
	s, err := p.dialRetrying(ctx, k, br, purpose, dial)
	if err != nil {
		p.freeSlot(k)
		var coe *CircuitOpenError
		switch {
		case errors.As(err, &coe):
			p.m.acquires.WithLabelValues(k.kind, "circuit_open").Inc()
		case errors.Is(err, ErrDialRate):
			p.m.acquires.WithLabelValues(k.kind, "exhausted").Inc()
		default:
			p.m.acquires.WithLabelValues(k.kind, "error").Inc()
		}
		p.noteUse(k, dial, useFailed, err)
		return nil, err
	}
	p.m.acquires.WithLabelValues(k.kind, "miss").Inc()
	p.m.inUse.WithLabelValues(k.kind).Inc()
	p.noteUse(k, dial, useOther, nil)
	return &Lease{p: p, key: k, br: br, s: s}, nil
}

// dialRetrying dials for a caller, retrying retryable failures with
// exponential backoff and jitter while the breaker allows and the caller's
// deadline leaves time. Only the DialRate bucket may add to that wait;
// the pool's own backoffs and pauses never delay a caller.
func (p *Pool) dialRetrying(ctx context.Context, k poolKey, br *breaker, purpose purpose, dial dialFunc) (session, error) {
	wait := p.opts.BackoffBase
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := p.dialToken(ctx); err != nil {
			if errors.Is(err, ErrDialRate) {
				p.m.dials.WithLabelValues(k.kind, purpose.String(), "throttled").Inc()
			}
			if lastErr != nil {
				return nil, lastErr // the failure that made it retry says more
			}
			return nil, err
		}
		done, err := br.allow()
		if err != nil {
			return nil, err
		}
		s, err := p.dialOnce(ctx, k, purpose, dial)
		done(err)
		if err == nil {
			return s, nil
		}
		lastErr = err
		ue, ok := slngclient.AsUpstreamError(err)
		if !ok || !ue.Retryable || attempt >= p.opts.DialAttempts || ctx.Err() != nil {
			return nil, err
		}
		// Full jitter, and never sooner than SLNG asked.
		sleep := max(jitter(wait, 0), ue.RetryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < sleep {
			return nil, err
		}
		p.log.Debug("retrying slng dial", zap.String("model", k.model), zap.Int("attempt", attempt),
			zap.Duration("after", sleep), zap.Error(err))
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		wait = min(2*wait, p.opts.BackoffMax)
	}
}

// dialToken takes a DialRate token for a caller's dial, waiting for one
// within AcquireTimeout and the caller's deadline.
func (p *Pool) dialToken(ctx context.Context) error {
	if p.all == nil {
		return nil
	}
	r := p.all.Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	limit := p.opts.AcquireTimeout
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	if d > limit {
		r.Cancel()
		return ErrDialRate
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	case <-p.ctx.Done():
		r.Cancel()
		return ErrClosed
	}
}

// dialOnce makes one dial and records it.
func (p *Pool) dialOnce(ctx context.Context, k poolKey, purpose purpose, dial dialFunc) (session, error) {
	start := time.Now()
	s, err := dial(ctx)
	var st slngclient.Stats
	if err == nil {
		st = s.Stats()
	}
	p.m.observeDial(k.kind, purpose.String(), start, st, err)
	return s, err
}

// takeSlot reserves capacity for one new session. When all are taken it
// first retires a standby session of any configuration, then waits up to
// AcquireTimeout.
func (p *Pool) takeSlot(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	if p.evictOne() {
		select {
		case p.slots <- struct{}{}:
			return nil
		default:
		}
	}
	t := time.NewTimer(p.opts.AcquireTimeout)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrExhausted
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return ErrClosed
	}
}

// errPing is why a standby that did not answer its checkout ping died.
var errPing = errors.New("standby did not answer its checkout ping")

// takeWarm returns a standby session of k that is still good, or nil.
// Dead, aged or unresponsive standbys are closed on the way; that costs
// the caller no retry.
func (p *Pool) takeWarm(ctx context.Context, k poolKey) session {
	if p.opts.DisableWarm {
		return nil
	}
	for {
		p.mu.Lock()
		list := p.idle[k]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		is := list[len(list)-1]
		p.removeIdleLocked(is)
		maxAge := p.maxIdleLocked(k, time.Now())
		p.mu.Unlock()

		is.stop()
		<-is.watched
		switch {
		case is.spoiled:
			p.standbyDied(is, is.err, "")
			continue
		case isDone(is.s):
			p.standbyDied(is, is.s.Err(), "")
			continue
		case time.Since(is.since) > maxAge || time.Since(is.s.Stats().ReadyAt) > p.opts.MaxSessionAge:
			p.retire(is)
			continue
		}
		if p.opts.CheckoutPingTimeout > 0 {
			// The watcher sees a close as soon as the socket reports it; a
			// peer that vanished silently only shows up on a round trip.
			pctx, cancel := context.WithTimeout(ctx, p.opts.CheckoutPingTimeout)
			err := is.s.Ping(pctx)
			cancel()
			if err != nil {
				p.standbyDied(is, errPing, "ping")
				continue
			}
		}
		return is.s
	}
}

func isDone(s session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// discard closes a session of k that will serve nobody and frees its slot.
func (p *Pool) discard(s session, k poolKey, reason string) {
	s.CloseNow()
	p.freeSlot(k)
	p.m.discards.WithLabelValues(k.kind, reason).Inc()
}

// Release ends the lease. err is why the stream ended, nil if it ended
// well; upstream failures count against the breaker. reusable says that
// the session is quiescent, with every turn complete and the socket open;
// the pool then keeps it as a standby when there is room. Otherwise, or
// when the caller has already closed it, the session is closed. Release
// may be called more than once; only the first call counts.
func (l *Lease) Release(err error, reusable bool) {
	l.once.Do(func() { l.p.release(l, err, reusable) })
}

func (p *Pool) release(l *Lease, err error, reusable bool) {
	p.m.inUse.WithLabelValues(l.key.kind).Dec()
	now := time.Now()
	if err == nil && isDone(l.s) {
		// A caller that replaced a failed session may release it as if
		// it had ended well; how it ended is known here.
		if serr := l.s.Err(); serr != nil {
			if _, upstream := slngclient.AsUpstreamError(serr); upstream {
				err = serr
			}
		}
	}
	if err != nil {
		p.m.upstreamError(l.key.kind, err)
		ue, upstream := slngclient.AsUpstreamError(err)
		early := upstream && now.Sub(l.s.Stats().ReadyAt) < p.opts.EarlyDeath
		switch {
		case counted(err):
			l.br.report(err)
		case early && ue.Kind == slngclient.KindClose:
			// SLNG closed a session right after ready: whatever the
			// close code says, that is SLNG failing.
			l.br.report(&slngclient.UpstreamError{Kind: slngclient.KindTransport, Message: "session closed right after ready", Err: err})
		}
		if upstream {
			reason, _ := keySignal(err)
			p.mu.Lock()
			if early && (ue.Unwell() || ue.Kind == slngclient.KindClose || reason != "") {
				// SLNG failed the configuration right after ready: its
				// standbys would fail too.
				p.failedLocked(l.key, err, now, false)
			} else {
				p.signalLocked(l.key.cred, err, now)
			}
			p.mu.Unlock()
		}
	} else {
		if l.Warm {
			l.br.reportOK() // its dial was not counted yet: see errPending
		}
		p.mu.Lock()
		p.succeededLocked(l.key)
		p.mu.Unlock()
	}
	if err != nil || !reusable || p.opts.DisableWarm || isDone(l.s) ||
		now.Sub(l.s.Stats().ReadyAt) > p.opts.MaxSessionAge || !p.keepBudget(l.key) {
		l.s.CloseNow()
		p.freeSlot(l.key)
		return
	}
	p.mu.Lock()
	if !p.putIdleLocked(l.key, l.s) {
		p.mu.Unlock()
		p.discard(l.s, l.key, "full")
		return
	}
	p.mu.Unlock()
}

// putIdleLocked makes s a standby of k and starts its watcher, or reports
// false when there is no room.
func (p *Pool) putIdleLocked(k poolKey, s session) bool {
	if p.closed || p.staleLocked(k) || len(p.idle[k]) >= p.opts.MaxIdlePerKey || p.nIdle >= p.opts.MaxIdle {
		return false
	}
	wctx, stop := context.WithCancel(p.ctx)
	is := &idleSession{key: k, s: s, since: time.Now(), stop: stop, watched: make(chan struct{})}
	p.idle[k] = append(p.idle[k], is)
	p.nIdle++
	p.m.idle.WithLabelValues(k.kind).Inc()
	p.wg.Add(1)
	go p.watch(wctx, is)
	return true
}

// errUnexpected is why a standby that SLNG sent a message to, other than an
// error, was spoiled.
var errUnexpected = errors.New("slng sent a message to an idle session")

// watch waits on an idle session for anything at all: SLNG sends nothing to
// an idle session, so an event or the end spoils it. The session is then
// closed at once rather than when a caller trips over it.
func (p *Pool) watch(ctx context.Context, is *idleSession) {
	defer p.wg.Done()
	var err, evErr error
	switch s := is.s.(type) {
	case *slngclient.TTSSession:
		var ev slngclient.TTSEvent
		ev, err = s.Recv(ctx)
		if ev.Err != nil { // a nil *UpstreamError must not become a non-nil error
			evErr = ev.Err
		}
	case *slngclient.STTSession:
		var ev slngclient.STTEvent
		ev, err = s.Recv(ctx)
		if ev.Err != nil {
			evErr = ev.Err
		}
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		close(is.watched) // taken, or the pool closed
		return
	}
	switch {
	case err != nil:
	case evErr != nil:
		err = evErr // an error frame, usually followed by the close
	default:
		err = errUnexpected
	}
	is.spoiled, is.err = true, err
	close(is.watched)
	p.mu.Lock()
	mine := p.removeIdleLocked(is)
	p.mu.Unlock()
	if mine {
		p.standbyDied(is, err, "")
	}
}

// removeIdleLocked takes is out of the idle lists; false if it was not
// there (already taken).
func (p *Pool) removeIdleLocked(is *idleSession) bool {
	list := p.idle[is.key]
	i := slices.Index(list, is)
	if i < 0 {
		return false
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(p.idle, is.key)
	} else {
		p.idle[is.key] = list
	}
	p.nIdle--
	p.m.idle.WithLabelValues(is.key.kind).Dec()
	return true
}

// evictOne closes the longest-idle standby session to make room.
func (p *Pool) evictOne() bool {
	p.mu.Lock()
	var oldest *idleSession
	for _, list := range p.idle {
		if len(list) > 0 && (oldest == nil || list[0].since.Before(oldest.since)) {
			oldest = list[0]
		}
	}
	if oldest == nil {
		p.mu.Unlock()
		return false
	}
	p.removeIdleLocked(oldest)
	p.mu.Unlock()
	oldest.stop()
	<-oldest.watched
	p.discard(oldest.s, oldest.key, "evicted")
	return true
}

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// maintain retires aged standbys and dials replacements, on a tick, when
// a backoff or pause ends, and whenever a standby is taken or dies.
func (p *Pool) maintain() {
	defer p.wg.Done()
	tick := max(min(p.opts.MaxIdleAge/5, time.Second), 10*time.Millisecond)
	t := time.NewTimer(tick)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
		p.retireAged()
		next := tick
		if at := p.refill(); !at.IsZero() {
			next = min(next, max(time.Until(at), time.Millisecond))
		}
		t.Stop()
		t.Reset(next)
	}
}

func (p *Pool) retireAged() {
	var old []*idleSession
	now := time.Now()
	p.mu.Lock()
	for k, list := range p.idle {
		maxAge := p.maxIdleLocked(k, now)
		for _, is := range list {
			if now.Sub(is.since) > maxAge || now.Sub(is.s.Stats().ReadyAt) > p.opts.MaxSessionAge {
				old = append(old, is)
			}
		}
	}
	for _, is := range old {
		p.removeIdleLocked(is)
	}
	p.mu.Unlock()
	for _, is := range old {
		is.stop()
		<-is.watched
		if is.spoiled {
			p.standbyDied(is, is.err, "")
			continue
		}
		p.retire(is)
	}
}

// retire closes a standby that lived out its age unused: SLNG kept it,
// which counts as the configuration working.
func (p *Pool) retire(is *idleSession) {
	p.discard(is.s, is.key, "aged")
	p.br.get(is.key.model, is.key.region).reportOK()
	p.mu.Lock()
	p.succeededLocked(is.key)
	p.mu.Unlock()
	p.wake()
}

// Close stops the pool: standby sessions are closed, background dials
// cancelled and waited for. Leases still out stay valid; releasing them
// closes their sessions.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*idleSession
	for _, list := range p.idle {
		all = append(all, list...)
	}
	for _, is := range all {
		p.removeIdleLocked(is)
	}
	p.mu.Unlock()
	p.cancel()
	for _, is := range all {
		<-is.watched
		p.discard(is.s, is.key, "closed")
	}
	p.wg.Wait()
}

// IdleCount reports the standby sessions held, for tests and logs.
func (p *Pool) IdleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nIdle
}
