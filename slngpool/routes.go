package slngpool

import (
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

const (
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
// again. A configuration of a caller's own SLNG key is never remembered:
// the pool dials with a caller's key only while that caller waits, never
// on its own after the caller has gone (a clean session of it may still
// be kept for the caller's next stream, which is no dial).
func (p *Pool) noteUse(k poolKey, dial dialFunc, res useResult, err error) {
	now := p.now()
	p.mu.Lock()
	r := p.routes[k]
	wake := false
	if r == nil && k.own && !p.opts.DisableWarm && p.opts.RecentTTL >= 0 && p.roomLocked() {
		r = p.addRouteLocked(k, dial)
		wake = true
	}
	if r != nil {
		if len(r.uses) == useWindow {
			r.uses = append(r.uses[:0], r.uses[1:]...)
		}
		r.uses = append(r.uses, now)
		r.lastUsed = now
		wake = wake || r.stopped
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
		// Maintenance runs only when this use may change what it would
		// do: not on every acquire under load.
		wake = wake || len(p.idle[k])+p.dialing[k] < targetOf(r)
	}
	p.mu.Unlock()
	if wake {
		p.wake()
	}
}

// succeededLocked records that a session of k worked: a stream ended well
// or a standby lived out its age. The configuration's backoff
// and its key's signals are forgotten.
func (p *Pool) succeededLocked(k poolKey) {
	if r := p.routes[k]; r != nil {
		r.fails, r.next, r.stopped, r.rejected, r.proven = 0, time.Time{}, false, "", true
		p.updateStateLocked(k, r, p.now())
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
		switch ue.Class().Category {
		case slngclient.CategoryRateLimited:
			return "rate_limit"
		case slngclient.CategoryAuth:
			return "auth"
		case slngclient.CategoryExpired: // idle, or the maximum duration
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

// standbyDied closes a standby that died before any caller used it and
// learns from it. A death is SLNG failing, for the configuration's backoff
// and for its breaker, except that SLNG reaping an idle standby teaches
// the configuration's idle lifetime instead of backing it off, and counts
// against the breaker only until that lifetime is known. (A standby that
// failed its proof of life after it was lent is settleProof's.)
func (p *Pool) standbyDied(is *idleSession, err error) {
	k := is.key
	life := p.now().Sub(is.since)
	cause := deathCause(err)
	p.discard(is.s, k, "spoiled")
	p.m.deaths.WithLabelValues(k.kind, cause).Inc()
	p.m.lifetime.WithLabelValues(k.kind).Observe(life.Seconds())
	now := is.since.Add(life)
	learned, known := false, false
	p.mu.Lock()
	if r := p.routes[k]; r != nil && slngclient.Reaped(err) && life >= minLearnedLife {
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
		p.br.get(k.model, k.region).reportDeath(err)
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
