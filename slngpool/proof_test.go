package slngpool_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// proxiedRig is a pool that reaches its simulator through a proxy whose
// connections can vanish without a FIN, and keeps count standbys of
// ttsCfg warm.
func proxiedRig(t *testing.T, simOpts slngsim.Options, opts slngpool.Options, count int) (*rig, *slngtest.Proxy) {
	t.Helper()
	r := &rig{reg: prometheus.NewRegistry(), sim: slngtest.NewServer(t, simOpts)}
	proxy := slngtest.NewProxy(t, r.sim.URL())
	c, err := slngclient.New(slngclient.Options{BaseURL: proxy.URL(), PingInterval: -1, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = zaptest.NewLogger(t)
	opts.Metrics = slngpool.NewMetrics(r.reg)
	opts.MaxIdlePerKey = max(opts.MaxIdlePerKey, count)
	if r.p, err = slngpool.New(c, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.p.Close)
	cfg := ttsCfg
	if err := r.p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg, Count: count}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, r.p, count)
	return r, proxy
}

// TestStandbyFirstTextLeavesBeforeAnyPing: a standby not heard from within
// HeardWithin is lent at once and proves itself beside its first text: the
// simulator receives the text before any ping, so answers none before it.
// One heard from just now is lent with no ping at all.
func TestStandbyFirstTextLeavesBeforeAnyPing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		heardWithin time.Duration
		pings       int
	}{
		{"not heard from lately: proved beside the text", -1, 1},
		{"heard from just now: no ping", time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := proxiedRig(t, slngsim.Options{Latency: 10 * time.Millisecond},
				slngpool.Options{HeardWithin: tc.heardWithin, CheckoutPingTimeout: 5 * time.Second}, 1)
			ctx := testCtx(t)
			l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
			if err != nil {
				t.Fatal(err)
			}
			if !l.Warm {
				t.Fatal("the standby did not serve the acquire")
			}
			speak(t, l, "First text first.")
			if tc.pings > 0 {
				if err := poll.Until(ctx, 5*time.Millisecond, func() bool {
					return l.Session.Stats().PingsSent == 1 && standbyInfo(r.sim, l.Session.ID()).Pings == 1
				}); err != nil {
					t.Fatalf("no proof's ping: %v", err)
				}
			}
			info := standbyInfo(r.sim, l.Session.ID())
			if info.Pings != tc.pings || info.PingsBeforeData != 0 {
				t.Errorf("the simulator answered %d pings, %d before the first text; want %d, none before it", info.Pings, info.PingsBeforeData, tc.pings)
			}
			l.Release(nil, true)
		})
	}
}

// TestVanishedStandbysFailTheirProof: standbys whose peer vanished without
// a FIN are lent at once; the first one's session ends when its proof
// fails, with a retryable error, and the pool then drops the other one,
// not heard from since, rather than lend it to the replacement (which
// gets a new session, dialled or a fresh standby).
func TestVanishedStandbysFailTheirProof(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	r, proxy := proxiedRig(t, slngsim.Options{}, slngpool.Options{HeardWithin: -1, CheckoutPingTimeout: timeout}, 2)
	if n := proxy.Freeze(); n != 2 {
		t.Fatalf("froze %d connections, want the 2 standbys'", n)
	}
	vanished := map[string]bool{}
	for _, s := range r.sim.Sessions() {
		vanished[s.ID] = true
	}
	ctx := testCtx(t)
	l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Warm {
		t.Fatal("the standby did not serve the acquire")
	}
	if err := l.Session.Text(ctx, "Is anyone there?", true); err != nil {
		t.Fatalf("text: %v", err)
	}
	_, err = l.Session.Recv(ctx)
	if ue, ok := slngclient.AsUpstreamError(err); !ok || !ue.Retryable || !l.Session.LifeUnproven() {
		t.Fatalf("Recv = %v, LifeUnproven %v; want a retryable end of an unproven session", err, l.Session.LifeUnproven())
	}

	// The replacement, before the failed lease is released.
	l2, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if vanished[l2.Session.ID()] {
		t.Error("the replacement got the other vanished standby")
	}
	speak(t, l2, "A new session answers.")
	l.Release(err, false)
	l2.Release(nil, false)
	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"speech_gateway_pool_standby_deaths_total", "cause", "ping", 1},
		{"speech_gateway_pool_discards_total", "reason", "ping", 1},
		{"speech_gateway_pool_discards_total", "reason", "suspect", 1},
	} {
		if got := r.metric(t, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, m.want)
		}
	}
}

// standbyInfo is the simulator's record of session id.
func standbyInfo(sim *slngsim.Server, id string) slngsim.SessionInfo {
	for _, s := range sim.Sessions() {
		if s.ID == id {
			return s
		}
	}
	return slngsim.SessionInfo{}
}
