package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	bin := buildGatewayBinary(ctx, t)

	t.Run("quotas, metering and a Redis outage", func(t *testing.T) {
		t.Parallel()
		const key = "sk_fleet_quota"
		sim := slngtest.NewServer(t, slngsim.Options{APIKey: key})
		rds := redistest.Start(t)
		args := []string{"--slng-base-url", sim.URL(), "--redis-url", rds.URL(), "--fleet-lease-ttl", "900ms",
			"--redis-timeout", "100ms", "--caller-max-streams", "1"}
		var gws [2]*gatewayProc
		var wg sync.WaitGroup
		for i := range gws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				gws[i] = startGatewayProc(ctx, t, bin, fmt.Sprintf("replica-%d", i), key, args)
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
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
		poll(ctx, t, "the usage counters", func() bool {
			got = map[string]float64{}
			for _, g := range gws {
				for name := range want {
					got[name] += sumMetric(t, scrape(ctx, t, g.admin), name, map[string]string{"caller": "meter"})
				}
			}
			for name, w := range want {
				if math.Abs(got[name]-w) > 1e-9 {
					return false
				}
			}
			return true
		})
		if s := sumMetric(t, scrape(ctx, t, gws[0].admin), "speech_gateway_usage_upstream_session_seconds_total", map[string]string{"caller": "meter"}); s <= 0 {
			t.Errorf("no upstream session seconds metered")
		}
		// Both replicas see each other.
		for _, g := range gws {
			if n := sumMetric(t, scrape(ctx, t, g.admin), "speech_gateway_fleet_replicas", nil); n != 2 {
				t.Errorf("%s sees %v replicas, want 2", g.name, n)
			}
		}

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
			if n := sumMetric(t, scrape(ctx, t, g.admin), "speech_gateway_fleet_fallbacks_total", nil); n != 1 {
				t.Errorf("%s: fleet_fallbacks_total = %v, want 1", g.name, n)
			}
		}
		holdOneStream(ctx, t, b, a, "team-a")
	})
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
	poll(ctx, t, "the caller admitted again", func() bool {
		_, err := synthesizeText(as(ctx, caller), other, "Now it may.")
		return err == nil
	})
}

// waitMode waits until the replica's fleet is in mode, by its metric and
// its /readyz, which stays ready and says why.
func waitMode(ctx context.Context, t *testing.T, g *gatewayProc, mode, readyz string) {
	t.Helper()
	poll(ctx, t, g.name+" in "+mode, func() bool {
		if sumMetric(t, scrape(ctx, t, g.admin), "speech_gateway_fleet_mode", map[string]string{"mode": mode}) != 1 {
			return false
		}
		code, body := get(ctx, t, "http://"+g.admin+"/readyz")
		return code == http.StatusOK && strings.HasPrefix(body, "ok\n") && strings.Contains(body, readyz)
	})
}

// poll checks cond every 20 ms until it holds, within ctx.
func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within the test's deadline", what)
		case <-tick.C:
		}
	}
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
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

// scrape reads a gateway's /metrics.
func scrape(ctx context.Context, t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := get(ctx, t, "http://"+admin+"/metrics")
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
