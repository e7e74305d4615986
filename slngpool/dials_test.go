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

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet waits d, in which nothing is expected to happen.
func quiet(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// TestBackgroundDialsBackOffAndStop: standbys of a configuration whose
// sessions SLNG drops right after ready are retried with backoff and
// stopped after StandbyFailures, until a caller uses the configuration
// again.
func TestBackgroundDialsBackOffAndStop(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "drop@ready"}, &healthy, slngpool.Options{
		StandbyBackoffBase: 20 * time.Millisecond, StandbyBackoffMax: 80 * time.Millisecond,
		StandbyFailures: 3, BreakerFailures: 100,
		EarlyDeath: 100 * time.Millisecond, // the wait of a configuration not yet proven
	})
	ctx := testCtx(t)
	if err := callerTurn(ctx, r.p, aura); err == nil {
		t.Fatal("the caller's session survived drop@ready")
	}
	waitFor(t, "the configuration to stop", func() bool {
		return r.metric(t, "speech_gateway_pool_configurations", "state", "stopped") == 1
	})
	// The caller's failure, then two standbys that died: three.
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "standby", "result", "ok"); got != 2 {
		t.Errorf("standby dials = %v, want 2", got)
	}
	if got := r.metric(t, "speech_gateway_pool_standby_deaths_total", "cause", "dropped"); got != 2 {
		t.Errorf("standby deaths = %v, want 2", got)
	}
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "caller", "result", "ok"); got != 1 {
		t.Errorf("caller dials = %v, want 1", got)
	}
	before := r.count.snapshot()[aura]
	quiet(300 * time.Millisecond) // many times the backoff
	if n := r.count.snapshot()[aura]; n != before {
		t.Fatalf("%d sessions after the configuration stopped", n-before)
	}

	// A caller brings it back, and once it works, standbys follow.
	healthy.Store(true)
	if err := callerTurn(ctx, r.p, aura); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, r.p, 1)
	if got := r.metric(t, "speech_gateway_pool_configurations", "state", "keep"); got != 1 {
		t.Errorf("configurations kept = %v, want 1", got)
	}
}

// TestKeyPausedCallersNot: rate_limit on one model pauses the pool's own
// dials for every configuration of that key, but never a caller's.
func TestKeyPausedCallersNot(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{aura: "error:rate_limit@ready,fatal"}, nil, slngpool.Options{
		RecentTTL: -1, StandbyBackoffBase: time.Minute, // a pause of 30 to 60 s
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
	quiet(300 * time.Millisecond)
	if n := r.count.snapshot()[flash]; n != 0 {
		t.Fatalf("%d prewarm dials for a paused key", n)
	}
	start := time.Now()
	if err := callerTurn(ctx, r.p, flash); err != nil {
		t.Fatalf("a caller of the paused key: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the caller took %s", took)
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
			p, err := slngpool.New(c, slngpool.Options{Logger: zaptest.NewLogger(t), Metrics: slngpool.NewMetrics(reg),
				StandbyBackoffBase: 10 * time.Millisecond, StandbyBackoffMax: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			r := &rig{p: p, reg: reg}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
			if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != tc.status || ue.RetryAfter != 30*time.Second {
				t.Fatalf("err = %v, want the %d with its Retry-After", err, tc.status)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("the caller took %s", took)
			}
			if got := r.metric(t, "speech_gateway_pool_background_pauses_total", "reason", tc.reason); got != 1 {
				t.Errorf("pauses = %v, want 1", got)
			}
			cfg := ttsCfg
			if err := p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: flash}, TTS: &cfg}); err != nil {
				t.Fatal(err)
			}
			quiet(300 * time.Millisecond) // 15 times the backoff, 1% of what SLNG asked
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
	})
	waitFor(t, "the rejection", func() bool { return len(r.p.Rejected()) == 1 })
	want := slngpool.Rejection{Kind: "tts", Model: flash, Code: "config_error"}
	if got := r.p.Rejected()[0]; got != want {
		t.Fatalf("Rejected() = %+v, want %+v", got, want)
	}
	if s := want.String(); s != "tts elevenlabs/eleven-flash:2.5 in region default: config_error" {
		t.Errorf("String() = %q", s)
	}
	waitIdle(t, r.p, 1) // the other profile is warm
	quiet(300 * time.Millisecond)
	if _, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: flash}}, ttsCfg); err == nil {
		t.Fatal("the caller got a session SLNG refuses")
	}
	quiet(300 * time.Millisecond)
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
	})
	waitFor(t, "the breaker to open", func() bool {
		return r.metric(t, "speech_gateway_upstream_breaker_state", "model", aura) == 2
	})
	if got := r.metric(t, "speech_gateway_pool_standby_deaths_total", "cause", "dropped"); got != 3 {
		t.Errorf("standby deaths = %v, want 3", got)
	}
	var coe *slngpool.CircuitOpenError
	if _, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg); !errors.As(err, &coe) {
		t.Fatalf("err = %v, want an open circuit", err)
	}
	before := r.count.snapshot()[aura]
	quiet(200 * time.Millisecond)
	if n := r.count.snapshot()[aura]; n != before {
		t.Fatalf("%d dials while the breaker is open", n-before)
	}
}

// TestDialRate: callers wait for a dial token within AcquireTimeout, and
// get ErrDialRate, which is ErrExhausted to the service, beyond it.
func TestDialRate(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, nil, nil, slngpool.Options{DisableWarm: true, DialRate: 5, AcquireTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	ep := slngclient.Endpoint{Model: aura}
	for range 10 { // the burst
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
		if err != nil {
			t.Fatal(err)
		}
		l.Release(nil, false)
	}
	start := time.Now()
	l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg) // a token comes every 200 ms
	if err != nil {
		t.Fatalf("a caller within AcquireTimeout of a token: %v", err)
	}
	l.Release(nil, false)
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("the 11th dial waited only %s", took)
	}
	tight, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := r.p.AcquireTTS(tight, slngpool.Request{Endpoint: ep}, ttsCfg); !errors.Is(err, slngpool.ErrDialRate) || !errors.Is(err, slngpool.ErrExhausted) {
		t.Fatalf("err = %v, want ErrDialRate", err)
	}
	if took := time.Since(start); took > 40*time.Millisecond {
		t.Errorf("a dial that cannot get a token in time waited %s", took)
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
	})
	waitIdle(t, r.p, 1)
	quiet(200 * time.Millisecond)
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "prewarm"); got != 1 {
		t.Fatalf("prewarm dials = %v, want the one token", got)
	}
	ctx := testCtx(t)
	other := ttsCfg
	other.SampleRate = 24000
	for i := range 5 {
		start := time.Now()
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}, Purpose: slngpool.PurposeRollover}, other)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("dial %d took %s", i, took)
		}
		l.Release(nil, false)
	}
	if got := r.metric(t, "speech_gateway_pool_dials_total", "purpose", "rollover", "result", "ok"); got != 5 {
		t.Errorf("rollover dials = %v, want 5", got)
	}
}

// TestShortLivedRoute: on a route where SLNG ends a TTS session that gets
// no text soon after ready, the pool learns the lifetime from the first
// standby that dies, keeps none while callers are rare, refreshes one
// within the lifetime while they come often, and stops again when they
// stop.
func TestShortLivedRoute(t *testing.T) {
	t.Parallel()
	const life = 1200 * time.Millisecond
	r := newRig(t, slngsim.Options{TTSTextTimeout: life}, nil, nil, slngpool.Options{})
	ctx := testCtx(t)
	if err := callerTurn(ctx, r.p, aura); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a standby death", func() bool {
		return r.metric(t, "speech_gateway_pool_standby_deaths_total", "cause", "closed") == 1
	})
	if got := r.metric(t, "speech_gateway_pool_configurations", "state", "none"); got != 1 {
		t.Fatalf("configurations with no standby = %v, want 1", got)
	}
	if got := r.metric(t, "speech_gateway_pool_standby_lifetime_seconds"); got != 1 {
		t.Errorf("lifetimes observed = %v, want 1", got)
	}
	// Callers every 100 ms: a standby retired at 60% of the lifetime is
	// worth refreshing.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	hits := 0
	for i := range 30 {
		<-tick.C
		l, err := r.p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
		if err != nil {
			t.Fatal(err)
		}
		if l.Warm {
			hits++
			if age := time.Since(l.Session.Stats().ReadyAt); age > life*6/10+50*time.Millisecond {
				t.Errorf("caller %d got a standby %s old, past 60%% of the lifetime", i, age)
			}
		}
		speak(t, l, "often")
		l.Release(nil, false)
	}
	if hits < 20 {
		t.Errorf("%d of 30 callers got a standby", hits)
	}
	if got := r.metric(t, "speech_gateway_pool_configurations", "state", "refresh"); got != 1 {
		t.Errorf("configurations refreshed = %v, want 1", got)
	}
	if n := r.logs.FilterMessageSnippet("standby policy changed").FilterFieldKey("expected_use").Len(); n < 2 {
		t.Errorf("%d policy log lines, want the change to none and to refresh", n)
	}
	// Callers stop: once the rate seen over the last 8 callers and the
	// silence since makes a standby more likely wasted than used (after
	// about 9 s), the pool keeps none again, and no standby dies.
	waitFor(t, "no standby", func() bool {
		return r.metric(t, "speech_gateway_pool_configurations", "state", "none") == 1 && r.p.IdleCount() == 0
	})
	quiet(life)
	if got := r.metric(t, "speech_gateway_pool_standby_deaths_total"); got != 1 {
		t.Errorf("standby deaths = %v, want only the one that taught the lifetime", got)
	}
	if got := r.metric(t, "speech_gateway_pool_acquires_total", "result", "hit"); got != float64(hits) {
		t.Errorf("hits counted = %v, want %d", got, hits)
	}
	if got := r.metric(t, "speech_gateway_pool_acquires_total", "result", "miss"); got != float64(31-hits) {
		t.Errorf("misses counted = %v, want %d", got, 31-hits)
	}
}

// TestStandbyWaitsForProof: a configuration first seen from a caller gets
// no standby while the caller's session is young and nothing has worked;
// and a session that SLNG ended counts as failed even when the caller
// releases it as fine, as a stream that replaced it does.
func TestStandbyWaitsForProof(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "drop@ready"}, nil, slngpool.Options{})
	l, err := r.p.AcquireTTS(testCtx(t), slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	<-l.Session.Done()
	quiet(300 * time.Millisecond)
	if n := r.count.snapshot()[aura]; n != 1 {
		t.Fatalf("SLNG saw %d sessions while the caller's was young, want the caller's alone", n)
	}
	l.Release(nil, false)
	if got := r.metric(t, "speech_gateway_upstream_session_errors_total", "code", "transport"); got != 1 {
		t.Errorf("session errors = %v, want the drop", got)
	}
	quiet(300 * time.Millisecond)
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
	waitFor(t, "three standbys of the gateway's key", func() bool { return byKey()[slngsim.KeyID("gateway-key")] >= 4 })
	if n := byKey()[slngsim.KeyID("caller-key")]; n != 1 {
		t.Fatalf("sessions with the caller's key = %d, want 1: its caller's", n)
	}
	if err := p.Prewarm(slngpool.Profile{Endpoint: slngclient.Endpoint{Model: aura, APIKey: "caller-key"}, TTS: &ttsCfg}); err == nil {
		t.Fatal("Prewarm took a profile with a key of its own")
	}
}
