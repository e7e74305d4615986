package slngpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// sessionCounter counts the connections the simulator saw per model,
// refused handshakes included, through its Script hook.
type sessionCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *sessionCounter) script(f slngsim.Fault) func(slngsim.ConnInfo) slngsim.Fault {
	return func(ci slngsim.ConnInfo) slngsim.Fault {
		c.mu.Lock()
		c.n[ci.Model]++
		c.mu.Unlock()
		return f
	}
}

func (c *sessionCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// callerTurn is one caller stream as the service runs it: acquire, speak one
// turn, release. It returns the error the caller would report, nil when
// the turn spoke.
func callerTurn(ctx context.Context, p *slngpool.Pool, model string) error {
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: model}}, ttsCfg)
	if err != nil {
		return err
	}
	err = l.Session.Text(ctx, "one turn", true)
	for err == nil {
		var ev slngclient.TTSEvent
		ev, err = l.Session.Recv(ctx)
		if err == nil && ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	// Not handed back for reuse: the standbys counted are the pool's own.
	l.Release(err, false)
	return err
}

// budgetCase is one way SLNG turns sessions away.
type budgetCase struct {
	name  string
	fault string // slngsim fault spec without the model; "" for none
	sim   slngsim.Options
}

var budgetCases = []budgetCase{
	{name: "rate_limit after ready", fault: "error:rate_limit@ready,fatal"},
	{name: "provider_error after ready", fault: "error:provider_error@ready,fatal"},
	{name: "auth_error answering init", fault: "error:auth_error@init,fatal,close=1008"},
	{name: "config_error answering init", fault: "error:config_error@init,fatal,close=1008"},
	{name: "http 429", fault: "handshake:429"},
	{name: "http 503", fault: "handshake:503"},
	{name: "drop after ready", fault: "drop@ready"},
	// A route that drops idle sessions is idleDropRoute's, in real time:
	// the simulator's idle timeout does not run on the pool's fake clock.
}

// TestDialBudget: for each way the simulator can turn sessions away, one
// caller stream per configuration, then 30 s of silence on the pool's
// clock, which the test moves. The simulator must see at most 5 sessions
// per configuration in the first 5 s and 15 in the 30 s, with 1 and with
// 20 configurations failing at once, and a later caller must still get a
// clear answer within 5 s. Alongside, idleDropRoute measures a busy and a
// quiet route that drop idle sessions, over 25 s of real time. Every
// scenario runs at once; with -v it prints the figures. It is in the
// package's last file so that go test starts it first among the parallel
// tests, and the others run beside it.
func TestDialBudget(t *testing.T) {
	t.Parallel()
	type scenario struct {
		budgetCase
		configs int
		res     budgetResult
	}
	var all []*scenario
	for _, configs := range []int{1, 20} {
		for _, bc := range budgetCases {
			all = append(all, &scenario{budgetCase: bc, configs: configs})
		}
	}
	var wg sync.WaitGroup
	for _, sc := range all {
		wg.Go(func() { sc.res = runBudget(t, sc.budgetCase, sc.configs) })
	}
	wg.Go(func() { idleDropRoute(t, true) })
	wg.Go(func() { idleDropRoute(t, false) })
	wg.Wait()
	for _, sc := range all {
		t.Run(fmt.Sprintf("%s/%d", sc.name, sc.configs), func(t *testing.T) {
			r := sc.res
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Logf("FIGURES %-28s configs=%-2d sessions in 5s: %4d (max per config %3d); in 30s: %5d (max per config %4d); later caller: %s in %s",
				sc.name, sc.configs, r.total5, r.max5, r.total30, r.max30, outcome(r.later), r.laterTook.Round(time.Millisecond))
			if r.max5 > 5 || r.max30 > 15 {
				t.Errorf("a configuration saw %d sessions in 5 s and %d in 30 s, want at most 5 and 15", r.max5, r.max30)
			}
			var coe *slngpool.CircuitOpenError
			if _, upstream := slngclient.AsUpstreamError(r.later); r.later != nil && !upstream && !errors.As(r.later, &coe) {
				t.Errorf("the later caller got %v, want audio or SLNG's failure", r.later)
			}
			if r.laterTook > 5*time.Second {
				t.Errorf("the later caller waited %s", r.laterTook)
			}
		})
	}
}

// budgetResult is what one scenario of TestDialBudget saw.
type budgetResult struct {
	err                          error // the scenario could not run
	total5, total30, max5, max30 int   // sessions in all configurations and in the busiest one
	later                        error // the later caller's outcome
	laterTook                    time.Duration
}

// runBudget runs one scenario, its time on a fake clock; it may run in a
// goroutine of t's test.
func runBudget(t *testing.T, bc budgetCase, configs int) (res budgetResult) {
	counter := &sessionCounter{n: map[string]int{}}
	simOpts := bc.sim
	var f slngsim.Fault
	if bc.fault != "" {
		f = fault(bc.fault)
	}
	simOpts.Script = counter.script(f)
	simOpts.Addr = "127.0.0.1:0"
	simOpts.Logger = zaptest.NewLogger(t)
	sim, err := slngsim.Start(simOpts)
	if err != nil {
		return budgetResult{err: err}
	}
	defer func() {
		if err := sim.Close(); err != nil && res.err == nil {
			res.err = err
		}
	}()
	c, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		return budgetResult{err: err}
	}
	clk := fakeClock()
	p, err := slngpool.New(c, slngpool.Options{Logger: zaptest.NewLogger(t), Clock: clk})
	if err != nil {
		return budgetResult{err: err}
	}
	defer p.Close()
	models := make([]string, configs)
	for i := range models {
		models[i] = fmt.Sprintf("budget/%s-%d:%d", strings.NewReplacer(" ", "-", "_", "-").Replace(bc.name), i, configs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// step moves the clock d on, and waits until the pool has acted on it
	// and its background dials are done.
	step := func(d time.Duration) error {
		clk.Advance(d)
		if err := slngpool.Settle(ctx, p); err != nil {
			return err
		}
		return poll.Until(ctx, time.Millisecond, func() bool { return slngpool.InFlight(p) == 0 })
	}
	// callers runs the callers of models while the clock moves on, 10 ms
	// at a time, for their retries' back-offs.
	callers := func(models ...string) (last error) {
		var wg sync.WaitGroup
		errs := make([]error, len(models))
		for i, m := range models {
			wg.Go(func() {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				defer ccancel()
				errs[i] = callerTurn(cctx, p, m)
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for {
			select {
			case <-done:
				return errs[len(errs)-1]
			default:
			}
			if err := step(10 * time.Millisecond); err != nil {
				<-done
				return err
			}
		}
	}
	start := clk.Now()
	callers(models...)
	at := func(d time.Duration) (map[string]int, error) {
		for clk.Now().Before(start.Add(d)) {
			if err := step(100 * time.Millisecond); err != nil {
				return nil, err
			}
		}
		return counter.snapshot(), nil
	}
	in5, err := at(5 * time.Second)
	if err != nil {
		return budgetResult{err: err}
	}
	in30, err := at(30 * time.Second)
	if err != nil {
		return budgetResult{err: err}
	}
	for _, m := range models {
		res.total5 += in5[m]
		res.total30 += in30[m]
		res.max5 = max(res.max5, in5[m])
		res.max30 = max(res.max30, in30[m])
	}
	lstart := clk.Now()
	res.later = callers(models[0])
	res.laterTook = clk.Now().Sub(lstart)
	return res
}

func outcome(err error) string {
	if err == nil {
		return "audio"
	}
	return err.Error()
}

// idleDropRoute measures warm hits, time to first audio and SLNG sessions
// on a route that, like some of SLNG's, drops a TTS session that gets no
// text within 5 s of ready. Callers of each configuration arrive at
// random, meanGap apart on average, for 25 s. Half send their text with
// the call; the others up to 1.5 s later, as a Synthesize stream does when
// its text comes from a model still thinking. A session that died before
// its text is replaced, and that wait counts in the caller's time to first
// audio.
//
// While callers come often (busy), the pool keeps a standby: once it has
// seen one of a configuration die idle, none it hands out may die before
// its text (at most one per configuration, before that, may be handed out
// too old), and most callers get one. While they come seldom, it keeps
// none, rather than a standby that dies every 5 s: SLNG sees little more
// than the callers' own sessions.
//
// It runs within TestDialBudget, and may run in a goroutine: it reports
// through t.Errorf and t.Logf only.
func idleDropRoute(t *testing.T, busy bool) {
	const (
		period = 25 * time.Second
		think  = 1500 * time.Millisecond
	)
	configs, meanGap, name := 4, 2500*time.Millisecond, "busy"
	if !busy {
		configs, meanGap, name = 8, 10*time.Second, "quiet"
	}
	sim, err := slngsim.Start(slngsim.Options{TTSTextTimeout: 5 * time.Second,
		ConnectLatency: 50 * time.Millisecond, ReadyLatency: 50 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Error(err)
		return
	}
	defer func() {
		if err := sim.Close(); err != nil {
			t.Error(err)
		}
	}()
	c, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Error(err)
		return
	}
	p, err := slngpool.New(c, slngpool.Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Error(err)
		return
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), period+30*time.Second)
	defer cancel()

	var mu sync.Mutex
	var calls []idleCall
	var wg sync.WaitGroup
	for i := range configs {
		model := fmt.Sprintf("idle/%s-%d:1", name, i)
		rng := rand.New(rand.NewPCG(uint64(i), 16)) // the same arrivals on every run
		wg.Go(func() {
			var streams sync.WaitGroup
			defer streams.Wait()
			end := time.Now().Add(period)
			for {
				gap := time.Duration(rng.ExpFloat64() * float64(meanGap))
				if time.Now().Add(gap).After(end) {
					return
				}
				pace(gap)
				var wait time.Duration // SynthesizeText: the text comes with the call
				if rng.IntN(2) == 0 {
					wait = time.Duration(rng.Int64N(int64(think)))
				}
				streams.Go(func() {
					c := idleDropCall(ctx, p, model, wait)
					mu.Lock()
					calls = append(calls, c)
					mu.Unlock()
				})
			}
		})
	}
	wg.Wait()

	var hits, died int
	var ttfas []time.Duration
	for _, c := range calls {
		if c.err != nil {
			t.Errorf("a caller failed: %v", c.err)
			continue
		}
		if c.warm && !c.died {
			hits++
		}
		if c.died {
			died++
		}
		ttfas = append(ttfas, c.ttfa)
	}
	slices.Sort(ttfas)
	var sum time.Duration
	for _, d := range ttfas {
		sum += d
	}
	idleDrops := 0
	for _, s := range sim.Sessions() {
		if s.CloseCode == 1008 && s.TurnsCompleted == 0 {
			idleDrops++
		}
	}
	if len(ttfas) == 0 {
		t.Error("no caller completed")
		return
	}
	t.Logf("FIGURES idle drop after 5 s, %s (%d configurations, callers %s apart): %d callers, warm hit rate %.0f%% (%d warm sessions died before their text); "+
		"time to first audio median %s, p90 %s, mean %s; %d SLNG sessions, %d dropped idle",
		name, configs, meanGap, len(calls), 100*float64(hits)/float64(len(calls)), died,
		ttfas[len(ttfas)/2].Round(time.Millisecond), ttfas[len(ttfas)*9/10].Round(time.Millisecond),
		(sum / time.Duration(len(ttfas))).Round(time.Millisecond), len(sim.Sessions()), idleDrops)
	if died > configs {
		t.Errorf("%s: %d standbys died in their callers' hands before the first text", name, died)
	}
	if busy && hits < len(calls)/2 {
		t.Errorf("%s: warm hits %d of %d callers", name, hits, len(calls))
	}
	if n := len(sim.Sessions()); !busy && n > len(calls)+died+2*configs {
		t.Errorf("%s: %d SLNG sessions for %d callers", name, n, len(calls))
	}
}

// pace waits d of real time: the schedule of idleDropRoute's callers,
// against the simulator's idle timeout, which is real time too.
func pace(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// idleCall is what one caller of idleDropRoute saw.
type idleCall struct {
	warm bool          // a standby served it
	died bool          // its session died before its first text
	ttfa time.Duration // from its first text to its first audio
	err  error
}

// idleDropCall is one caller of idleDropRoute: it acquires a session
// at once and has its first text wait later, then speaks; a session that
// died meanwhile is replaced by a new one. The dial of a cold session
// overlaps the wait, as it does in a Synthesize stream.
func idleDropCall(ctx context.Context, p *slngpool.Pool, model string, wait time.Duration) (c idleCall) {
	ep := slngclient.Endpoint{Model: model}
	textAt := time.Now().Add(wait)
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		c.err = err
		return c
	}
	c.warm = l.Warm
	if d := time.Until(textAt); d > 0 {
		pace(d)
	}
	start := textAt
	for attempt := 0; ; attempt++ {
		err := l.Session.Text(ctx, "first words", true)
		for err == nil {
			var ev slngclient.TTSEvent
			if ev, err = l.Session.Recv(ctx); err == nil && ev.Kind == slngclient.TTSAudio {
				break
			}
		}
		if err == nil {
			c.ttfa = time.Since(start)
			l.Release(nil, false)
			return c
		}
		l.Release(err, false)
		if attempt > 0 {
			c.err = err
			return c
		}
		c.died = true
		if l, err = p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg); err != nil {
			c.err = err
			return c
		}
	}
}
