package slngpool

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

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

// unwatch stops the watcher and waits for it, after which spoiled and err
// are final and the session is the caller's alone.
func (is *idleSession) unwatch() {
	is.stop()
	<-is.watched
}

// takeWarm returns a standby session of k that is still good, or nil,
// and whether it was lent with a proof of life pending (proof.go). Dead
// and aged standbys are closed on the way; that costs the caller no
// retry. Nothing here waits for SLNG: a standby's first message is never
// held behind a round trip.
func (p *Pool) takeWarm(k poolKey) (session, bool) {
	if p.opts.DisableWarm {
		return nil, false
	}
	p.sweepProofs(k)
	for {
		p.mu.Lock()
		list := p.idle[k]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil, false
		}
		is := list[len(list)-1]
		p.removeIdleLocked(is)
		maxAge := p.maxIdleLocked(k, p.now())
		p.mu.Unlock()

		is.unwatch()
		switch {
		case is.spoiled:
			p.standbyDied(is, is.err)
			continue
		case isDone(is.s):
			p.standbyDied(is, is.s.Err())
			continue
		case p.aged(is, p.now(), maxAge):
			p.retire(is)
			continue
		}
		// The watcher sees a close as soon as the socket reports it; a
		// peer that vanished silently only shows up on a round trip.
		return is.s, p.lendProving(k, is.s)
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

// putIdleLocked makes s a standby of k and starts its watcher, or reports
// false when there is no room.
func (p *Pool) putIdleLocked(k poolKey, s session) bool {
	if p.closed || p.staleLocked(k) || len(p.idle[k]) >= p.opts.MaxIdlePerKey || p.nIdle >= p.opts.MaxIdle {
		return false
	}
	wctx, stop := context.WithCancel(p.ctx)
	is := &idleSession{key: k, s: s, since: p.now(), stop: stop, watched: make(chan struct{})}
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
	default: // a session with no events to read (a test's): its end spoils it
		select {
		case <-s.Done():
			if err = s.Err(); err == nil {
				err = io.EOF
			}
		case <-ctx.Done():
			err = ctx.Err()
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
		p.standbyDied(is, err)
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
	return p.evictOldest(func(poolKey) bool { return true })
}

// evictOldest closes the longest-idle standby whose key matches.
func (p *Pool) evictOldest(match func(poolKey) bool) bool {
	p.mu.Lock()
	var oldest *idleSession
	for k, list := range p.idle {
		if len(list) > 0 && match(k) && (oldest == nil || list[0].since.Before(oldest.since)) {
			oldest = list[0]
		}
	}
	if oldest == nil {
		p.mu.Unlock()
		return false
	}
	p.removeIdleLocked(oldest)
	p.mu.Unlock()
	oldest.unwatch()
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
	t := p.opts.Clock.NewTimer(tick)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C():
		case <-p.kick:
		}
		p.passesBegun.Add(1)
		p.retireAged()
		next := tick
		if at := p.refill(); !at.IsZero() {
			next = min(next, max(at.Sub(p.now()), time.Millisecond))
		}
		t.Reset(next)
		p.passesEnded.Add(1)
	}
}

func (p *Pool) retireAged() {
	var old []*idleSession
	now := p.now()
	p.mu.Lock()
	for k, list := range p.idle {
		maxAge := p.maxIdleLocked(k, now)
		for _, is := range list {
			if p.aged(is, now, maxAge) {
				old = append(old, is)
			}
		}
	}
	for _, is := range old {
		p.removeIdleLocked(is)
	}
	p.mu.Unlock()
	for _, is := range old {
		is.unwatch()
		if is.spoiled {
			p.standbyDied(is, is.err)
			continue
		}
		p.retire(is)
	}
}

// aged reports a standby that may no longer be handed out at now: idle
// longer than maxAge, or older than MaxSessionAge.
func (p *Pool) aged(is *idleSession, now time.Time, maxAge time.Duration) bool {
	return now.Sub(is.since) > maxAge || p.tooOld(is.s, now)
}

// tooOld reports a session older than MaxSessionAge at now.
func (p *Pool) tooOld(s session, now time.Time) bool {
	return now.Sub(s.Stats().ReadyAt) > p.opts.MaxSessionAge
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

// IdleCount reports the standby sessions held, for tests and logs.
func (p *Pool) IdleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nIdle
}
