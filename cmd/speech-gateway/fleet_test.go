package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/callers"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redistest"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestFleet runs the real binary as two replicas sharing one real Redis
// (Debian's redis-server) in front of one simulator, and shows that the
// limits hold across them: a caller's concurrent streams, the metering of
// what callers used, and a Redis that stops and comes back.
func TestFleet(t *testing.T) {
	t.Parallel()
	// The subtests run after this function returns: the context ends with
	// them, at cleanup.
	bin := buildGatewayBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)

	t.Run("quotas, metering and a Redis outage", func(t *testing.T) {
		t.Parallel()
		const key = "sk_fleet_quota"
		sim := slngtest.NewServer(t, slngsim.Options{APIKey: key})
		rds := redistest.Start(t)
		// Redis answers in time however busy the machine (a check past
		// --redis-start-budget takes the replica's share, which holds the
		// quota only approximately); stopped, it refuses connections at
		// once, whatever the timeout.
		args := []string{"--slng-base-url", sim.URL(), "--redis-url", rds.URL(), "--fleet-lease-ttl", "900ms",
			"--redis-timeout", "5s", "--redis-start-budget", "5s", "--caller-max-streams", "1", "--trust-asserted-caller-identity"}
		gws := startGatewayProcs(ctx, t, bin, 2, func(i int) (string, string, []string) {
			return fmt.Sprintf("replica-%d", i), key, args
		})
		a, b := dial(t, gws[0].grpc), dial(t, gws[1].grpc)

		// A caller's concurrent streams count across both replicas.
		holdOneStream(ctx, t, a, b, "team-a")

		// Metering: what each caller used, summed over both replicas, is
		// exactly the text and audio of its streams.
		meter := as(ctx, "meter")
		var chars, ttsBytes int
		for i, text := range []string{"Grüße aus Köln, über alles.", "The second replica speaks too."} {
			audio, err := synthesizeText(meter, []*grpc.ClientConn{a, b}[i], text)
			if err != nil {
				t.Fatal(err)
			}
			chars += utf8.RuneCountInString(text)
			ttsBytes += len(audio)
		}
		const heard = "Transcribed on the first replica."
		if _, err := transcribe(meter, a, heard); err != nil {
			t.Fatal(err)
		}
		sttBytes := len(slngsim.Synthesize(heard, "linear16", 16000))
		want := map[string]float64{
			"speech_gateway_usage_characters_total":          float64(chars),
			"speech_gateway_usage_synthesized_seconds_total": float64(ttsBytes) / 48000,
			"speech_gateway_usage_transcribed_seconds_total": float64(sttBytes) / 32000,
			"speech_gateway_usage_streams_total":             3,
		}
		// A stream's usage is counted when its handler returns, which may
		// be just after the caller has seen the end.
		var got map[string]float64
		poll.Wait(t, ctx, "the usage counters", func() bool {
			got = map[string]float64{}
			for _, g := range gws {
				for name := range want {
					got[name] += sumMetric(t, scrapeMetrics(ctx, t, g.admin), name, map[string]string{"caller": "meter"})
				}
			}
			for name, w := range want {
				if math.Abs(got[name]-w) > 1e-9 {
					return false
				}
			}
			return true
		})
		if s := sumMetric(t, scrapeMetrics(ctx, t, gws[0].admin), "speech_gateway_usage_upstream_session_seconds_total", map[string]string{"caller": "meter"}); s <= 0 {
			t.Errorf("no upstream session seconds metered")
		}
		// Both replicas see each other, each from its first heartbeat
		// after the other's.
		poll.Wait(t, ctx, "both replicas to see each other", func() bool {
			for _, g := range gws {
				if sumMetric(t, scrapeMetrics(ctx, t, g.admin), "speech_gateway_fleet_replicas", nil) != 2 {
					return false
				}
			}
			return true
		})

		// Redis stops: both replicas fall back and keep serving, with a
		// metric and a readiness detail; then Redis is back, and so are the
		// shared limits.
		rds.Stop()
		for i, g := range gws {
			if _, err := synthesizeText(as(ctx, "during-outage"), []*grpc.ClientConn{a, b}[i], "Still speaking."); err != nil {
				t.Fatalf("%s during the outage: %v", g.name, err)
			}
			waitMode(ctx, t, g, "fallback", "redis unreachable since")
		}
		rds.Restart()
		for _, g := range gws {
			waitMode(ctx, t, g, "shared", "shared limits in redis, 2 replicas")
			if n := sumMetric(t, scrapeMetrics(ctx, t, g.admin), "speech_gateway_fleet_fallbacks_total", nil); n != 1 {
				t.Errorf("%s: fleet_fallbacks_total = %v, want 1", g.name, n)
			}
		}
		holdOneStream(ctx, t, b, a, "team-a")
		// Through it all, the Redis client's own words went into the JSON
		// log, and the fallback and the recovery were logged.
		for _, g := range gws {
			logs := g.logs.String()
			for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
				if !json.Valid([]byte(line)) {
					t.Errorf("%s logged a line that is not JSON: %s", g.name, line)
				}
			}
			for _, want := range []string{"redis unreachable: limits hold locally", "redis answers again"} {
				if !strings.Contains(logs, want) {
					t.Errorf("%s did not log %q", g.name, want)
				}
			}
		}
	})

	t.Run("one session budget for both", func(t *testing.T) {
		t.Parallel()
		const key, budget = "sk_fleet_budget", 3
		// SLNG allows the key as many connections as the budget: one more
		// and it refuses the handshake, which the test must never see.
		sim := slngtest.NewServer(t, slngsim.Options{APIKey: key, MaxConcurrentPerKey: budget})
		rds := redistest.Start(t)
		const ttl = 900 * time.Millisecond
		// Redis answers in time however busy the machine: a check past
		// --redis-start-budget takes the replica's share instead, which
		// holds the budget only approximately (TestSlowRedisAtStreamStart).
		args := []string{"--slng-base-url", sim.URL(), "--redis-url", rds.URL(), "--fleet-lease-ttl", ttl.String(),
			"--upstream-session-budget", fmt.Sprint(budget), "--pool-acquire-timeout", "1500ms",
			"--pool-max-idle-age", "1s", "--pool-recent-ttl", "1s", "--redis-timeout", "5s", "--redis-start-budget", "5s"}
		gws := startGatewayProcs(ctx, t, bin, 2, func(i int) (string, string, []string) {
			return fmt.Sprintf("budget-%d", i), key, args
		})
		conns := []*grpc.ClientConn{dial(t, gws[0].grpc), dial(t, gws[1].grpc)}

		// A burst of three times the budget across both replicas: every
		// stream speaks or is refused with the budget's reason, and SLNG
		// never sees one connection too many.
		errs := make([]error, 3*budget)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn := conns[i%2]
				if i%3 == 2 {
					_, errs[i] = transcribe(ctx, conn, fmt.Sprintf("Burst stream %d.", i))
					return
				}
				text := fmt.Sprintf("Burst stream %d.", i)
				audio, err := synthesizeText(ctx, conn, text)
				if err == nil {
					if got, derr := slngsim.Decode(audio, "linear16", 24000); derr != nil || got != text {
						err = fmt.Errorf("spoke %q (%v), want %q", got, derr, text)
					}
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case status.Code(err) == codes.ResourceExhausted && reasonOf(err) == "UPSTREAM_BUDGET_EXHAUSTED" && hasRetryInfo(err):
			default:
				t.Errorf("burst stream %d: %v, want OK or RESOURCE_EXHAUSTED / UPSTREAM_BUDGET_EXHAUSTED with RetryInfo", i, err)
			}
		}
		t.Logf("burst of %d streams with a budget of %d: %d OK, the rest refused", len(errs), budget, ok)
		if ok < budget {
			t.Errorf("only %d of the burst's streams were served", ok)
		}
		if n := sim.Stats().Rejected; n != 0 {
			t.Fatalf("the simulator refused %d connections for the key limit", n)
		}

		// One replica holds the whole budget (once the standbys of the
		// burst have aged out), then dies without a word: its leases expire
		// within the lease TTL and the other replica's caller gets one.
		poll.Wait(t, ctx, "the burst's standbys gone", func() bool {
			var held float64
			for _, g := range gws {
				held += sumMetric(t, scrapeMetrics(ctx, t, g.admin), "speech_gateway_fleet_leases", map[string]string{"semaphore": "upstream"})
			}
			return held == 0
		})
		holdCtx, release := context.WithCancel(ctx)
		defer release()
		for i := range budget {
			stream, err := speechv1.NewTextToSpeechServiceClient(conns[0]).Synthesize(holdCtx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("held stream %d: %v", i, err)
			}
		}
		_, err := synthesizeText(ctx, conns[1], "No room for me.")
		if status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "UPSTREAM_BUDGET_EXHAUSTED" {
			t.Fatalf("with the budget held by the other replica: %v, want UPSTREAM_BUDGET_EXHAUSTED", err)
		}
		killed := time.Now()
		if err := gws[0].cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-gws[0].exited
		gws[0].waitErr = nil // killed on purpose
		if _, err := synthesizeText(ctx, conns[1], "Room at last."); err != nil {
			t.Fatalf("after the holder died: %v", err)
		}
		took := time.Since(killed)
		t.Logf("the dead replica's sessions were free for the other after %v (lease TTL %v)", took, ttl)
		if took > ttl+500*time.Millisecond {
			t.Errorf("the dead replica's sessions were free after %v, want within the lease TTL (%v)", took, ttl)
		}
		if n := sim.Stats().Rejected; n != 0 {
			t.Errorf("the simulator refused %d connections for the key limit", n)
		}
	})
}

// hasRetryInfo reports whether a status carries RetryInfo.
func hasRetryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// as is ctx with the caller id in the x-caller-id metadata.
func as(ctx context.Context, caller string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-caller-id", caller)
}

// holdOneStream holds one Synthesize stream of caller on one replica and
// shows that, with --caller-max-streams 1, the other refuses the caller a
// second (not another caller), and admits it once the first has ended.
func holdOneStream(ctx context.Context, t *testing.T, on, other *grpc.ClientConn, caller string) {
	t.Helper()
	sctx, stop := context.WithCancel(as(ctx, caller))
	defer stop()
	stream, err := speechv1.NewTextToSpeechServiceClient(on).Synthesize(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStarted().GetCallerId() != caller {
		t.Fatalf("started: %v, %v", first, err)
	}
	_, err = synthesizeText(as(ctx, caller), other, "A second stream.")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || reasonOf(err) != "CALLER_QUOTA_EXCEEDED" {
		t.Fatalf("a second stream of %s on the other replica: %v, want RESOURCE_EXHAUSTED / CALLER_QUOTA_EXCEEDED", caller, err)
	}
	var qf *errdetails.QuotaFailure
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.QuotaFailure:
			qf = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if v := qf.GetViolations(); len(v) != 1 || v[0].GetSubject() != "caller:"+caller || retry == nil {
		t.Fatalf("details: %v, %v", qf, retry)
	}
	if _, err := synthesizeText(as(ctx, caller+"-other"), other, "Another caller."); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	poll.Wait(t, ctx, "the caller admitted again", func() bool {
		_, err := synthesizeText(as(ctx, caller), other, "Now it may.")
		return err == nil
	})
}

// waitMode waits until the replica's fleet is in mode, by its metric and
// its /readyz, which stays ready and says why.
func waitMode(ctx context.Context, t *testing.T, g *gatewayProc, mode, readyz string) {
	t.Helper()
	poll.Wait(t, ctx, g.name+" in "+mode, func() bool {
		if sumMetric(t, scrapeMetrics(ctx, t, g.admin), "speech_gateway_fleet_mode", map[string]string{"mode": mode}) != 1 {
			return false
		}
		code, body := get(ctx, t, httpClient, "http://"+g.admin+"/readyz")
		return code == http.StatusOK && strings.HasPrefix(body, "ok\n") && strings.Contains(body, readyz)
	})
}

// get fetches url with client, and fails the test on an error.
func get(ctx context.Context, t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrapeMetrics reads a gateway's /metrics.
func scrapeMetrics(ctx context.Context, t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := get(ctx, t, httpClient, "http://"+admin+"/metrics")
	return parseMetrics(t, body)
}

// parseMetrics parses a /metrics page.
func parseMetrics(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// sumMetric adds up the series of a counter or gauge whose labels include
// match.
func sumMetric(t *testing.T, mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if ok {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestShippedAccessPolicyParses: the example policy of the access-policy
// component is a valid policy.
func TestShippedAccessPolicyParses(t *testing.T) {
	t.Parallel()
	p, err := callers.LoadPolicy("../../deploy/kubernetes/components/access-policy/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Allows("spiffe://cluster.local/ns/support/sa/agent", "Transcribe", "deepgram/nova:3") {
		t.Error("the example policy does not let support transcribe")
	}
}

// TestRunRejectsBadFleetConfig: the callers' and the fleet's settings are
// checked at start-up, and a Redis that refuses the password stops it with
// a message that names the address but never the password.
func TestRunRejectsBadFleetConfig(t *testing.T) {
	t.Parallel()
	locked := redistest.StartWith(t, redistest.Options{Password: "the-right-one"})
	wrongURL := strings.Replace(locked.URL(), "redis://", "redis://:SENTINEL_REDIS_PASSWORD@", 1)
	wrongFile := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(wrongFile, []byte("SENTINEL_REDIS_PASSWORD\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--caller-identity", "cookie"}, nil, "caller identity"},
		{nil, map[string]string{"SPEECH_GATEWAY_CALLER_IDENTITY": "metadata:grpc-timeout"}, "caller identity"},
		{[]string{"--access-policy", "/nonexistent/policy.yaml", "--caller-identity", "peer"}, nil, "access policy"},
		{[]string{"--access-policy", "../../deploy/kubernetes/components/access-policy/policy.yaml"}, nil, "--trust-asserted-caller-identity"},
		{nil, map[string]string{"SPEECH_GATEWAY_CALLER_CHARACTERS_PER_MINUTE": "100", "SPEECH_GATEWAY_CALLER_IDENTITY": "l5d,metadata:x-team"}, "metadata:x-team"},
		{[]string{"--caller-identity", "xfcc:Hash=abc"}, nil, "caller identity"},
		{[]string{"--caller-metric-labels", "-1"}, nil, "--caller-metric-labels"},
		{nil, map[string]string{"SPEECH_GATEWAY_FLEET_FALLBACK_REPLICAS": "-3"}, "--fleet-fallback-replicas"},
		{[]string{"--fleet-lease-ttl", "10ms"}, nil, "--fleet-lease-ttl"},
		{[]string{"--redis-url", "http://SENTINEL_REDIS_PASSWORD@example.com"}, nil, "redis url"},
		{[]string{"--redis-url", wrongURL, "--redis-timeout", "1s"}, nil, locked.Addr()},
		{[]string{"--redis-url", locked.URL(), "--redis-password-file", wrongFile}, nil, locked.Addr()},
		{[]string{"--redis-url", locked.URL(), "--redis-password-file", "/nonexistent"}, nil, "--redis-password-file"},
		{[]string{"--redis-url", locked.URL(), "--redis-mode", "ring"}, nil, "--redis-mode"},
		{[]string{"--redis-url", locked.URL(), "--redis-mode", "sentinel"}, nil, "master_name"},
		{[]string{"--redis-start-budget", "-1s"}, nil, "--redis-start-budget"},
	} {
		var stderr syncBuffer
		// A configuration accepted by mistake serves until the deadline.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := run(ctx, append(append([]string{"--dev"}, tc.args...), "--listen", "127.0.0.1:0", "--admin-listen", ""), envFrom(tc.env), &stderr)
		cancel()
		switch {
		case err == nil:
			t.Errorf("run(%v, %v) succeeded", tc.args, tc.env)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("run(%v, %v) = %v, want it to mention %q", tc.args, tc.env, err, tc.want)
		case strings.Contains(err.Error()+stderr.String(), "SENTINEL_REDIS_PASSWORD"):
			t.Errorf("run(%v) reported the Redis password: %v", tc.args, err)
		}
	}
}
