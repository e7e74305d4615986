package slngpool_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

const flash = "elevenlabs/eleven-flash:2.5"

// rig is a pool on a simulator, with the pool's metrics and logs at hand
// and the simulator's sessions counted per model.
type rig struct {
	sim   *slngsim.Server
	p     *slngpool.Pool
	reg   *prometheus.Registry
	logs  *observer.ObservedLogs
	count *sessionCounter
	clk   *clock.Fake // the pool's clock, when the test moves it
}

// newRig starts a simulator that injects faults[model] (or faults["*"])
// into every connection while healthy is false, and a pool on it.
func newRig(t *testing.T, simOpts slngsim.Options, faults map[string]string, healthy *atomic.Bool, opts slngpool.Options) *rig {
	t.Helper()
	r := &rig{reg: prometheus.NewRegistry(), count: &sessionCounter{n: map[string]int{}}}
	parsed := map[string]slngsim.Fault{}
	for m, spec := range faults {
		parsed[m] = fault(spec)
	}
	simOpts.Script = func(ci slngsim.ConnInfo) slngsim.Fault {
		r.count.script(slngsim.Fault{})(ci)
		if healthy != nil && healthy.Load() {
			return slngsim.Fault{}
		}
		if f, ok := parsed[ci.Model]; ok {
			return f
		}
		return parsed["*"]
	}
	r.sim = slngtest.NewServer(t, simOpts)
	c, err := slngclient.New(slngclient.Options{BaseURL: r.sim.URL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var core zapcore.Core
	core, r.logs = observer.New(zapcore.InfoLevel)
	opts.Logger = zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	opts.Metrics = slngpool.NewMetrics(r.reg)
	r.clk, _ = opts.Clock.(*clock.Fake)
	r.p, err = slngpool.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.p.Close)
	return r
}

// metric sums the samples of the metric name whose labels include the
// given name and value pairs: counter and gauge values, histogram counts.
func (r *rig) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// fakeClock is a clock for a pool whose waits a test steps through.
func fakeClock() *clock.Fake { return clock.NewFake(time.Now()) }

// step moves the pool's fake clock d on and waits until the pool has acted
// on it: its maintenance has run at the new time and the background dials
// it started are done.
func (r *rig) step(t *testing.T, d time.Duration) {
	t.Helper()
	r.clk.Advance(d)
	settle(t, r.p)
}

// settle waits until a maintenance pass that began now has ended and no
// background dial is under way.
func settle(t *testing.T, p *slngpool.Pool) {
	t.Helper()
	ctx := testCtx(t)
	if err := slngpool.Settle(ctx, p); err != nil {
		t.Fatalf("settle: %v", err)
	}
	poll.Wait(t, ctx, "the background dials", func() bool { return slngpool.InFlight(p) == 0 })
}

// TestKeyPausedCallersNot: rate_limit on one model pauses the pool's own
// dials for every configuration of that key, but never a caller's.
func TestKeyPausedCallersNot(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{aura: "error:rate_limit@ready,fatal"}, nil, slngpool.Options{
		RecentTTL: -1, StandbyBackoffBase: time.Minute, // a pause of 30 to 60 s
		Clock: fakeClock(),
	})
	ctx := testCtx(t)
	if err := callerTurn(ctx, r.p, aura); err == nil {
		t.Fatal("no rate_limit")
	}
	if got := r.metric(t, "speech_gateway_pool_background_pauses_total", "reason", "rate_limit"); got != 1 {
		t.Fatalf("pauses = %v, want 1", got)
	}
	cfg := ttsCfg
	if err := r.p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: flash}, TTS: &cfg}); err != nil {
		t.Fatal(err)
	}
	r.step(t, 29*time.Second)
	if n := r.count.snapshot()[flash]; n != 0 {
		t.Fatalf("%d prewarm dials for a paused key", n)
	}
	// A caller of the paused key is not paused: a pause would hold it on
	// the clock, which no longer moves, until its deadline.
	if err := callerTurn(ctx, r.p, flash); err != nil {
		t.Fatalf("a caller of the paused key: %v", err)
	}
}

// TestRetryAfterPausesBackground: an HTTP 429 or 503 with Retry-After
// pauses the pool's own dials for that long; the caller gets the refusal
// at once, since its deadline is shorter than what SLNG asked.
func TestRetryAfterPausesBackground(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		reason string
	}{{429, "http_429"}, {503, "retry_after"}} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				hits.Add(1)
				w.Header().Set("Retry-After", "30")
				http.Error(w, http.StatusText(tc.status), tc.status)
			}))
			t.Cleanup(srv.Close)
			c, err := slngclient.New(slngclient.Options{BaseURL: "ws" + strings.TrimPrefix(srv.URL, "http"), Logger: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			clk := fakeClock()
			p, err := slngpool.New(c, slngpool.Options{Logger: zaptest.NewLogger(t), Metrics: slngpool.NewMetrics(reg),
				StandbyBackoffBase: 10 * time.Millisecond, StandbyBackoffMax: 20 * time.Millisecond, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			r := &rig{p: p, reg: reg, clk: clk}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// A wait for the Retry-After would hold the caller on the
			// clock, which does not move, until its deadline.
			_, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
			if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != tc.status || ue.RetryAfter != 30*time.Second {
				t.Fatalf("err = %v, want the %d with its Retry-After", err, tc.status)
			}
			if got := r.metric(t, "speech_gateway_pool_background_pauses_total", "reason", tc.reason); got != 1 {
				t.Errorf("pauses = %v, want 1", got)
			}
			cfg := ttsCfg
			if err := p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: flash}, TTS: &cfg}); err != nil {
				t.Fatal(err)
			}
			for range 29 { // a thousand times the back-off, short of what SLNG asked
				r.step(t, time.Second)
			}
			if n := hits.Load(); n != 1 {
				t.Fatalf("SLNG saw %d dials, want the caller's alone", n)
			}
		})
	}
}

// TestPrewarmRejectedOnce: a prewarm configuration that SLNG refuses is
// logged once, listed by Rejected and not dialled again, even after a
// caller tries it and fails the same way.
func TestPrewarmRejectedOnce(t *testing.T) {
	t.Parallel()
	cfg := ttsCfg
	r := newRig(t, slngsim.Options{}, map[string]string{flash: "error:config_error@init,fatal,close=1008"}, nil, slngpool.Options{
		Prewarm:            []slngpool.Profile{{Endpoint: slngclient.Endpoint{Model: flash}, TTS: &cfg}, {Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg}},
		StandbyBackoffBase: 10 * time.Millisecond, StandbyBackoffMax: 20 * time.Millisecond,
		Clock: fakeClock(),
	})
	settle(t, r.p)
	if len(r.p.Rejected()) != 1 {
		t.Fatalf("Rejected() = %v, want the one refused configuration", r.p.Rejected())
	}
	want := slngpool.Rejection{Kind: "tts", Model: flash, Code: "config_error"}
	if got := r.p.Rejected()[0]; got != want {
		t.Fatalf("Rejected() = %+v, want %+v", got, want)
	}
	if s := want.String(); s != "tts elevenlabs/eleven-flash:2.5 in region default: config_error" {
		t.Errorf("String() = %q", s)
	}
	waitIdle(t, r.p, 1) // the other profile is warm
	for range 10 {
		r.step(t, 100*time.Millisecond) // five times the back-off
	}
	if _, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: flash}}, ttsCfg); err == nil {
		t.Fatal("the caller got a session SLNG refuses")
	}
	for range 10 {
		r.step(t, 100*time.Millisecond)
	}
	if n := r.count.snapshot()[flash]; n != 2 {
		t.Fatalf("SLNG saw %d sessions of the refused configuration, want 2 (prewarm and caller)", n)
	}
	if n := r.logs.FilterMessageSnippet("refused a prewarm configuration").Len(); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if len(r.p.Rejected()) != 1 {
		t.Error("the rejection was forgotten after the caller failed the same way")
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"speech_gateway_pool_configurations", []string{"state", "rejected"}, 1},
		{"speech_gateway_pool_dials_total", []string{"purpose", "prewarm", "result", "error"}, 1},
		{"speech_gateway_pool_dials_total", []string{"purpose", "prewarm", "result", "ok"}, 1},
		{"speech_gateway_pool_dials_total", []string{"purpose", "caller", "result", "error"}, 1},
	} {
		if got := r.metric(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestStandbyDeathsOpenBreaker: standbys that SLNG drops right after ready
// count against the breaker of their model, which then stops the dials.
func TestStandbyDeathsOpenBreaker(t *testing.T) {
	t.Parallel()
	cfg := ttsCfg
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "drop@ready"}, nil, slngpool.Options{
		Prewarm:         []slngpool.Profile{{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg}},
		BreakerFailures: 3, BreakerOpenTimeout: time.Minute, StandbyFailures: 100,
		StandbyBackoffBase: 10 * time.Millisecond, StandbyBackoffMax: 10 * time.Millisecond,
		Clock: fakeClock(),
	})
	// Each step ends a back-off; the standby it brings dies at once.
	poll.Wait(t, testCtx(t), "the breaker to open", func() bool {
		r.clk.Advance(10 * time.Millisecond)
		return r.metric(t, "speech_gateway_upstream_breaker_state", "model", aura) == 2
	})
	settle(t, r.p)
	if got := r.metric(t, "speech_gateway_pool_standby_deaths_total", "cause", "dropped"); got != 3 {
		t.Errorf("standby deaths = %v, want 3", got)
	}
	var coe *slngpool.CircuitOpenError
	if _, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg); !errors.As(err, &coe) {
		t.Fatalf("err = %v, want an open circuit", err)
	}
	before := r.count.snapshot()[aura]
	for range 20 { // twenty times the back-off; the breaker's own minute is real time
		r.step(t, 10*time.Millisecond)
	}
	if n := r.count.snapshot()[aura]; n != before {
		t.Fatalf("%d dials while the breaker is open", n-before)
	}
}

// TestDialRate: callers wait for a dial token within AcquireTimeout, and
// get ErrDialRate, which is ErrExhausted to the service, beyond it.
func TestDialRate(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, nil, nil, slngpool.Options{DisableWarm: true, DialRate: 5, AcquireTimeout: 300 * time.Millisecond, Clock: fakeClock()})
	ctx := testCtx(t)
	ep := slngclient.Endpoint{Model: aura}
	for range 10 { // the burst
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
		if err != nil {
			t.Fatal(err)
		}
		l.Release(nil, false)
	}
	// The 11th waits for the next token, 200 ms on: the maintenance timer
	// and its own are armed while it waits.
	acquired := make(chan error, 1)
	go func() {
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
		if err == nil {
			l.Release(nil, false)
		}
		acquired <- err
	}()
	if err := r.clk.WaitArmed(ctx, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acquired:
		t.Fatalf("the 11th dial did not wait for its token: %v", err)
	default:
	}
	r.clk.Advance(200 * time.Millisecond)
	if err := <-acquired; err != nil {
		t.Fatalf("a caller within AcquireTimeout of a token: %v", err)
	}
	// A deadline shorter than the wait for the next token: refused at once.
	tight, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := r.p.AcquireTTS(tight, slngpool.Request{Endpoint: ep}, ttsCfg); !errors.Is(err, slngpool.ErrDialRate) || !errors.Is(err, slngpool.ErrExhausted) || tight.Err() != nil {
		t.Fatalf("err = %v (deadline %v), want ErrDialRate before the deadline", err, tight.Err())
	}
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "caller", "result", "throttled"); got != 1 {
		t.Errorf("throttled dials = %v, want 1", got)
	}
	if got := r.metric(t, "speech_gateway_pool_acquires_total", "result", "exhausted"); got != 1 {
		t.Errorf("exhausted acquires = %v, want 1", got)
	}
}

// TestBackgroundRateSparesCallers: a nearly empty background bucket holds
// back standbys but never a caller's dial; a rollover is labelled as such.
func TestBackgroundRateSparesCallers(t *testing.T) {
	t.Parallel()
	cfg := ttsCfg
	r := newRig(t, slngsim.Options{}, nil, nil, slngpool.Options{
		BackgroundDialRate: 0.001, // a burst of 1, then one dial every 1000 s
		RecentTTL:          -1,
		Prewarm: []slngpool.Profile{
			{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg},
			{Endpoint: slngclient.Endpoint{Model: flash}, TTS: &cfg},
		},
		Clock: fakeClock(),
	})
	waitIdle(t, r.p, 1)
	r.step(t, 100*time.Second)
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "prewarm"); got != 1 {
		t.Fatalf("prewarm dials = %v, want the one token", got)
	}
	ctx := testCtx(t)
	other := ttsCfg
	other.SampleRate = 24000
	// A caller held by the background bucket would wait on the clock,
	// which no longer moves, until its deadline.
	for range 5 {
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}, Purpose: slngpool.PurposeRollover}, other)
		if err != nil {
			t.Fatal(err)
		}
		l.Release(nil, false)
	}
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "rollover", "result", "ok"); got != 5 {
		t.Errorf("rollover dials = %v, want 5", got)
	}
}

// TestStandbyWaitsForProof: a configuration first seen from a caller gets
// no standby while the caller's session is young and nothing has worked;
// and a session that SLNG ended counts as failed even when the caller
// releases it as fine, as a stream that replaced it does.
func TestStandbyWaitsForProof(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "drop@ready"}, nil, slngpool.Options{Clock: fakeClock()})
	l, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	<-l.Session.Done()
	r.step(t, 4*time.Second) // short of EarlyDeath
	if n := r.count.snapshot()[aura]; n != 1 {
		t.Fatalf("SLNG saw %d sessions while the caller's was young, want the caller's alone", n)
	}
	l.Release(nil, false)
	if got := r.metric(t, "speech_gateway_upstream_session_errors_total", "code", "transport"); got != 1 {
		t.Errorf("session errors = %v, want the drop", got)
	}
	r.step(t, 400*time.Millisecond) // short of the first back-off
	if n := r.count.snapshot()[aura]; n != 1 {
		t.Fatalf("SLNG saw %d sessions after the caller's failed, want 1", n)
	}
}

// TestBYOKRefusalNotRetried: a provider key that the provider refuses
// (backend_connection_failed in answer to init) is the caller's to fix:
// each acquire dials once, and the breaker does not count it.
func TestBYOKRefusalNotRetried(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "error:backend_connection_failed@init,fatal,close=1011"}, nil,
		slngpool.Options{BreakerFailures: 1, DisableWarm: true})
	ep := slngclient.Endpoint{Model: aura, ProviderKey: "pk_refused"}
	for range 2 {
		_, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: ep}, ttsCfg)
		ue, ok := slngclient.AsUpstreamError(err)
		if !ok || ue.Class().Category != slngclient.CategoryProviderKey || ue.Retryable {
			t.Fatalf("AcquireTTS() error = %v, want the provider key refused", err)
		}
	}
	if n := r.count.snapshot()[aura]; n != 2 {
		t.Errorf("SLNG saw %d sessions, want 2: one per acquire, no retries, no open breaker", n)
	}
	if got := r.metric(t, "speech_gateway_upstream_breaker_state", "model", aura); got != 0 {
		t.Errorf("breaker state = %v, want closed", got)
	}
}

// TestNoBackgroundDialWithCallerKey: a caller's own SLNG key is dialled
// only while its caller waits. After the caller's stream the pool keeps no
// configuration of it and never dials a standby with it, while the
// gateway's own key, used the same way, has its standby dialled, retired
// at its idle age and dialled again.
func TestNoBackgroundDialWithCallerKey(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	sim, p := setup(t, slngsim.Options{APIKey: "gateway-key", APIKeys: []string{"caller-key"}},
		slngpool.Options{MaxIdleAge: 200 * time.Millisecond, Metrics: slngpool.NewMetrics(reg)})
	r := &rig{reg: reg}
	ctx := testCtx(t)
	for _, ep := range []slngclient.Endpoint{{Model: aura, APIKey: "caller-key"}, {Model: aura}} {
		l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
		if err != nil {
			t.Fatal(err)
		}
		speak(t, l, "one turn")
		l.Release(nil, false)
	}
	if n := r.metric(t, "speech_gateway_pool_configurations"); n != 1 {
		t.Fatalf("configurations kept warm = %v, want 1: the gateway key's only", n)
	}
	byKey := func() map[string]int {
		n := map[string]int{}
		for _, s := range sim.Sessions() {
			n[s.KeyID]++
		}
		return n
	}
	poll.Wait(t, ctx, "three standbys of the gateway's key", func() bool { return byKey()[slngsim.KeyID("gateway-key")] >= 4 })
	if n := byKey()[slngsim.KeyID("caller-key")]; n != 1 {
		t.Fatalf("sessions with the caller's key = %d, want 1: its caller's", n)
	}
	if err := p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: aura, APIKey: "caller-key"}, TTS: &ttsCfg}); err == nil {
		t.Fatal("Prewarm took a profile with a key of its own")
	}
}
