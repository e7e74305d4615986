package slngpool_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const aura = "deepgram/aura:2"

var ttsCfg = slngclient.TTSConfig{Voice: "aura-2-thalia-en", Encoding: "linear16", SampleRate: 16000}

func setup(t *testing.T, simOpts slngsim.Options, opts slngpool.Options) (*slngsim.Server, *slngpool.Pool) {
	t.Helper()
	sim := slngtest.NewServer(t, simOpts)
	key := simOpts.APIKey
	c, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), APIKey: key, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = zaptest.NewLogger(t)
	p, err := slngpool.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return sim, p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// speak runs one complete turn on the lease's session.
func speak(t *testing.T, l *slngpool.Lease[*slngclient.TTSSession], text string) {
	t.Helper()
	ctx := testCtx(t)
	if err := l.Session.Text(ctx, text, true); err != nil {
		t.Fatalf("text: %v", err)
	}
	var audio []byte
	for {
		ev, err := l.Session.Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if ev.Kind == slngclient.TTSAudio {
			audio = append(audio, ev.Audio...)
		}
		if ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	if got, err := slngsim.Decode(audio, "linear16", 16000); err != nil || got != text {
		t.Fatalf("the turn spoke %q (%v), want %q", got, err, text)
	}
}

// waitIdle waits until the pool holds n standbys.
func waitIdle(t *testing.T, p *slngpool.Pool, n int) {
	t.Helper()
	poll.Wait(t, testCtx(t), fmt.Sprintf("%d standbys (%d now)", n, p.IdleCount()), func() bool { return p.IdleCount() == n })
}

func TestReuseAfterCleanTurn(t *testing.T) {
	t.Parallel()
	sim, p := setup(t, slngsim.Options{}, slngpool.Options{RecentTTL: -1})
	ctx := testCtx(t)
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if l.Warm {
		t.Fatal("the first acquire cannot be warm")
	}
	id := l.Session.ID()
	speak(t, l, "first caller")
	l.Release(nil, true)
	waitIdle(t, p, 1)

	l2, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l2.Warm || l2.Session.ID() != id {
		t.Fatalf("warm %v, session %s; want the released session %s", l2.Warm, l2.Session.ID(), id)
	}
	speak(t, l2, "second caller")
	// A different config never gets that session.
	other := ttsCfg
	other.SampleRate = 24000
	l3, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, other)
	if err != nil {
		t.Fatal(err)
	}
	if l3.Warm {
		t.Fatal("a session served another config")
	}
	l2.Release(errors.New("stream failed"), true) // an error is never reused
	l3.Release(nil, false)
	waitIdle(t, p, 0)
	if n := sim.Stats().Connections; n != 2 {
		t.Fatalf("simulator saw %d connections, want 2", n)
	}
}

func TestPrewarmAndRecent(t *testing.T) {
	t.Parallel()
	cfg := ttsCfg
	_, p := setup(t, slngsim.Options{}, slngpool.Options{
		Prewarm: []slngpool.Profile{{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg, Count: 2}},
	})
	waitIdle(t, p, 2)
	ctx := testCtx(t)
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Warm {
		t.Fatal("a prewarmed config was not served warm")
	}
	speak(t, l, "warm from the start")
	l.Release(nil, false)
	waitIdle(t, p, 2) // the pool replaced the standby it handed out

	// A config seen once is kept warm too.
	stt := slngclient.STTConfig{Encoding: "linear16", SampleRate: 16000}
	ls, err := p.AcquireSTT(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: "deepgram/nova:3"}}, stt)
	if err != nil || ls.Warm {
		t.Fatalf("first STT acquire: warm %v, %v", ls != nil && ls.Warm, err)
	}
	ls.Release(nil, false)
	waitIdle(t, p, 3)
	ls, err = p.AcquireSTT(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: "deepgram/nova:3"}}, stt)
	if err != nil || !ls.Warm {
		t.Fatalf("second STT acquire: warm %v, %v", ls != nil && ls.Warm, err)
	}
	ls.Release(nil, false)
}

// TestKilledStandbyNeverHandedOut: the simulator cuts standby sessions
// while they sit idle. One the pool saw die is never handed out. One cut
// just before it is lent (the socket's end not read yet) is lent, as
// nothing waits for SLNG at checkout: its first message then fails, or the
// session ends before any answer, with a retryable error, on which a
// stream replays the message on another session; the pool never lends it
// again.
func TestKilledStandbyNeverHandedOut(t *testing.T) {
	t.Parallel()
	cfg := ttsCfg
	sim, p := setup(t, slngsim.Options{}, slngpool.Options{
		Prewarm: []slngpool.Profile{{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg, Count: 1}},
	})
	killed := map[string]bool{}
	for i := range 10 {
		waitIdle(t, p, 1)
		// The standby is the one open session that never spoke and was
		// not killed before (a killed one stays "open" until its handler
		// notices).
		if n := sim.Kill(func(info slngsim.SessionInfo) bool {
			if info.TurnsCompleted > 0 || killed[info.ID] {
				return false
			}
			killed[info.ID] = true
			return true
		}); n != 1 {
			t.Fatalf("killed %d sessions, want 1", n)
		}
		if i%2 == 1 {
			waitIdle(t, p, 0) // the watcher saw it, the other half of the time
		}
		ctx := testCtx(t)
		l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
		if err != nil {
			t.Fatalf("acquire after a kill: %v", err)
		}
		if killed[l.Session.ID()] {
			if i%2 == 1 {
				t.Fatal("a standby the pool saw die was handed out")
			}
			// The race a stream's replay covers.
			err := l.Session.Text(ctx, "anyone?", true)
			if err == nil {
				_, err = l.Session.Recv(ctx)
			}
			if ue, ok := slngclient.AsUpstreamError(err); !ok || !ue.Retryable {
				t.Fatalf("the cut standby's first message: %v, want a retryable error", err)
			}
			l.Release(err, false)
			if l, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg); err != nil {
				t.Fatalf("acquire after a cut standby: %v", err)
			}
			if killed[l.Session.ID()] {
				t.Fatal("a cut standby was handed out twice")
			}
		}
		speak(t, l, "still speaking")
		l.Release(nil, false)
	}
}

func TestCredentialsNeverShared(t *testing.T) {
	t.Parallel()
	sim, p := setup(t, slngsim.Options{APIKey: "gateway-key", APIKeys: []string{"caller-key"}}, slngpool.Options{RecentTTL: -1})
	ctx := testCtx(t)
	mine := slngclient.Endpoint{Model: aura, APIKey: "caller-key"}
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: mine}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	speak(t, l, "caller key")
	l.Release(nil, true)
	waitIdle(t, p, 1)

	// The gateway's own key must not get the caller's session...
	l2, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Warm {
		t.Fatal("a session opened with the caller's key served the gateway's key")
	}
	speak(t, l2, "gateway key")
	l2.Release(nil, false)
	// ...but the same caller key does.
	l3, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: mine}, ttsCfg)
	if err != nil || !l3.Warm {
		t.Fatalf("same key: warm %v, %v", l3 != nil && l3.Warm, err)
	}
	l3.Release(nil, false)
	byKey := map[string]int{}
	for _, s := range sim.Sessions() {
		byKey[s.KeyID]++
	}
	if byKey[slngsim.KeyID("caller-key")] != 1 || byKey[slngsim.KeyID("gateway-key")] != 1 {
		t.Fatalf("sessions by key: %v", byKey)
	}
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	sim, p := setup(t, slngsim.Options{Script: func(ci slngsim.ConnInfo) slngsim.Fault {
		if failing.Load() {
			return fault("handshake:503")
		}
		return slngsim.Fault{}
	}}, slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 3, BreakerOpenTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	ep := slngclient.Endpoint{Model: aura}
	for range 3 {
		_, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != 503 {
			t.Fatalf("err = %v, want the 503", err)
		}
	}
	before := sim.Stats().Rejected
	_, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	var coe *slngpool.CircuitOpenError
	if !errors.As(err, &coe) || coe.Model != aura || coe.RetryAfter <= 0 || coe.RetryAfter > 300*time.Millisecond {
		t.Fatalf("err = %v, want an open circuit", err)
	}
	if n := sim.Stats().Rejected; n != before {
		t.Fatal("the simulator was dialled while the circuit was open")
	}
	// Another model is unaffected by aura's breaker (it fails on its own).
	if _, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: "elevenlabs/eleven-flash:2.5"}}, ttsCfg); errors.As(err, &coe) {
		t.Fatal("one model's breaker refused another model")
	}

	failing.Store(false)
	// gobreaker's open timeout runs on the real clock.
	poll.Wait(t, ctx, "the breaker half-open", func() bool { return slngpool.BreakerState(p, aura, "") == gobreaker.StateHalfOpen })
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatalf("the half-open probe failed: %v", err)
	}
	speak(t, l, "recovered")
	l.Release(nil, false)
	l, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	l.Release(nil, false)
}

func TestBreakerIgnoresCallerMistakes(t *testing.T) {
	t.Parallel()
	_, p := setup(t, slngsim.Options{APIKey: "right"}, slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 2})
	ctx := testCtx(t)
	for range 5 {
		_, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura, APIKey: "wrong"}}, ttsCfg)
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != 401 {
			t.Fatalf("err = %v, want the 401", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.AcquireTTS(cctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled acquire: %v", err)
		}
	}
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura, APIKey: "right"}}, ttsCfg)
	if err != nil {
		t.Fatalf("auth failures and cancellations opened the breaker: %v", err)
	}
	l.Release(nil, false)
}

func TestRetryWithBackoff(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	sim, p := setup(t, slngsim.Options{Script: func(ci slngsim.ConnInfo) slngsim.Fault {
		if n.Add(1) <= 2 {
			return fault("handshake:502")
		}
		return slngsim.Fault{}
	}}, slngpool.Options{DisableWarm: true, BackoffBase: 10 * time.Millisecond})
	l, err := p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatalf("two retryable failures then success: %v", err)
	}
	speak(t, l, "third time")
	l.Release(nil, false)
	if sim.Stats().Rejected != 2 {
		t.Fatalf("rejected %d, want 2", sim.Stats().Rejected)
	}
	// A deadline too short for the backoff returns the failure at once:
	// a wait would hold the caller on a clock that does not move until
	// its deadline. (The backoff, 100 days with full jitter, is shorter
	// than the deadline once in ten million runs.)
	n.Store(-100)
	_, p2 := setup(t, slngsim.Options{Script: func(slngsim.ConnInfo) slngsim.Fault { return fault("handshake:503") }},
		slngpool.Options{DisableWarm: true, BackoffBase: 100 * 24 * time.Hour, BackoffMax: 100 * 24 * time.Hour, Clock: fakeClock()})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	_, err = p2.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != 503 || ctx.Err() != nil {
		t.Fatalf("err = %v (deadline %v), want the 503 before the deadline", err, ctx.Err())
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	clk := fakeClock()
	_, p := setup(t, slngsim.Options{}, slngpool.Options{MaxSessions: 2, AcquireTimeout: 100 * time.Millisecond, RecentTTL: -1, Clock: clk})
	ctx := testCtx(t)
	ep := slngclient.Endpoint{Model: aura}
	a, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	// A third caller waits AcquireTimeout for a session slot, then gives
	// up; and one that waits gets the slot a release frees.
	third := func() <-chan error {
		got := make(chan error, 1)
		go func() {
			l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
			if err == nil {
				t.Cleanup(func() { l.Release(nil, false) })
			}
			got <- err
		}()
		if err := clk.WaitArmed(ctx, 2); err != nil { // maintenance's timer and the wait's
			t.Fatal(err)
		}
		return got
	}
	got := third()
	clk.Advance(99 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("gave up before AcquireTimeout: %v", err)
	default:
	}
	clk.Advance(time.Millisecond)
	if err := <-got; !errors.Is(err, slngpool.ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	got = third()
	a.Release(nil, false)
	if err := <-got; err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	// A standby of another config gives way to a caller at the cap.
	speak(t, b, "to keep")
	b.Release(nil, true)
	waitIdle(t, p, 1)
	other := ttsCfg
	other.Voice = "aura-2-orion-en"
	d, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, other)
	if err != nil {
		t.Fatalf("the standby was not evicted for a caller: %v", err)
	}
	if p.IdleCount() != 0 {
		t.Fatal("the standby is still there")
	}
	d.Release(nil, false)
}

func fault(spec string) slngsim.Fault {
	_, f, err := slngsim.ParseFault("*=" + spec)
	if err != nil {
		panic(err)
	}
	return f
}

// TestBlackHoleOpensBreaker: against an upstream that accepts TCP and
// never answers, each dial ends at the handshake timeout as SLNG being
// unwell, and after BreakerFailures of them the breaker is open: the next
// caller gets *CircuitOpenError at once, and nothing more is dialled.
func TestBlackHoleOpensBreaker(t *testing.T) {
	t.Parallel()
	url, accepted := slngtest.BlackHole(t)
	c, err := slngclient.New(slngclient.Options{BaseURL: url, APIKey: "k", HandshakeTimeout: 100 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := slngpool.New(c, slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 3, BreakerOpenTimeout: time.Minute, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for i := range 3 {
		_, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTimeout {
			t.Fatalf("dial %d: err = %v, want KindTimeout", i+1, err)
		}
	}
	_, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	var coe *slngpool.CircuitOpenError
	if !errors.As(err, &coe) {
		t.Fatalf("after 3 hung handshakes: err = %v, want *CircuitOpenError", err)
	}
	// The black hole counts a connection once it accepts it, which may
	// come a little after the dial's TCP handshake (the kernel's backlog),
	// and on a busy machine a dial's 100 ms may run out before its TCP
	// connect was even made: what matters is that nothing more comes.
	wait, cancelWait := context.WithTimeout(ctx, 2*time.Second)
	defer cancelWait()
	_ = poll.Until(wait, time.Millisecond, func() bool { return accepted() >= 3 })
	if n := accepted(); n < 1 || n > 3 {
		t.Fatalf("connections to the black hole = %d, want 1 to 3", n)
	}
}
