package slngpool

import (
	"slices"
	"time"

	"go.uber.org/zap"
)

// A standby is lent at once; nothing waits for SLNG before its first
// message. One that SLNG was heard from on (a frame or a pong) within
// HeardWithin is lent as it is. Any other has sat idle long enough to have
// lost its peer without a FIN (a NAT or load balancer that forgot the
// connection), which only a round trip shows: it proves SLNG is there
// beside its first message (slngclient's ProveLife), and a session whose
// pong, or any frame, does not come within CheckoutPingTimeout ends with a
// retryable error before any answer, on which the stream replays its turn
// on another session. Such a caller pays the timeout and a dial, not its
// turn timeout, and a healthy standby costs its caller one round trip, not
// two.
//
// The pool learns that a lent standby failed its proof when the
// configuration is next acquired (the stream's replacement, usually,
// before it releases the failed one) or at the release, whichever comes
// first. The standby died unused, as a standby that failed the checkout
// ping always did; and the configuration's other standbys that SLNG was
// not heard from on since it was lent are dropped (reason suspect): what
// cut one silently has likely cut them too, and each would cost its
// caller the timeout again.

// lent is a standby lent with a proof of life pending, and when.
type lent struct {
	s  session
	at time.Time
}

// lendProving arms the proof of life of s, a standby of k being lent, when
// it needs one, and reports whether it does.
func (p *Pool) lendProving(k poolKey, s session) bool {
	if p.opts.CheckoutPingTimeout <= 0 || p.now().Sub(s.Heard()) <= p.opts.HeardWithin {
		return false
	}
	s.ProveLife(p.opts.CheckoutPingTimeout)
	p.mu.Lock()
	p.proving[k] = append(p.proving[k], lent{s: s, at: p.now()})
	p.mu.Unlock()
	return true
}

// sweepProofs settles the proofs of k's lent standbys whose sessions have
// ended, before another standby of k is lent.
func (p *Pool) sweepProofs(k poolKey) {
	p.mu.Lock()
	var ended []session
	for _, l := range p.proving[k] {
		if isDone(l.s) {
			ended = append(ended, l.s)
		}
	}
	p.mu.Unlock()
	for _, s := range ended {
		p.settleProof(k, s)
	}
}

// settleProof takes s, a standby of k lent with a proof pending, off the
// proving list. The first to do so, when the proof failed, records the
// standby's death and drops the configuration's suspect standbys. The
// session itself is the lease's: its release closes it and reports its
// error to the breaker.
func (p *Pool) settleProof(k poolKey, s session) {
	p.mu.Lock()
	list := p.proving[k]
	i := slices.IndexFunc(list, func(l lent) bool { return l.s == s })
	if i < 0 {
		p.mu.Unlock()
		return
	}
	lentAt := list[i].at
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(p.proving, k)
	} else {
		p.proving[k] = list
	}
	if !s.LifeUnproven() {
		p.mu.Unlock()
		return
	}
	p.failedLocked(k, s.Err(), p.now(), false)
	var suspects []*idleSession
	for _, is := range p.idle[k] {
		if is.s.Heard().Before(lentAt) {
			suspects = append(suspects, is)
		}
	}
	for _, is := range suspects {
		p.removeIdleLocked(is)
	}
	p.mu.Unlock()
	p.m.discards.WithLabelValues(k.kind, "ping").Inc()
	p.m.deaths.WithLabelValues(k.kind, "ping").Inc()
	p.log.Debug("a lent standby failed its proof of life", zap.String("model", k.model),
		zap.Int("suspects_dropped", len(suspects)), zap.Error(s.Err()))
	for _, is := range suspects {
		is.unwatch()
		p.discard(is.s, is.key, "suspect")
	}
	p.wake()
}
