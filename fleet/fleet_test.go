package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect joins a new replica to the Redis of srv, with short times.
func connect(t *testing.T, srv *redistest.Server, opts Options) *Fleet {
	t.Helper()
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 900 * time.Millisecond
	}
	if opts.Linger == 0 {
		opts.Linger = 30 * time.Millisecond
	}
	if opts.OpTimeout == 0 {
		// Not the default 250 ms: a busy machine's Redis would put the
		// replicas in fallback, which the tests here do not ask for.
		opts.OpTimeout = 5 * time.Second
		opts.StartBudget = 5 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	opts.Logger = zaptest.NewLogger(t)
	f, err := Connect(testContext(t), Redis{URL: srv.URL(), Password: srv.Password()}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// inspect is a plain client for looking at what the fleet wrote.
func inspect(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSemaphoreHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	a, b := connect(t, srv, Options{}), connect(t, srv, Options{})
	sa, sb := a.semaphore("upstream", a.opts.Linger), b.semaphore("upstream", b.opts.Linger)

	var leases []*Lease
	for i, s := range []*Semaphore{sa, sb, sa} {
		l, err := s.Acquire(ctx, "key1", 3, 0)
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		leases = append(leases, l)
	}
	for _, s := range []*Semaphore{sa, sb} {
		if _, err := s.Acquire(ctx, "key1", 3, 50*time.Millisecond); !errors.Is(err, ErrFull) {
			t.Fatalf("a fourth lease: err = %v, want ErrFull", err)
		}
	}
	// Another key has a limit of its own.
	other, err := sb.Acquire(ctx, "key2", 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	if got := testutil.ToFloat64(a.m.refused.WithLabelValues("upstream")); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.m.leases.WithLabelValues("upstream")); got != 2 {
		t.Errorf("a's leases = %v, want 2", got)
	}

	// A release on one replica lets a waiter on the other in, after the
	// linger.
	got := make(chan error, 1)
	go func() {
		l, err := sb.Acquire(ctx, "key1", 3, 5*time.Second)
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	released := time.Now()
	leases[0].Release()
	leases[0].Release() // only the first counts
	if err := <-got; err != nil {
		t.Fatalf("waiting acquire: %v", err)
	}
	if waited := time.Since(released); waited < 30*time.Millisecond {
		t.Errorf("the released lease was handed on after %v, before its linger of 30ms", waited)
	}
	// A semaphore without linger is free across the fleet as soon as
	// Release returns.
	mine, err := a.Semaphore("streams").Acquire(ctx, "alice", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine.Release()
	theirs, err := b.Semaphore("streams").Acquire(ctx, "alice", 1, 0)
	if err != nil {
		t.Fatalf("right after the other replica's release: %v", err)
	}
	theirs.Release()
	if n := sa.Held("key1"); n != 1 {
		t.Errorf("a holds %d leases of key1, want 1", n)
	}
	if s := a.Status(); s.Mode != ModeShared || s.Replicas != 2 {
		t.Errorf("status = %+v, want shared with 2 replicas", s)
	}
}

func TestLeasesOfADeadReplicaExpire(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	const ttl = 600 * time.Millisecond
	a, b := connect(t, srv, Options{LeaseTTL: ttl}), connect(t, srv, Options{LeaseTTL: ttl})
	for range 2 {
		if _, err := a.Semaphore("upstream").Acquire(ctx, "k", 2, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Held past several heartbeats: renewed, not expired.
	hold := time.NewTimer(2 * ttl)
	<-hold.C
	if _, err := b.Semaphore("upstream").Acquire(ctx, "k", 2, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("while a holds both: err = %v, want ErrFull", err)
	}
	// a dies without releasing anything: its leases stay in Redis until
	// the expiry its last heartbeat gave them, within the TTL of its
	// death (Redis's clock and this one are the machine's), and b gets
	// one then.
	a.Close() // its heartbeat renews nothing after this
	died := time.Now()
	leases, err := inspect(t, srv).ZRangeWithScores(ctx, "speech-gateway:sem:upstream:k", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range leases {
		if exp := time.UnixMilli(int64(z.Score)); exp.After(died.Add(ttl)) {
			t.Errorf("a lease of the dead replica expires %v after its death, past the TTL (%v)", exp.Sub(died), ttl)
		}
	}
	l, err := b.Semaphore("upstream").Acquire(ctx, "k", 2, 10*time.Second)
	if err != nil {
		t.Fatalf("after a died: %v", err)
	}
	l.Release()
	t.Logf("a's leases were free for b after %v (TTL %v)", time.Since(died), ttl)
	poll.Wait(t, ctx, "b sees one replica", func() bool { return b.Status().Replicas == 1 })
}

func TestFallbackAndRecovery(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	// A stopped Redis refuses connections at once: the fallback needs no
	// short timeout, and a busy machine's live one must not trip it.
	a := connect(t, srv, Options{OpTimeout: 2 * time.Second, StartBudget: 2 * time.Second, Metrics: NewMetrics(reg)})
	b := connect(t, srv, Options{OpTimeout: 2 * time.Second, StartBudget: 2 * time.Second})
	if err := a.heartbeat(ctx); err != nil { // a sees b
		t.Fatal(err)
	}
	sa, sb := a.Semaphore("upstream"), b.Semaphore("upstream")
	first, err := sa.Acquire(ctx, "k", 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	chars := a.Counter("chars", time.Minute)
	chars.Add("caller", 7)

	srv.Stop()
	// Redis is gone: a keeps granting, locally, up to its share of 4
	// across 2 replicas, the lease it already holds included.
	second, err := sa.Acquire(ctx, "k", 4, 0)
	if err != nil {
		t.Fatalf("acquire in fallback: %v", err)
	}
	if _, err := sa.Acquire(ctx, "k", 4, 20*time.Millisecond); !errors.Is(err, ErrFull) {
		t.Fatalf("beyond the share: err = %v, want ErrFull", err)
	}
	st := a.Status()
	if st.Mode != ModeFallback || st.Replicas != 2 || st.Err == "" {
		t.Fatalf("status = %+v, want fallback with 2 replicas and the error", st)
	}
	if got := testutil.ToFloat64(a.m.mode.WithLabelValues("fallback")); got != 1 {
		t.Errorf("fleet_mode{fallback} = %v", got)
	}
	if got := testutil.ToFloat64(a.m.fallbacks); got != 1 {
		t.Errorf("fallbacks = %v, want 1", got)
	}
	// The first call to meet the stopped Redis counts the error: the
	// acquire, or on a busy machine the heartbeat before it.
	var errs float64
	for _, op := range []string{"connect", "heartbeat", "acquire", "count", "release", "read"} {
		errs += testutil.ToFloat64(a.m.redisErrors.WithLabelValues(op))
	}
	if errs != 1 {
		t.Errorf("redis_errors = %v, want 1", errs)
	}
	if n := testutil.CollectAndCount(a.m.redisSeconds); n < 2 {
		t.Errorf("redis_seconds has %d series, want acquire and heartbeat at least", n)
	}
	// Counting goes on locally, scaled to the fleet.
	chars.Add("caller", 3)
	if v, _ := chars.Value(ctx, "caller"); v != 20 {
		t.Errorf("counter in fallback = %d, want (7+3)*2", v)
	}
	// b falls back too when it next needs Redis.
	if _, err := sb.Acquire(ctx, "k", 4, 0); err != nil {
		t.Fatal(err)
	}
	if b.Status().Mode != ModeFallback {
		t.Fatal("b is not in fallback")
	}

	// Redis comes back, empty: the heartbeat puts back every lease held
	// and the counts, and the limits are shared again.
	srv.Restart()
	poll.Wait(t, ctx, "a recovers", func() bool { return a.Status().Mode == ModeShared })
	poll.Wait(t, ctx, "b recovers", func() bool { return b.Status().Mode == ModeShared })
	rc := inspect(t, srv)
	if n := rc.ZCard(ctx, "speech-gateway:sem:upstream:k").Val(); n != 3 {
		t.Errorf("redis holds %d leases after the recovery, want the 3 held", n)
	}
	poll.Wait(t, ctx, "the counts reach redis", func() bool {
		v, _ := chars.Value(ctx, "caller")
		return v == 10
	})
	// The budget's view of the fleet: with 3 held, a budget of 3 has no
	// room for a standby to stay, one of 4 has.
	if a.Budget(3).Spare(ctx, "k") || !a.Budget(4).Spare(ctx, "k") {
		t.Error("Spare does not count the leases across the fleet")
	}
	second.Release()
	first.Release()
	if _, err := sb.Acquire(ctx, "k", 4, time.Second); err != nil {
		t.Fatalf("after the recovery: %v", err)
	}
}

func TestConnectRefusesWhatWaitingWouldNotMend(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{Password: "right-password"})
	ctx := testContext(t)
	for _, r := range []Redis{
		{URL: "http://nowhere"},
		{URL: srv.URL(), Mode: "sentinel"}, // no master_name
		{URL: srv.URL(), Mode: "ring"},
		{URL: srv.URL(), Password: "SENTINEL_WRONG_PASSWORD"},
		{URL: srv.URL()}, // no password at all
	} {
		f, err := Connect(ctx, r, Options{OpTimeout: time.Second})
		if err == nil {
			f.Close()
			t.Errorf("Connect(%v) succeeded", r)
			continue
		}
		if strings.Contains(err.Error(), "SENTINEL_WRONG_PASSWORD") {
			t.Errorf("Connect(%v): the error shows the password: %v", r, err)
		}
	}
}

func TestCounterAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	a, b := connect(t, srv, Options{}), connect(t, srv, Options{})
	ca, cb := a.Counter("chars", time.Minute), b.Counter("chars", time.Minute)
	ca.Add("alice", 40)
	if v, left := ca.Value(ctx, "alice"); v != 40 || left <= 0 || left > time.Minute {
		t.Fatalf("a's own count = %d (window ends in %v), want 40", v, left)
	}
	if err := a.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	cb.Add("alice", 2)
	if v, _ := cb.Value(ctx, "alice"); v != 42 {
		t.Fatalf("b's view = %d, want 42", v)
	}
	if v, _ := cb.Value(ctx, "bob"); v != 0 {
		t.Fatalf("bob = %d, want 0", v)
	}
}

func TestLocalFleet(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := New(Options{Linger: -1})
	defer f.Close()
	b := f.Budget(2)
	for range 2 {
		if err := b.Acquire(ctx, "cred", 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Acquire(ctx, "cred", 10*time.Millisecond); !errors.Is(err, ErrFull) {
		t.Fatalf("third: err = %v, want ErrFull", err)
	}
	b.Release("cred")
	b.Release("nobody") // nothing held: nothing happens
	if err := b.Acquire(ctx, "cred", 0); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// Standbys leave a tenth of the budget, at least one session, to
	// callers.
	sb := f.Budget(3)
	for range 2 {
		if err := sb.AcquireSpare(ctx, "cred3"); err != nil {
			t.Fatal(err)
		}
	}
	if err := sb.AcquireSpare(ctx, "cred3"); !errors.Is(err, ErrFull) {
		t.Fatalf("a third standby: err = %v, want ErrFull", err)
	}
	if !sb.Spare(ctx, "cred3") {
		t.Fatal("two of three held: a standby may stay")
	}
	if err := sb.Acquire(ctx, "cred3", 0); err != nil {
		t.Fatalf("a caller gets the last: %v", err)
	}
	if sb.Spare(ctx, "cred3") {
		t.Fatal("three of three held: no standby may stay")
	}
	if err := f.Budget(1).AcquireSpare(ctx, "other"); !errors.Is(err, ErrFull) {
		t.Fatalf("a budget of one has no room for standbys: %v", err)
	}
	// Unlimited leases count nothing.
	l, err := f.Semaphore("x").Acquire(ctx, "k", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	c := f.Counter("chars", time.Minute)
	c.Add("k", 5)
	if v, _ := c.Value(ctx, "k"); v != 5 {
		t.Fatalf("count = %d, want 5", v)
	}
	if s := f.Status(); s.Mode != ModeLocal || s.String() != "fleet: local limits (no redis)" {
		t.Fatalf("status = %+v", s)
	}
	// A waiter gives up with its context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Acquire(cctx, "cred", time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err = %v", err)
	}
}

// TestReleaseDuringHeartbeat: a lease released after a heartbeat has
// copied the leases to renew, but before Redis has renewed them, is free
// when the heartbeat is done; the renewal does not bring it back for a
// lease TTL.
func TestReleaseDuringHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	a, b := connect(t, srv, Options{LeaseTTL: 5 * time.Second}), connect(t, srv, Options{LeaseTTL: 5 * time.Second})
	for _, linger := range []time.Duration{0, 30 * time.Millisecond} {
		sem := a.semaphore(fmt.Sprint("streams-", linger), linger)
		l, err := sem.Acquire(ctx, "alice", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		release := func() { once.Do(l.Release) }
		a.beforeExec.Store(&release)
		err = a.heartbeat(ctx)
		a.beforeExec.Store(nil)
		if err != nil {
			t.Fatal(err)
		}
		// Well within the lease TTL, the other replica gets the lease.
		next, err := b.semaphore(sem.name, linger).Acquire(ctx, "alice", 1, time.Second)
		if err != nil {
			t.Fatalf("linger %v: the lease released during a heartbeat: %v", linger, err)
		}
		next.Release()
	}
}

// TestFlushAppliedOnce: a heartbeat whose reply is lost after Redis has
// applied it does not count its flush again when it is retried.
func TestFlushAppliedOnce(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := redistest.Start(t)
	proxy := startLossyProxy(t, srv.Addr())
	a, err := Connect(ctx, Redis{URL: "redis://" + proxy.addr()}, Options{OpTimeout: 100 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := a.Counter("chars", time.Minute)
	c.Add("alice", 5)
	proxy.dropping.Store(true)
	if err := a.heartbeat(ctx); err == nil {
		t.Fatal("a heartbeat without a reply succeeded")
	}
	proxy.dropping.Store(false)
	// On a busy machine a round trip can outlast the 100 ms too; each
	// retry that Redis applied without a reply must not count again
	// either.
	poll.Wait(t, ctx, "a heartbeat with a reply", func() bool { return a.heartbeat(ctx) == nil })
	w, _ := c.current(time.Now())
	if n, err := inspect(t, srv).Get(ctx, c.rkey("alice", w)).Int64(); err != nil || n != 5 {
		t.Fatalf("redis counts %d (%v), want 5 once", n, err)
	}
	if v, _ := c.Value(ctx, "alice"); v != 5 {
		t.Fatalf("Value = %d, want 5", v)
	}
}

// lossyProxy forwards connections to Redis, and throws Redis's replies
// away while dropping is set: requests reach Redis and are applied, and
// their answers never arrive, as when a network fails at the worst moment.
type lossyProxy struct {
	// delay holds back each reply of Redis this long (nanoseconds): a
	// slow Redis, or one far away.
	delay    atomic.Int64
	ln       net.Listener
	target   string
	dropping atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startLossyProxy(t *testing.T, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *lossyProxy) addr() string { return p.ln.Addr().String() }

func (p *lossyProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(server, client, nil)
		go p.pipe(client, server, &p.dropping)
	}
}

// pipe copies from src to dst, dropping what it reads while drop is set,
// and closes both at the end.
func (p *lossyProxy) pipe(dst, src net.Conn, drop *atomic.Bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if d := time.Duration(p.delay.Load()); n > 0 && drop != nil && d > 0 {
			// The latency of a distant Redis, not a synchronization.
			t := time.NewTimer(d)
			<-t.C
		}
		if n > 0 && (drop == nil || !drop.Load()) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestCounterPastItsKeys: once a Counter tracks its most keys, new keys
// count together under one overflow key rather than not at all, so that
// made-up keys cannot switch a rate limit off.
func TestCounterPastItsKeys(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := New(Options{})
	defer f.Close()
	// A window the test cannot cross (the first ends in 2070): filling the
	// counter takes a second or more on a busy machine, and a window that
	// ended meanwhile would start empty, with room for the keys the test
	// wants to overflow.
	c := f.Counter("chars", 100*365*24*time.Hour)
	for i := range maxCounterEntries {
		c.Add(fmt.Sprint("caller-", i), 1)
	}
	c.Add("made-up-1", 40)
	c.Add("made-up-2", 2)
	for _, key := range []string{"made-up-1", "made-up-2", "made-up-3"} {
		if v, _ := c.Value(ctx, key); v != 42 {
			t.Errorf("Value(%s) = %d, want the overflow's 42", key, v)
		}
	}
	if v, _ := c.Value(ctx, "caller-7"); v != 1 {
		t.Errorf("a key of its own = %d, want 1", v)
	}
}
