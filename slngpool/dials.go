package slngpool

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// purpose is why a dial is made. Only caller and rollover dials have a
// stream waiting on them; standby and prewarm dials are the pool's own and
// go through its background budget.
type purpose int

const (
	purposeCaller purpose = iota
	purposeRollover
	purposeStandby
	purposePrewarm
)

func (p purpose) String() string {
	switch p {
	case purposeRollover:
		return "rollover"
	case purposeStandby:
		return "standby"
	case purposePrewarm:
		return "prewarm"
	}
	return "caller"
}

type purposeKey struct{}

// WithRollover returns a ctx whose acquires are rollovers: a running stream
// replacing its upstream session rather than a new stream opening one.
// They are dialled exactly like a caller's and labelled rollover in the
// metrics.
func WithRollover(ctx context.Context) context.Context {
	return context.WithValue(ctx, purposeKey{}, purposeRollover)
}

func purposeOf(ctx context.Context) purpose {
	if p, ok := ctx.Value(purposeKey{}).(purpose); ok {
		return p
	}
	return purposeCaller
}

// jitter returns a wait of d with jitter: uniform in [floor*d, d].
func jitter(d time.Duration, floor float64) time.Duration {
	lo := time.Duration(float64(d) * floor)
	return lo + time.Duration(rand.Int64N(int64(d-lo)+1))
}

// backoff is the wait after n consecutive failures, for the pool's own
// dials: StandbyBackoffBase doubling up to StandbyBackoffMax, with jitter
// that never halves it, so that the doubling still spaces the dials.
func (p *Pool) backoff(n int) time.Duration {
	d := p.opts.StandbyBackoffBase
	for i := 1; i < n && d < p.opts.StandbyBackoffMax; i++ {
		d *= 2
	}
	return jitter(min(d, p.opts.StandbyBackoffMax), 0.5)
}

const (
	// maxPause bounds a pause that SLNG's Retry-After asks for.
	maxPause = 10 * time.Minute
	// maxPauses bounds the SLNG keys whose pause is remembered.
	maxPauses = 1024
	// learnTTL is how long a learned idle lifetime is trusted: a route may
	// change, and a lifetime is relearned from one more idle death.
	learnTTL = 10 * time.Minute
	// minLearnedLife: a standby that dies sooner than this was not reaped
	// for being idle; it failed.
	minLearnedLife = time.Second
	// refreshPays is the chance, at least, that a refreshed standby is
	// used before it must be retired, for the pool to start refreshing one
	// on a route whose idle standbys SLNG ends: at most one unused standby
	// per standby used. Refreshing goes on until the chance falls below
	// refreshStops, so that chance variation does not flip the policy.
	refreshPays  = 0.5
	refreshStops = 0.4
)

// State names of a configuration, for the routes gauge and logs.
const (
	stateKeep     = "keep"     // standbys kept up to MaxIdleAge
	stateRefresh  = "refresh"  // SLNG ends idle standbys: one is kept, retired within their lifetime
	stateNone     = "none"     // SLNG ends idle standbys and callers are too rare: none kept
	stateStopped  = "stopped"  // failing: no background dials until a caller uses it
	stateRejected = "rejected" // SLNG refused its dial: no background dials until a caller uses it
)

// route is a configuration kept warm, with its background dial budget and
// what the pool learned of it.
type route struct {
	dial     dialFunc
	lastUsed time.Time // the last caller's acquire; zero for a profile never used
	target   int
	profile  bool // from Prewarm: never forgotten
	state    string

	// proven says that a session of the configuration worked since its
	// last failure. Until then a standby waits for the last caller's
	// session to get past EarlyDeath: a configuration that fails right
	// after ready must not get a standby beside each caller's session.
	proven bool
	// fails counts consecutive failures; background dials wait until next
	// and stop altogether (stopped) after StandbyFailures, until a caller.
	fails   int
	next    time.Time
	stopped bool
	// rejected is SLNG's refusal of the configuration (a code, e.g.
	// config_error), reported once (reported) for a profile.
	rejected string
	reported bool

	// life is how long SLNG lets a standby of this configuration sit idle,
	// learned at lifeAt from one that died; 0 when unknown.
	life   time.Duration
	lifeAt time.Time
	// uses are the times of the last callers, oldest first, at most
	// useWindow of them: the rate at which callers come.
	uses []time.Time
}

// useWindow is how many callers' times a configuration keeps to estimate
// how often callers come.
const useWindow = 8

// keyPause pauses the pool's own dials for one SLNG key after SLNG
// rate-limited or refused it.
type keyPause struct {
	until time.Time
	// level counts the signals since the key last worked; while it is
	// above 0, a pause that has ended lets one dial through at a time.
	level   int
	probing bool
}

// addRouteLocked remembers a configuration.
func (p *Pool) addRouteLocked(k poolKey, dial dialFunc) *route {
	r := &route{dial: dial, target: 1, state: stateKeep}
	p.routes[k] = r
	p.m.routes.WithLabelValues(k.kind, stateKeep).Inc()
	return r
}

// roomLocked makes room for one more configuration seen in use, forgetting
// the one used least recently when MaxRecent are remembered; false when all
// are from Prewarm, which are never forgotten.
func (p *Pool) roomLocked() bool {
	if len(p.routes) < p.opts.MaxRecent {
		return true
	}
	var oldestKey poolKey
	var oldest *route
	for key, r := range p.routes {
		if !r.profile && (oldest == nil || r.lastUsed.Before(oldest.lastUsed)) {
			oldestKey, oldest = key, r
		}
	}
	if oldest == nil {
		return false
	}
	p.dropRouteLocked(oldestKey, oldest)
	return true
}

func (p *Pool) dropRouteLocked(k poolKey, r *route) {
	delete(p.routes, k)
	p.m.routes.WithLabelValues(k.kind, r.state).Dec()
}

// useResult is what a caller's acquire tells of its configuration.
type useResult int

const (
	useOther  useResult = iota // nothing yet: a session, warm or dialled, an open circuit, no capacity
	useFailed                  // the dial failed
)

// noteUse remembers a caller's use of a configuration, so that it is kept
// warm for a while and, if it had stopped, dialled in the background
// again.
func (p *Pool) noteUse(k poolKey, dial dialFunc, res useResult, err error) {
	now := time.Now()
	p.mu.Lock()
	r := p.routes[k]
	if r == nil && !p.opts.DisableWarm && p.opts.RecentTTL >= 0 && p.roomLocked() {
		r = p.addRouteLocked(k, dial)
	}
	if r != nil {
		if len(r.uses) == useWindow {
			r.uses = append(r.uses[:0], r.uses[1:]...)
		}
		r.uses = append(r.uses, now)
		r.lastUsed = now
		r.stopped = false // a caller brings it back; its backoff still holds
	}
	if _, upstream := slngclient.AsUpstreamError(err); res == useFailed && upstream {
		// Not the caller's own cancellation, nor an open circuit or the
		// dial rate: SLNG's answer. A session's success is known only at
		// its release.
		p.failedLocked(k, err, now, true)
	}
	if r != nil {
		p.updateStateLocked(k, r, now)
	}
	p.mu.Unlock()
	p.wake()
}

// succeededLocked records that a session of k worked: a stream ended well
// or a standby lived out its age. The configuration's backoff
// and its key's signals are forgotten.
func (p *Pool) succeededLocked(k poolKey) {
	if r := p.routes[k]; r != nil {
		r.fails, r.next, r.stopped, r.rejected, r.proven = 0, time.Time{}, false, "", true
		p.updateStateLocked(k, r, time.Now())
	}
	if kp := p.pauses[k.cred]; kp != nil {
		kp.level = 0 // a pause SLNG asked for still runs its time
	}
}

// failedLocked records a failure of k: a dial (dial true) or a session
// that ended right after ready. It backs off the configuration's
// background dials, stops them after StandbyFailures or at once when SLNG
// refused the configuration, and hears what the failure says of the key.
func (p *Pool) failedLocked(k poolKey, err error, now time.Time, dial bool) {
	p.signalLocked(k.cred, err, now)
	r := p.routes[k]
	if r == nil {
		return
	}
	defer p.updateStateLocked(k, r, now)
	r.proven = false
	r.fails++
	r.next = now.Add(p.backoff(r.fails))
	if code, refused := refusal(err); dial && refused {
		r.stopped, r.rejected = true, code
		if r.profile && !r.reported {
			r.reported = true
			p.log.Warn("SLNG refused a prewarm configuration; it is not dialled again until a stream uses it",
				zap.String("kind", k.kind), zap.String("model", k.model), zap.String("region", k.region),
				zap.String("code", code), zap.Error(err))
		}
		return
	}
	if r.fails >= p.opts.StandbyFailures && !r.stopped {
		r.stopped = true
		p.log.Info("background dials stopped for a failing configuration until a stream uses it",
			zap.String("kind", k.kind), zap.String("model", k.model), zap.String("region", k.region),
			zap.Int("failures", r.fails), zap.Error(err))
	}
}

// refusal reports a dial failure that says SLNG will not take this
// configuration (or key) as it is, and its code: a non-retryable refusal
// such as config_error, auth_error or an HTTP 4xx.
func refusal(err error) (string, bool) {
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok || ue.Retryable {
		return "", false
	}
	return errorCode(ue), true
}

// keySignal reports what err says of the SLNG key: rate_limit, http_429,
// auth, or retry_after (any other refusal with a Retry-After), and how long
// SLNG asked to wait, if it did.
func keySignal(err error) (string, time.Duration) {
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return "", 0
	}
	switch {
	case ue.Kind == slngclient.KindErrorFrame && (ue.Code == "rate_limit" || ue.Code == "rate_limit_exceeded"):
		return "rate_limit", ue.RetryAfter
	case ue.Kind == slngclient.KindHandshake && ue.HTTPStatus == 429:
		return "http_429", ue.RetryAfter
	case ue.Kind == slngclient.KindHandshake && (ue.HTTPStatus == 401 || ue.HTTPStatus == 403),
		ue.Kind == slngclient.KindErrorFrame && ue.Code == "auth_error":
		return "auth", ue.RetryAfter
	case ue.RetryAfter > 0:
		return "retry_after", ue.RetryAfter
	}
	return "", 0
}

// signalLocked pauses the pool's own dials for the key cred when err is
// SLNG rate-limiting or refusing the key: for as long as SLNG asked, or a
// backoff that grows while the signals repeat. Callers' dials are never
// paused.
func (p *Pool) signalLocked(cred string, err error, now time.Time) {
	reason, after := keySignal(err)
	if reason == "" {
		return
	}
	kp := p.pauses[cred]
	if kp == nil {
		if len(p.pauses) >= maxPauses {
			p.prunePausesLocked(now, true)
		}
		for c, old := range p.pauses {
			if len(p.pauses) < maxPauses {
				break
			}
			if !old.probing {
				delete(p.pauses, c) // a key of many callers' own: forget one
			}
		}
		kp = &keyPause{}
		p.pauses[cred] = kp
	}
	kp.level++
	d := after
	if d <= 0 {
		d = p.backoff(kp.level)
	}
	d = min(d, maxPause)
	if until := now.Add(d); until.After(kp.until) {
		kp.until = until
	}
	p.m.pauses.WithLabelValues(reason).Inc()
	log := p.log.Debug
	if kp.level == 1 {
		log = p.log.Info
	}
	// The fingerprint is a hash: the key itself never reaches a log.
	log("SLNG turned the key away: background dials for it paused", zap.String("reason", reason),
		zap.String("key_fingerprint", cred[:8]), zap.Duration("for", d))
}

// prunePausesLocked forgets pauses that are over and whose key worked
// since; with all, every pause that is over.
func (p *Pool) prunePausesLocked(now time.Time, all bool) {
	for cred, kp := range p.pauses {
		if !now.Before(kp.until) && !kp.probing && (all || kp.level == 0) {
			delete(p.pauses, cred)
		}
	}
}

// deathCause names why a standby died, for the deaths metric.
func deathCause(err error) string {
	if errors.Is(err, io.EOF) {
		return "closed"
	}
	if errors.Is(err, errUnexpected) {
		return "message"
	}
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return "other"
	}
	switch ue.Kind {
	case slngclient.KindErrorFrame:
		switch ue.Code {
		case "rate_limit", "rate_limit_exceeded":
			return "rate_limit"
		case "auth_error":
			return "auth"
		case "idle_timeout_exceeded":
			return "idle_timeout"
		}
		return "error"
	case slngclient.KindClose:
		return "closed"
	case slngclient.KindTransport, slngclient.KindTimeout:
		return "dropped"
	}
	return "protocol"
}

// reaped reports a death that may be SLNG reaping an idle session: a
// close or drop without an error frame, or its idle timeout error.
func reaped(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return false
	}
	return ue.Kind == slngclient.KindClose || ue.Kind == slngclient.KindTransport ||
		(ue.Kind == slngclient.KindErrorFrame && ue.Code == "idle_timeout_exceeded")
}

// standbyDied closes a standby that died before any caller used it and
// learns from it. cause overrides the cause derived from err. A death is
// SLNG failing, for the configuration's backoff and for its breaker,
// except that SLNG reaping an idle standby teaches the configuration's
// idle lifetime instead of backing it off, and counts against the breaker
// only until that lifetime is known.
func (p *Pool) standbyDied(is *idleSession, err error, cause string) {
	k := is.key
	life := time.Since(is.since)
	if cause == "" {
		cause = deathCause(err)
	}
	reason := "spoiled"
	if cause == "ping" {
		reason = "ping"
	}
	p.discard(is.s, k.kind, reason)
	p.m.deaths.WithLabelValues(k.kind, cause).Inc()
	p.m.lifetime.WithLabelValues(k.kind).Observe(life.Seconds())
	now := time.Now()
	learned, known := false, false
	p.mu.Lock()
	if r := p.routes[k]; r != nil && reaped(err) && life >= minLearnedLife {
		// SLNG reaped it for sitting idle: the pool learns how long it may
		// and adapts its standbys rather than backing off.
		r.forgetStaleLocked(now)
		learned, known = true, r.life > 0 && life >= r.life*8/10
		if r.life == 0 || life < r.life {
			r.life = life
		} else {
			r.life = (3*r.life + life) / 4
		}
		r.lifeAt = now
		p.updateStateLocked(k, r, now)
	}
	if !learned {
		p.failedLocked(k, err, now, false)
	}
	p.mu.Unlock()
	p.log.Debug("standby session died unused", zap.String("model", k.model), zap.String("cause", cause),
		zap.Duration("idle", life), zap.Error(err))
	if !known {
		p.br.get(k.model, k.region).report(&slngclient.UpstreamError{
			Kind: slngclient.KindTransport, Message: "standby ended before use", Retryable: true, Err: err})
	}
	p.wake()
}

// forgetStaleLocked drops a learned lifetime past learnTTL.
func (r *route) forgetStaleLocked(now time.Time) {
	if r.life > 0 && now.Sub(r.lifeAt) > learnTTL {
		r.life = 0
	}
}

// shortLived reports a configuration whose idle standbys SLNG ends before
// MaxIdleAge.
func (p *Pool) shortLived(r *route, now time.Time) bool {
	r.forgetStaleLocked(now)
	return r.life > 0 && r.life < p.opts.MaxIdleAge
}

// usable is how long a standby of a short-lived configuration may sit idle
// and still be handed out: 60% of its learned lifetime, leaving the caller
// the rest to send its first text.
func (r *route) usable() time.Duration { return r.life * 6 / 10 }

// callerRate estimates how many callers come per second: the callers
// remembered, over the time from the first of them to now, so that it
// falls while none comes. 0 until two have come.
func (r *route) callerRate(now time.Time) float64 {
	if len(r.uses) < 2 {
		return 0
	}
	return float64(len(r.uses)-1) / max(now.Sub(r.uses[0]).Seconds(), 1e-3)
}

// expectedUse is the chance that a standby of a short-lived configuration
// serves a caller before it must be retired, for callers arriving at
// random at the rate seen lately.
func (r *route) expectedUse(now time.Time) float64 {
	return 1 - math.Exp(-r.callerRate(now)*r.usable().Seconds())
}

// maxIdleLocked is how long a standby of k may sit idle.
func (p *Pool) maxIdleLocked(k poolKey, now time.Time) time.Duration {
	if r := p.routes[k]; r != nil && p.shortLived(r, now) {
		return min(p.opts.MaxIdleAge, r.usable())
	}
	return p.opts.MaxIdleAge
}

// updateStateLocked recomputes a configuration's state, keeping the gauge
// in step and logging a change of standby policy.
func (p *Pool) updateStateLocked(k poolKey, r *route, now time.Time) {
	st := stateKeep
	short := p.shortLived(r, now)
	switch {
	case r.rejected != "":
		st = stateRejected
	case r.stopped:
		st = stateStopped
	case short && (r.expectedUse(now) >= refreshPays || r.state == stateRefresh && r.expectedUse(now) >= refreshStops):
		st = stateRefresh
	case short:
		st = stateNone
	}
	if st == r.state {
		return
	}
	p.m.routes.WithLabelValues(k.kind, r.state).Dec()
	p.m.routes.WithLabelValues(k.kind, st).Inc()
	policy := func(s string) bool { return s == stateKeep || s == stateRefresh || s == stateNone }
	if policy(st) && policy(r.state) {
		p.log.Info("standby policy changed for a configuration whose idle standbys SLNG ends",
			zap.String("kind", k.kind), zap.String("model", k.model), zap.String("region", k.region),
			zap.String("from", r.state), zap.String("to", st), zap.Duration("idle_lifetime", r.life),
			zap.Float64("callers_per_second", math.Round(r.callerRate(now)*100)/100),
			zap.Float64("expected_use", math.Round(r.expectedUse(now)*100)/100))
	}
	r.state = st
}

// targetOf is how many standbys a configuration should have now.
func targetOf(r *route) int {
	switch r.state {
	case stateKeep:
		return r.target
	case stateRefresh:
		return 1
	}
	return 0
}

// backgroundToken takes the tokens for one background dial, or reports
// when to try again. It takes a DialRate token only while that bucket is
// at least half full, leaving the rest to callers.
func (p *Pool) backgroundToken(now time.Time) (bool, time.Time) {
	if p.all != nil && p.all.TokensAt(now) < float64(p.all.Burst())/2 {
		return false, now.Add(time.Duration(float64(time.Second) / max(float64(p.all.Limit()), 1e-3)))
	}
	if p.bg != nil {
		r := p.bg.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return false, now.Add(d)
		}
	}
	if p.all != nil {
		p.all.AllowN(now, 1)
	}
	return true, time.Time{}
}

// refill starts background dials for configurations below their standby
// target, within the background budget, their backoff, their key's pause,
// their breaker and the capacity left. A refill never waits: callers come
// first. It returns when it next has something to do (zero: nothing
// scheduled).
func (p *Pool) refill() time.Time {
	if p.opts.DisableWarm {
		return time.Time{}
	}
	now := time.Now()
	var wakeAt time.Time
	soon := func(t time.Time) {
		if wakeAt.IsZero() || t.Before(wakeAt) {
			wakeAt = t
		}
	}
	type job struct {
		k       poolKey
		dial    dialFunc
		purpose purpose
		probe   *keyPause
	}
	var jobs []job
	p.mu.Lock()
	p.prunePausesLocked(now, false)
	keys := make([]poolKey, 0, len(p.routes))
	for k := range p.routes {
		keys = append(keys, k)
	}
	// Least recently used last, so that a budget too small for all goes
	// to the configurations callers use.
	slices.SortFunc(keys, func(a, b poolKey) int { return p.routes[b].lastUsed.Compare(p.routes[a].lastUsed) })
routes:
	for _, k := range keys {
		r := p.routes[k]
		if !r.profile && now.Sub(r.lastUsed) > p.opts.RecentTTL {
			p.dropRouteLocked(k, r)
			continue
		}
		p.updateStateLocked(k, r, now)
		if p.shortLived(r, now) {
			for _, is := range p.idle[k] {
				soon(is.since.Add(p.maxIdleLocked(k, now))) // retire it in time
			}
		}
		need := targetOf(r) - len(p.idle[k]) - p.dialing[k]
		if need <= 0 {
			continue
		}
		if now.Before(r.next) {
			soon(r.next)
			continue
		}
		if hold := r.lastUsed.Add(p.opts.EarlyDeath); !r.proven && now.Before(hold) {
			soon(hold)
			continue
		}
		kp := p.pauses[k.cred]
		if kp != nil && now.Before(kp.until) {
			soon(kp.until)
			continue
		}
		if kp != nil && kp.level > 0 {
			if kp.probing {
				continue // the probe's end wakes the pool
			}
			need = 1
		} else {
			kp = nil
		}
		if p.br.get(k.model, k.region).cb.State() == gobreaker.StateOpen {
			continue // the tick looks again
		}
		pur := purposeStandby
		if r.profile {
			pur = purposePrewarm
		}
		for ; need > 0 && p.nIdle+len(jobs) < p.opts.MaxIdle; need-- {
			select {
			case p.slots <- struct{}{}:
			default:
				break routes // no capacity: the tick looks again
			}
			if ok, at := p.backgroundToken(now); !ok {
				<-p.slots
				soon(at)
				break routes
			}
			p.dialing[k]++
			if kp != nil {
				kp.probing = true
			}
			jobs = append(jobs, job{k, r.dial, pur, kp})
		}
	}
	p.mu.Unlock()
	for _, j := range jobs {
		p.wg.Add(1)
		go p.dialStandby(j.k, j.purpose, j.dial, j.probe)
	}
	return wakeAt
}

func (p *Pool) doneDialingLocked(k poolKey) {
	if p.dialing[k]--; p.dialing[k] <= 0 {
		delete(p.dialing, k)
	}
}

// dialStandby opens one standby session; it holds a slot already. probe,
// when not nil, is the paused key this dial probes.
func (p *Pool) dialStandby(k poolKey, pur purpose, dial dialFunc, probe *keyPause) {
	defer p.wg.Done()
	br := p.br.get(k.model, k.region)
	done, err := br.allow()
	var s session
	dialled := err == nil
	if dialled {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		s, err = p.dialOnce(ctx, k, pur, dial)
		cancel()
		if err == nil {
			done(errPending)
		} else {
			done(err)
		}
	}
	now := time.Now()
	p.mu.Lock()
	p.doneDialingLocked(k)
	if probe != nil {
		probe.probing = false
	}
	if err == nil && p.putIdleLocked(k, s) {
		p.mu.Unlock()
		return
	}
	if err != nil && dialled && p.ctx.Err() == nil {
		p.failedLocked(k, err, now, true)
	}
	p.mu.Unlock()
	if err == nil {
		p.discard(s, k.kind, "full")
		return
	}
	<-p.slots
	p.log.Debug("standby dial failed", zap.String("model", k.model), zap.Stringer("purpose", pur), zap.Error(err))
	p.wake() // its backoff or pause is scheduled by the next refill
}

// Rejection is a prewarm configuration that SLNG refused, for readiness
// detail. The pool does not dial it again until a stream uses it.
type Rejection struct {
	Kind, Model, Region string
	// Code is why: SLNG's error code (config_error, auth_error, ...),
	// http_NNN for a refused handshake, or close_NNNN.
	Code string
}

func (r Rejection) String() string {
	region := r.Region
	if region == "" {
		region = "default"
	}
	return r.Kind + " " + r.Model + " in region " + region + ": " + r.Code
}

// Rejected lists the prewarm configurations that SLNG refused and that no
// stream has used successfully since, ordered by kind and model.
func (p *Pool) Rejected() []Rejection {
	p.mu.Lock()
	var out []Rejection
	for k, r := range p.routes {
		if r.profile && r.rejected != "" {
			out = append(out, Rejection{Kind: k.kind, Model: k.model, Region: k.region, Code: r.rejected})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Rejection) int { return strings.Compare(a.String(), b.String()) })
	return out
}
