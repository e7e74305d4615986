package slngpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// The pool's policies over time (back-off, stopping, learning how long
// SLNG lets a standby idle, keeping dials in flight within MaxIdle) are
// tested here on a fake clock, against sessions that are the test's own:
// each step of time is the test's, and so is every end of a session. The
// tests against the simulator, in the other files, are the same pool
// end to end.

// fakeSession is a session whose end the test decides.
type fakeSession struct {
	id    string
	ready time.Time
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error
	lent  bool // handed to a caller: SLNG does not reap it for idling
}

func (s *fakeSession) ID() string              { return s.id }
func (s *fakeSession) Done() <-chan struct{}   { return s.done }
func (s *fakeSession) Heard() time.Time        { return s.ready }
func (s *fakeSession) ProveLife(time.Duration) {}
func (s *fakeSession) LifeUnproven() bool      { return false }
func (s *fakeSession) CloseNow()               { s.end(errClosedHere) }
func (s *fakeSession) Stats() slngclient.Stats { return slngclient.Stats{ReadyAt: s.ready} }
func (s *fakeSession) isLent() bool            { s.mu.Lock(); defer s.mu.Unlock(); return s.lent }
func (s *fakeSession) setLent()                { s.mu.Lock(); s.lent = true; s.mu.Unlock() }
func (s *fakeSession) Err() error              { s.mu.Lock(); defer s.mu.Unlock(); return s.err }
func (s *fakeSession) ended() bool             { return isDone(s) }
func (s *fakeSession) String() string          { return "fake session " + s.id }
func (s *fakeSession) end(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	})
}

// errClosedHere ends a session the pool closed itself.
var errClosedHere = errors.New("closed by the pool")

// errDropped is SLNG dropping a session: a transport failure, unwell.
var errDropped = &slngclient.UpstreamError{Kind: slngclient.KindTransport, CloseCode: 1006, Retryable: true, Message: "dropped"}

// fakeUpstream dials fakeSessions, ready at the pool's fake time.
type fakeUpstream struct {
	clk *clock.Fake

	mu       sync.Mutex
	sessions []*fakeSession
	// drop, when set, ends every new session at once, right after ready.
	drop bool
	// hold, when not nil, holds every dial until it is closed.
	hold chan struct{}
}

func (u *fakeUpstream) dial(ctx context.Context) (session, error) {
	u.mu.Lock()
	hold := u.hold
	u.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	s := &fakeSession{id: fmt.Sprint(len(u.sessions) + 1), ready: u.clk.Now(), done: make(chan struct{})}
	u.sessions = append(u.sessions, s)
	if u.drop {
		s.end(errDropped)
	}
	return s, nil
}

// dials is the number of sessions dialled.
func (u *fakeUpstream) dials() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sessions)
}

// reapIdle ends, as SLNG does, every session never lent that has been
// open life or longer, and returns how many.
func (u *fakeUpstream) reapIdle(life time.Duration) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.sessions {
		if !s.ended() && !s.isLent() && !u.clk.Now().Before(s.ready.Add(life)) {
			s.end(io.EOF) // a normal close of an idle session: a reap
			n++
		}
	}
	return n
}

// fakePool is a pool on a fake clock whose configuration k dials up.
type fakePool struct {
	*Pool
	clk *clock.Fake
	up  *fakeUpstream
	reg *prometheus.Registry
	k   poolKey
	ctx context.Context
}

func newFakePool(t *testing.T, opts Options) *fakePool {
	t.Helper()
	client, err := slngclient.New(slngclient.Options{BaseURL: "ws://127.0.0.1:9"}) // never dialled
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePool{clk: clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), reg: prometheus.NewRegistry()}
	f.up = &fakeUpstream{clk: f.clk}
	opts.Clock, opts.Logger, opts.Metrics = f.clk, zaptest.NewLogger(t), NewMetrics(f.reg)
	if opts.CheckoutPingTimeout == 0 {
		opts.CheckoutPingTimeout = -1 // the proofs of life are proof_test.go's
	}
	if f.Pool, err = New(client, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.k = f.key("tts", slngclient.Endpoint{Model: "deepgram/aura:2"}, slngclient.TTSConfig{Voice: "aura-2-thalia-en"})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	f.ctx = ctx
	return f
}

// caller acquires a session of k as a stream does and marks it lent.
func (f *fakePool) caller(t *testing.T) *lease {
	t.Helper()
	l, err := f.acquire(f.ctx, f.k, Request{Endpoint: slngclient.Endpoint{Model: f.k.model}}, f.up.dial)
	if err != nil {
		t.Fatal(err)
	}
	l.s.(*fakeSession).setLent()
	return l
}

// step moves the clock d on and waits until the pool has acted on it and
// its background dials are done.
func (f *fakePool) step(t *testing.T, d time.Duration) {
	t.Helper()
	f.clk.Advance(d)
	f.settle(t)
}

func (f *fakePool) settle(t *testing.T) {
	t.Helper()
	if err := Settle(f.ctx, f.Pool); err != nil {
		t.Fatalf("settle: %v", err)
	}
	poll.Wait(t, f.ctx, "the background dials", func() bool { return InFlight(f.Pool) == 0 })
}

// route reads what the pool keeps of k.
func (f *fakePool) route() (state string, fails int, life time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.routes[f.k]
	if r == nil {
		return "", 0, 0
	}
	return r.state, r.fails, r.life
}

func (f *fakePool) counter(c *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(c.WithLabelValues(labels...))
}

// TestBackgroundDialsBackOffAndStop: standbys of a configuration whose
// sessions SLNG drops right after ready are retried after a back-off and
// stopped after StandbyFailures, however long nothing else happens, until
// a caller uses the configuration again and it works.
func TestBackgroundDialsBackOffAndStop(t *testing.T) {
	t.Parallel()
	f := newFakePool(t, Options{
		StandbyBackoffBase: 20 * time.Millisecond, StandbyBackoffMax: 80 * time.Millisecond,
		StandbyFailures: 3, BreakerFailures: 100,
		EarlyDeath: 100 * time.Millisecond, // the wait of a configuration not yet proven
	})
	f.up.drop = true
	l := f.caller(t)
	f.release(l, errDropped, false)
	f.settle(t)
	if n := f.up.dials(); n != 1 {
		t.Fatalf("%d dials before any back-off ended, want the caller's", n)
	}
	// Each step ends the back-off (and the wait for proof) at most; each
	// standby dialled dies at once.
	for i := 0; ; i++ {
		if state, _, _ := f.route(); state == stateStopped {
			break
		}
		if i == 10 {
			t.Fatalf("not stopped after %d steps: %d dials", i, f.up.dials())
		}
		f.step(t, 100*time.Millisecond)
		poll.Wait(t, f.ctx, "each failure counted", func() bool { _, fails, _ := f.route(); return fails == f.up.dials() })
	}
	// The caller's failure, then two standbys that died: three.
	if n := f.up.dials(); n != 3 {
		t.Errorf("%d dials, want the caller's and two standbys", n)
	}
	if got := f.counter(f.m.deaths, "tts", "dropped"); got != 2 {
		t.Errorf("standby deaths = %v, want 2", got)
	}
	for range 20 { // many times the longest back-off
		f.step(t, 100*time.Millisecond)
	}
	if n := f.up.dials(); n != 3 {
		t.Fatalf("%d dials after the configuration stopped", n-3)
	}

	// A caller brings it back, and once it works, a standby follows.
	f.up.mu.Lock()
	f.up.drop = false
	f.up.mu.Unlock()
	f.release(f.caller(t), nil, false)
	f.settle(t)
	if state, _, _ := f.route(); state != stateKeep || f.IdleCount() != 1 {
		t.Errorf("state %s with %d standbys, want keep with 1", state, f.IdleCount())
	}
}

// TestShortLivedRouteLearnt: on a route where SLNG ends a session that
// sits idle 1.2 s, the pool learns the lifetime from the first standby that
// dies, keeps none while callers are rare, refreshes one within the
// lifetime while they come every 100 ms (retiring each at 60% of it, before
// SLNG would), and keeps none again once they stop: no other standby dies.
func TestShortLivedRouteLearnt(t *testing.T) {
	t.Parallel()
	const life = 1200 * time.Millisecond
	f := newFakePool(t, Options{})
	f.release(f.caller(t), nil, false)
	f.settle(t)
	if f.IdleCount() != 1 {
		t.Fatalf("%d standbys after a caller, want 1", f.IdleCount())
	}
	f.clk.Advance(life)
	if n := f.up.reapIdle(life); n != 1 {
		t.Fatalf("SLNG reaped %d sessions, want the standby", n)
	}
	poll.Wait(t, f.ctx, "the lifetime learnt", func() bool { _, _, l := f.route(); return l > 0 })
	f.settle(t)
	if state, _, learnt := f.route(); state != stateNone || learnt != life {
		t.Fatalf("state %s, lifetime %s; want none and %s", state, learnt, life)
	}

	hits := 0
	for i := range 30 {
		f.step(t, 100*time.Millisecond)
		if n := f.up.reapIdle(life); n != 0 {
			t.Fatalf("caller %d: SLNG reaped %d standbys", i, n)
		}
		l := f.caller(t)
		if l.warm {
			hits++
			if age := f.clk.Now().Sub(l.s.Stats().ReadyAt); age > life*6/10 {
				t.Errorf("caller %d got a standby %s old, past 60%% of the lifetime", i, age)
			}
		}
		f.release(l, nil, false)
		f.settle(t)
	}
	// Past the background dial rate's burst (5 a second, 10 at once), a
	// standby follows every other caller.
	if hits < 20 {
		t.Errorf("%d of 30 callers got a standby", hits)
	}
	if state, _, _ := f.route(); state != stateRefresh {
		t.Errorf("state %s while callers come every 100 ms, want refresh", state)
	}
	// Callers stop: once the rate seen over the last 8 callers and the
	// silence since make a standby more likely wasted than used, the pool
	// keeps none again.
	for i := 0; ; i++ {
		if state, _, _ := f.route(); state == stateNone && f.IdleCount() == 0 {
			break
		}
		if i == 300 {
			t.Fatal("still keeping a standby 30 s after the last caller")
		}
		f.step(t, 100*time.Millisecond)
		if n := f.up.reapIdle(life); n != 0 {
			t.Fatalf("SLNG reaped %d standbys after the callers stopped", n)
		}
	}
	f.step(t, life)
	if n := f.up.reapIdle(life); n != 0 {
		t.Fatalf("SLNG reaped %d standbys", n)
	}
	if got := f.counter(f.m.deaths, "tts", "closed"); got != 1 {
		t.Errorf("standby deaths = %v, want only the one that taught the lifetime", got)
	}
	if got := f.counter(f.m.acquires, "tts", "hit"); got != float64(hits) {
		t.Errorf("hits counted = %v, want %d", got, hits)
	}
	if got := f.counter(f.m.acquires, "tts", "miss"); got != float64(31-hits) {
		t.Errorf("misses counted = %v, want %d", got, 31-hits)
	}
}

// TestRefillCountsDialsInFlight: with room for one standby and two
// configurations to keep warm, a standby still being dialled fills the
// room: maintenance passes during the slow dial do not dial the other
// configuration as well, only to close it as soon as it is ready.
func TestRefillCountsDialsInFlight(t *testing.T) {
	t.Parallel()
	f := newFakePool(t, Options{MaxIdle: 1})
	f.up.hold = make(chan struct{})
	other := f.key("tts", slngclient.Endpoint{Model: f.k.model}, slngclient.TTSConfig{Voice: "aura-2-orion-en"})
	f.mu.Lock()
	for _, k := range []poolKey{f.k, other} {
		r := f.addRouteLocked(k, f.up.dial)
		r.profile, r.proven = true, true
	}
	f.mu.Unlock()
	if err := Settle(f.ctx, f.Pool); err != nil {
		t.Fatal(err)
	}
	for range 5 { // maintenance passes (one a second) while the dial hangs
		if n := InFlight(f.Pool); n != 1 {
			t.Fatalf("%d dials in flight for room for one standby, want 1", n)
		}
		f.clk.Advance(time.Second)
		if err := Settle(f.ctx, f.Pool); err != nil {
			t.Fatal(err)
		}
	}
	close(f.up.hold)
	f.settle(t)
	if n, idle := f.up.dials(), f.IdleCount(); n != 1 || idle != 1 {
		t.Fatalf("%d dials and %d standbys, want 1 and 1", n, idle)
	}
}
