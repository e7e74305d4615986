// Package slngpool hands out SLNG sessions: warm standby sessions kept ready
// per configuration, a cap on the number of upstream sessions, dial retries
// with backoff and jitter, and a circuit breaker per model and region.
//
// A warm session is one that has connected, sent `init` and received
// `ready`, which costs a TLS handshake and several round trips that a
// caller would otherwise wait for. Sessions are keyed by kind, model,
// region, credential and init config, so a session never serves a
// configuration or a credential other than the one it was opened with.
// A standby is lent at once: its first message never waits for a round
// trip, and one that SLNG has not been heard from on lately proves SLNG is
// still there beside that message instead (proof.go).
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
	"sync"
	"sync/atomic"
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

// session is what the pool needs of a TTS or STT session.
type session interface {
	ID() string
	Done() <-chan struct{}
	Err() error
	Stats() slngclient.Stats
	Heard() time.Time
	ProveLife(within time.Duration)
	LifeUnproven() bool
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
	// passes counts the maintenance passes begun and ended, so that a test
	// can wait for a pass that began after it moved the clock
	// (export_test.go).
	passesBegun, passesEnded atomic.Uint64

	mu      sync.Mutex
	closed  bool
	idle    map[poolKey][]*idleSession // most recently idle last
	nIdle   int
	dialing map[poolKey]int
	routes  map[poolKey]*route
	gen     uint64               // the generation of the gateway's own key; see KeyChanged
	pauses  map[string]*keyPause // by credential fingerprint
	// proving holds the standbys lent with a proof of life pending, by
	// configuration (proof.go).
	proving map[poolKey][]lent
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
		proving: map[poolKey][]lent{},
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
// DisableWarm is set. Its endpoint must name no APIKey: the pool's own
// dials use the gateway's key only. A configuration SLNG refuses is not dialled again
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
	if !k.own {
		// The pool's own dials use the gateway's key only.
		return errors.New("slngpool: a prewarm profile names no key of its own")
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

// Request is what an acquire asks for: a session of Endpoint, for
// Purpose (PurposeCaller or PurposeRollover).
type Request struct {
	Endpoint slngclient.Endpoint
	Purpose  Purpose
}

// AcquireTTS returns a TTS session for req and cfg: a warm one when there
// is one, else a new one. Errors are *CircuitOpenError, ErrExhausted (or
// ErrDialRate, which wraps it), ErrClosed, the ctx's error, or
// slngclient's dial errors.
func (p *Pool) AcquireTTS(ctx context.Context, req Request, cfg slngclient.TTSConfig) (*Lease[*slngclient.TTSSession], error) {
	k, dial := p.ttsKey(req.Endpoint, cfg)
	return acquireTyped[*slngclient.TTSSession](p, ctx, k, req, dial)
}

// AcquireSTT is AcquireTTS for speech to text.
func (p *Pool) AcquireSTT(ctx context.Context, req Request, cfg slngclient.STTConfig) (*Lease[*slngclient.STTSession], error) {
	k, dial := p.sttKey(req.Endpoint, cfg)
	return acquireTyped[*slngclient.STTSession](p, ctx, k, req, dial)
}

// acquireTyped is acquire for a kind of session: k's kind and dial make
// sessions of type S, so the assertion holds for every session under k,
// warm or new.
func acquireTyped[S Session](p *Pool, ctx context.Context, k poolKey, req Request, dial dialFunc) (*Lease[S], error) {
	l, err := p.acquire(ctx, k, req, dial)
	if err != nil {
		return nil, err
	}
	return &Lease[S]{Session: l.s.(S), Warm: l.warm, l: l}, nil
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

func (p *Pool) acquire(ctx context.Context, k poolKey, req Request, dial dialFunc) (*lease, error) {
	ep := req.Endpoint
	if err := slngclient.ValidateModel(ep.Model); err != nil {
		return nil, err
	}
	if p.ctx.Err() != nil {
		return nil, ErrClosed
	}
	purpose := req.Purpose
	br := p.br.get(ep.Model, ep.Region)
	// Each use is noted after the warm check, so that the standby it may
	// start is for the next caller; only a failed dial is SLNG's answer.
	res, dialErr := useOther, error(nil)
	defer func() { p.noteUse(k, dial, res, dialErr) }()
	if s, proving := p.takeWarm(k); s != nil {
		p.m.acquires.WithLabelValues(k.kind, "hit").Inc()
		p.m.inUse.WithLabelValues(k.kind).Inc()
		return &lease{p: p, key: k, br: br, s: s, warm: true, proving: proving}, nil
	}
	// Fail fast while the breaker is open, before waiting for capacity.
	if br.cb.State() == gobreaker.StateOpen {
		if _, err := br.allow(); err != nil {
			p.m.acquires.WithLabelValues(k.kind, "circuit_open").Inc()
			return nil, err
		}
	}
	// One AcquireTimeout bounds all the waits of an acquire together.
	until := p.now().Add(p.opts.AcquireTimeout)
	if err := p.takeSlot(ctx, until); err != nil {
		if errors.Is(err, ErrExhausted) {
			p.m.acquires.WithLabelValues(k.kind, "exhausted").Inc()
		}
		return nil, err
	}
	if err := p.takeBudget(ctx, k, until); err != nil {
		<-p.slots
		if errors.Is(err, ErrExhausted) {
			p.m.acquires.WithLabelValues(k.kind, "exhausted").Inc()
		}
		return nil, err
	}
	s, err := p.dialRetrying(ctx, k, br, purpose, dial, until)
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
			res, dialErr = useFailed, err
		}
		return nil, err
	}
	p.m.acquires.WithLabelValues(k.kind, "miss").Inc()
	p.m.inUse.WithLabelValues(k.kind).Inc()
	return &lease{p: p, key: k, br: br, s: s}, nil
}

// dialRetrying dials for a caller, retrying retryable failures with
// exponential backoff and jitter while the breaker allows and the caller's
// deadline leaves time. Only the DialRate bucket may add to that wait;
// the pool's own backoffs and pauses never delay a caller.
func (p *Pool) dialRetrying(ctx context.Context, k poolKey, br *breaker, purpose Purpose, dial dialFunc, until time.Time) (session, error) {
	wait := p.opts.BackoffBase
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := p.dialToken(ctx, until); err != nil {
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
		cdone, err := p.allowConfig(k)
		if err != nil {
			done(errConfigOnly{err})
			return nil, err
		}
		s, err := p.dialOnce(ctx, k, purpose, dial)
		cdone(err)
		p.br.outcome(k, br, done, err, false)
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
		t := p.opts.Clock.NewTimer(sleep)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		wait = min(2*wait, p.opts.BackoffMax)
	}
}

// dialToken takes a DialRate token for a caller's dial, waiting for one
// until the acquire's deadline and the caller's.
func (p *Pool) dialToken(ctx context.Context, until time.Time) error {
	if p.all == nil {
		return nil
	}
	now := p.now()
	r := p.all.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	limit := until.Sub(now)
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	if d > limit {
		r.CancelAt(now)
		return ErrDialRate
	}
	t := p.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		r.CancelAt(p.now())
		return ctx.Err()
	case <-p.ctx.Done():
		r.CancelAt(p.now())
		return ErrClosed
	}
}

// dialOnce makes one dial and records it.
func (p *Pool) dialOnce(ctx context.Context, k poolKey, purpose Purpose, dial dialFunc) (session, error) {
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
// first retires a standby session of any configuration, then waits until
// the acquire's deadline.
func (p *Pool) takeSlot(ctx context.Context, until time.Time) error {
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
	t := p.opts.Clock.NewTimer(until.Sub(p.now()))
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-t.C():
		return ErrExhausted
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return ErrClosed
	}
}

// now is the time on the pool's clock.
func (p *Pool) now() time.Time { return p.opts.Clock.Now() }

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
