package slngpool

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Purpose is why a dial is made. Only caller and rollover dials have a
// stream waiting on them; standby and prewarm dials are the pool's own and
// go through its background budget.
type Purpose int

const (
	// PurposeCaller: a stream waits for its first session.
	PurposeCaller Purpose = iota
	// PurposeRollover: a running stream replaces its session. It is
	// dialled exactly like a caller's and labelled rollover in the
	// metrics.
	PurposeRollover
	purposeStandby
	purposePrewarm
)

func (p Purpose) String() string {
	switch p {
	case PurposeRollover:
		return "rollover"
	case purposeStandby:
		return "standby"
	case purposePrewarm:
		return "prewarm"
	}
	return "caller"
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
)

// keyPause pauses the pool's own dials for one SLNG key after SLNG
// rate-limited or refused it.
type keyPause struct {
	until time.Time
	// level counts the signals since the key last worked; while it is
	// above 0, a pause that has ended lets one dial through at a time.
	level   int
	probing bool
}

// keySignal reports what err says of the SLNG key: rate_limit, http_429,
// auth, or retry_after (any other refusal with a Retry-After), and how long
// SLNG asked to wait, if it did.
func keySignal(err error) (string, time.Duration) {
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return "", 0
	}
	switch cat := ue.Class().Category; {
	case cat == slngclient.CategoryRateLimited && ue.Kind == slngclient.KindHandshake:
		return "http_429", ue.RetryAfter
	case cat == slngclient.CategoryRateLimited:
		return "rate_limit", ue.RetryAfter
	case cat == slngclient.CategoryAuth:
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
	now := p.now()
	var wakeAt time.Time
	soon := func(t time.Time) {
		if wakeAt.IsZero() || t.Before(wakeAt) {
			wakeAt = t
		}
	}
	type job struct {
		k       poolKey
		dial    dialFunc
		purpose Purpose
		probe   *keyPause
	}
	var jobs []job
	p.mu.Lock()
	p.prunePausesLocked(now, false)
	// Standbys still being dialled count against MaxIdle too: without
	// them, a refill during a slow dial would dial past it, and the extra
	// session would be closed as soon as it was ready.
	inFlight := 0
	for _, n := range p.dialing {
		inFlight += n
	}
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
		if (!r.profile && now.Sub(r.lastUsed) > p.opts.RecentTTL) || p.staleLocked(k) {
			// A stale key: an acquire that began before KeyChanged added
			// it; the route lives on under the new key.
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
		for ; need > 0 && p.nIdle+inFlight+len(jobs) < p.opts.MaxIdle; need-- {
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

// dialStandby opens one standby session; it holds a slot already, and
// takes the Budget's session first. probe, when not nil, is the paused key
// this dial probes.
func (p *Pool) dialStandby(k poolKey, pur Purpose, dial dialFunc, probe *keyPause) {
	defer p.wg.Done()
	if !p.spareBudget(k) {
		p.mu.Lock()
		p.doneDialingLocked(k)
		if probe != nil {
			probe.probing = false
		}
		p.mu.Unlock()
		<-p.slots
		p.log.Debug("standby not dialled", zap.String("model", k.model), zap.Error(errBudgetSkip))
		return // the tick looks again
	}
	br := p.br.get(k.model, k.region)
	done, err := br.allow()
	var s session
	dialled := err == nil
	var cdone func(error)
	if dialled {
		if cdone, err = p.allowConfig(k); err != nil {
			done(errConfigOnly{err})
			dialled = false
		}
	}
	if dialled {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		s, err = p.dialOnce(ctx, k, pur, dial)
		cancel()
		cdone(err)
		if err == nil {
			done(errPending)
		} else {
			p.br.outcome(k, br, done, err, false)
		}
	}
	now := p.now()
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
	var coe *CircuitOpenError
	if r := p.routes[k]; r != nil && !dialled && errors.As(err, &coe) {
		// The breaker refused (half-open, its probe in flight): look again
		// when it may let one through, not at the next wake, which would
		// spend a background token on another refusal at once.
		r.next = now.Add(max(coe.RetryAfter, time.Second))
	}
	p.mu.Unlock()
	if err == nil {
		p.discard(s, k, "full")
		return
	}
	p.freeSlot(k)
	p.log.Debug("standby dial failed", zap.String("model", k.model), zap.Stringer("purpose", pur), zap.Error(err))
	p.wake() // its backoff or pause is scheduled by the next refill
}
