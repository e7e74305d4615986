package slngpool

import (
	"sync"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Lease is a session of type S (*slngclient.TTSSession or
// *slngclient.STTSession) lent to one caller; Release returns it.
type Lease[S Session] struct {
	// Session is the leased session.
	Session S
	// Warm reports that a standby session served the acquire.
	Warm bool
	l    *lease
}

// Session is the type of session a Lease holds.
type Session interface {
	*slngclient.TTSSession | *slngclient.STTSession
}

// lease is the pool's record of a lent session.
type lease struct {
	p    *Pool
	key  poolKey
	br   *breaker
	s    session
	warm bool
	// proving: the session was lent with a proof of life pending (see
	// proof.go).
	proving bool
	once    sync.Once
}

// Release ends the lease. err is why the stream ended, nil if it ended
// well; upstream failures count against the breaker. reusable says that
// the session is quiescent, with every turn complete and the socket open;
// the pool then keeps it as a standby when there is room. Otherwise, or
// when the caller has already closed it, the session is closed. Release
// may be called more than once; only the first call counts.
func (l *Lease[S]) Release(err error, reusable bool) {
	l.l.once.Do(func() { l.l.p.release(l.l, err, reusable) })
}

func (p *Pool) release(l *lease, err error, reusable bool) {
	p.m.inUse.WithLabelValues(l.key.kind).Dec()
	if l.proving {
		p.settleProof(l.key, l.s)
	}
	now := p.now()
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
		// A standby that failed its proof of life was recorded as one
		// that died unused (settleProof), however young.
		early := upstream && now.Sub(l.s.Stats().ReadyAt) < p.opts.EarlyDeath && !l.s.LifeUnproven()
		switch {
		case early && atInit(err, true):
			// SLNG ended a session right after ready: its configuration
			// (a voice the provider refuses), or SLNG failing, whatever
			// the close code says.
			p.br.outcome(l.key, l.br, nil, err, true)
		case counted(err):
			l.br.report(err)
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
		if l.warm {
			l.br.reportOK() // its dial was not counted yet: see errPending
		}
		p.br.configWorked(l.key)
		p.mu.Lock()
		p.succeededLocked(l.key)
		p.mu.Unlock()
	}
	if err != nil || !reusable || p.opts.DisableWarm || isDone(l.s) ||
		p.tooOld(l.s, now) || !p.keepBudget(l.key) {
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
