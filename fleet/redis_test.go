package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redistest"
)

// share2 runs what two replicas of one fleet share, through r: one
// caller's concurrent streams (a limit of 2) and its characters per
// minute, each replica having taken and counted its part.
func share2(t *testing.T, r Redis) {
	t.Helper()
	ctx := testContext(t)
	var fs [2]*Fleet
	for i := range fs {
		// A Redis slower than the default OpTimeout on a busy machine
		// would put a replica in fallback: this is about sharing.
		f, err := Connect(ctx, r, Options{LeaseTTL: 900 * time.Millisecond, Linger: -1, OpTimeout: 5 * time.Second, StartBudget: 5 * time.Second, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		if st := f.Status(); st.Mode != ModeShared {
			t.Fatalf("replica %d: %v, want shared", i, st)
		}
		fs[i] = f
	}
	a, b := fs[0].Semaphore("caller_streams"), fs[1].Semaphore("caller_streams")
	la, err := a.Acquire(ctx, "team-a", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "team-a", 2, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, "team-a", 2, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("a third stream across the replicas: %v, want ErrFull", err)
	}
	la.Release()
	if _, err := b.Acquire(ctx, "team-a", 2, 0); err != nil {
		t.Fatalf("after a release on the other replica: %v", err)
	}
	// A day's window: one of a minute ends within the test's time now
	// and then, and the counts are then in the window before.
	const window = 24 * time.Hour
	fs[0].Counter("characters", window).Add("team-a", 5)
	fs[1].Counter("characters", window).Add("team-a", 7)
	for _, f := range fs {
		if err := f.heartbeat(ctx); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	poll.Wait(t, ctx, "both counts on both replicas", func() bool {
		v, _ := fs[0].Counter("characters", window).Value(ctx, "team-a")
		w, _ := fs[1].Counter("characters", window).Value(ctx, "team-a")
		return v == 12 && w == 12
	})
}

// TestRedisAsOperatorsRunIt: the limits are shared through a Redis with a
// password, through the Sentinel that watches it, and through a Cluster,
// whose every multi-key script must keep its keys in one slot.
func TestRedisAsOperatorsRunIt(t *testing.T) {
	t.Parallel()
	t.Run("password", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartWith(t, redistest.Options{Password: "s3cret"})
		share2(t, Redis{URL: srv.URL(), Password: srv.Password()})
	})
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartWith(t, redistest.Options{Password: "s3cret"})
		sentinel := redistest.StartSentinel(t, srv)
		share2(t, Redis{URL: sentinel.URL(), Mode: "sentinel", Password: srv.Password()})
		// The limits are in the primary the Sentinel named.
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password(), MaxRetries: -1, DisableIdentity: true})
		defer rc.Close()
		if n := rc.ZCard(testContext(t), "speech-gateway:sem:caller_streams:team-a").Val(); n != 2 {
			t.Fatalf("the primary holds %d leases of team-a, want 2", n)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartWith(t, redistest.Options{Cluster: true, Password: "s3cret"})
		share2(t, Redis{URL: srv.URL(), Mode: "cluster", Password: srv.Password()})
	})
}

// TestConnectWhileRedisIsDown: a replica starts while Redis does not
// answer, holds each limit at 1/FallbackReplicas, and shares its limits
// once Redis is up, with what it holds put into Redis.
func TestConnectWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	srv.Stop()
	ctx := testContext(t)
	reg := prometheus.NewRegistry()
	f, err := Connect(ctx, Redis{URL: srv.URL()}, Options{OpTimeout: 100 * time.Millisecond, LeaseTTL: 900 * time.Millisecond,
		FallbackReplicas: 2, Metrics: NewMetrics(reg), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("Connect with Redis down: %v", err)
	}
	defer f.Close()
	if st := f.Status(); st.Mode != ModeFallback || st.Replicas != 2 {
		t.Fatalf("status %+v, want fallback at 1/2", st)
	}
	sem := f.Semaphore("upstream")
	if _, err := sem.Acquire(ctx, "k", 4, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := sem.Acquire(ctx, "k", 4, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := sem.Acquire(ctx, "k", 4, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("beyond 4/2 in fallback: %v, want ErrFull", err)
	}
	srv.Restart()
	poll.Wait(t, ctx, "shared once Redis is up", func() bool { return f.Status().Mode == ModeShared })
	if n := inspect(t, srv).ZCard(ctx, "speech-gateway:sem:upstream:k").Val(); n != 2 {
		t.Fatalf("redis holds %d leases, want the 2 taken in fallback", n)
	}
	if got := testutil.ToFloat64(f.m.redisErrors.WithLabelValues("connect")); got != 1 {
		t.Errorf("redis_errors{connect} = %v, want 1", got)
	}
}

// TestHeartbeatWithManyCallers: a heartbeat that flushes 65536 callers'
// counts (the most a Counter tracks) goes through, in batches, so the
// replica stays shared, and every count reaches Redis. Whether each round
// trip fits the default OpTimeout is a question of speed, which
// BenchmarkHeartbeatWithManyCallers measures: here each may take 10 s, and
// the whole test 3 minutes (a busy 2-core machine took 20 s for the 129
// round trips), so that a busy machine does not fail the test.
func TestHeartbeatWithManyCallers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	f, err := Connect(ctx, Redis{URL: srv.URL()}, Options{OpTimeout: 10 * time.Second, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := f.Counter("characters", time.Hour) // one window for the whole test
	const callers = maxCounterEntries
	for i := range callers {
		c.Add("caller-"+strconv.Itoa(i), 1)
	}
	start := time.Now()
	if err := f.heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat with %d callers: %v", callers, err)
	}
	t.Logf("heartbeat with %d callers: %v in %d round trips", callers, time.Since(start), (callers+maxBatch)/maxBatch)
	if st := f.Status(); st.Mode != ModeShared {
		t.Fatalf("status %+v, want shared", st)
	}
	// The replica's own heartbeat may have taken some counts to Redis
	// just before this one, and be sending them still.
	w, _ := c.current(time.Now())
	rc := inspect(t, srv)
	for _, i := range []int{0, callers / 2, callers - 1} {
		poll.Wait(t, ctx, fmt.Sprintf("caller-%d's count in redis", i), func() bool {
			v, err := rc.Get(ctx, c.rkey("caller-"+strconv.Itoa(i), w)).Int()
			return err == nil && v == 1
		})
	}
}

// TestSlowRedisAtStreamStart: behind a Redis that answers in a second, a
// stream's checks take the local share after StartBudget (50 ms) instead
// of waiting, are counted, and leave the fleet shared; the heartbeat, with
// its own bound, keeps Redis up to date, the lease taken locally included.
// A second is twenty budgets: however busy the machine, the answer comes
// after the budget has run out.
func TestSlowRedisAtStreamStart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	proxy := startLossyProxy(t, srv.Addr())
	ctx := testContext(t)
	reg := prometheus.NewRegistry()
	f, err := Connect(ctx, Redis{URL: "redis://" + proxy.addr()}, Options{OpTimeout: 5 * time.Second, StartBudget: 50 * time.Millisecond,
		LeaseTTL: 3 * time.Second, Metrics: NewMetrics(reg), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	proxy.delay.Store(int64(time.Second))
	start := time.Now()
	if _, err := f.Semaphore("caller_streams").Acquire(ctx, "team-a", 1, 0); err != nil {
		t.Fatalf("acquire behind a slow redis: %v", err)
	}
	acquired := time.Since(start)
	start = time.Now()
	if v, _ := f.Counter("characters", time.Minute).Value(ctx, "team-a"); v != 0 {
		t.Fatalf("count = %d, want 0", v)
	}
	t.Logf("behind a Redis a second away: acquire took %v, read %v", acquired, time.Since(start))
	for _, op := range []string{"acquire", "read"} {
		if got := testutil.ToFloat64(f.m.slow.WithLabelValues(op)); got != 1 {
			t.Errorf("redis_slow{%s} = %v, want 1", op, got)
		}
	}
	if st := f.Status(); st.Mode != ModeShared {
		t.Fatalf("status %+v: a slow Redis is no fallback", st)
	}
	if err := f.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if n := inspect(t, srv).ZCard(ctx, "speech-gateway:sem:caller_streams:team-a").Val(); n != 1 {
		t.Fatalf("redis holds %d leases of team-a, want the 1 granted locally", n)
	}
}

func TestCheckMode(t *testing.T) {
	t.Parallel()
	for mode, ok := range map[string]bool{"": true, DefaultRedisMode: true, "sentinel": true, "cluster": true, "ring": false, "Single": false} {
		if err := (Redis{Mode: mode}).CheckMode(); (err == nil) != ok {
			t.Errorf("CheckMode(%q) = %v", mode, err)
		}
	}
	if _, _, err := (Redis{URL: "redis://127.0.0.1:1", Mode: "ring"}).client(time.Second); err == nil {
		t.Error("a client for mode ring")
	}
}

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for info, ok := range map[string]bool{
		"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n": true,
		"# Server\r\nredis_version:6.2.0\r\n":                           true,
		"# Server\r\nredis_version:7.2.11\r\n":                          true,
		"# Server\r\nredis_version:6.0.16\r\n":                          false,
		"# Server\r\nredis_version:5.0.7\r\n":                           false,
		"# Server\r\nredis_mode:standalone\r\n":                         false,
	} {
		err := checkVersion(info)
		if (err == nil) != ok {
			t.Errorf("checkVersion(%q) = %v, want ok %v", info, err, ok)
		}
		if err != nil && ok == false && !refusal(err) && errors.Is(err, errOldRedis) {
			t.Errorf("an old Redis is not a refusal: %v", err)
		}
	}
}
