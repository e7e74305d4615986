package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/redisping"
)

// startRedis runs redis-server (Debian's package) on a free loopback port,
// without persistence, and waits until it answers.
func startRedis(ctx context.Context, bin string) (*proc, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s not found: the stream-start part needs a real Redis (apt-get install redis-server), or leave it out with --only: %w", bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.CommandContext(ctx, path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: "redis-server", cmd: cmd, addr: fmt.Sprintf("redis://127.0.0.1:%d/0", port), done: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		p.done <- err
	}()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch err := redisping.Wait(wctx, fmt.Sprintf("127.0.0.1:%d", port), exited); {
	case err == nil:
		return p, nil
	case errors.Is(err, redisping.ErrExited):
		return nil, fmt.Errorf("redis-server exited at start-up: %v", <-p.done)
	default:
		p.stop()
		return nil, errors.New("redis-server did not answer PING in 10 s")
	}
}

// streamStart measures stream start, from the SynthesizeText call to its
// `started` message, with the fleet's limits kept per process and kept in
// Redis: what sharing them adds to each stream. With a warm standby the
// stream dials nothing; with the pool off it dials, and asks the SLNG
// session budget first; with caller limits it also takes its caller's
// place and checks its characters.
func (b *bench) streamStart(ctx context.Context) error {
	rds, err := b.keep(startRedis(ctx, b.o.redisBin))
	if err != nil {
		return err
	}
	sim, err := b.sim(ctx)
	if err != nil {
		return err
	}
	runs := b.o.startRuns
	b.printf("Stream start (SynthesizeText to `started`), fleet limits per process and in Redis, %d streams each (ms)\n", runs)
	b.printf("%22s | %9s %9s | %9s %9s | %9s %9s | %9s %9s\n", "setup", "local p50", "local p99", "redis p50", "redis p99",
		"add p50", "add p99", "rtt p50", "rtt p99")
	budget := []string{"--upstream-session-budget", "100000", "--dial-rate", "-1", "--pool-background-dial-rate", "-1"}
	callerLimits := []string{"--caller-max-streams", "100000", "--caller-characters-per-minute", "1000000000", "--trust-asserted-caller-identity"}
	rows := map[string]any{}
	for _, setup := range []struct {
		name, key string
		warm      bool
		args      []string
	}{
		// A standby serves the stream: nothing to ask the budget.
		{"warm, budget", "warm_budget", true, append([]string{"--prewarm-tts", "{}"}, budget...)},
		// The stream dials, and asks the budget first.
		{"dial, budget", "dial_budget", false, append([]string{"--pool-warm=false"}, budget...)},
		// And its caller's streams and characters too.
		{"dial, budget + caller", "dial_all", false, append(append([]string{"--pool-warm=false"}, budget...), callerLimits...)},
	} {
		// Both gateways run side by side and take turns, stream by stream,
		// so that whatever else the machine does weighs on both alike.
		var conns [2]*grpc.ClientConn
		var redisGW *proc
		for i, shared := range []bool{false, true} {
			args := append([]string{}, setup.args...)
			if shared {
				args = append(args, "--redis-url", rds.addr)
			}
			gw, err := b.gateway(ctx, sim.addr, args...)
			if err != nil {
				return err
			}
			cs, err := gatewayClients(gw.addr, 1, b.o.clientWindow)
			if err != nil {
				return err
			}
			conns[i] = cs[0]
			if shared {
				redisGW = gw
			}
		}
		pause := time.Duration(0)
		if setup.warm {
			pause = 5 * time.Millisecond // the standby's replacement
		}
		res := [2]*samples{{}, {}}
		// The first streams warm up the connections; they do not count.
		for n := range runs + 5 {
			for i, conn := range conns {
				d, err := startTime(ctx, conn, pause)
				if err != nil {
					return err
				}
				if n >= 5 {
					res[i].add(d)
				}
			}
		}
		for _, c := range conns {
			_ = c.Close()
		}
		local, shared := res[0], res[1]
		add50 := shared.quantile(.5) - local.quantile(.5)
		add99 := shared.quantile(.99) - local.quantile(.99)
		// What the gateway itself timed of its Redis round trips taking a
		// lease, from its histogram: on the streams' path when they dial.
		rtt50, rtt99, err := redisGW.histogramQuantiles("speech_gateway_fleet_redis_seconds", `op="acquire"`, .5, .99)
		if err != nil {
			return err
		}
		rtt := fmt.Sprintf("%9.3f %9.3f", rtt50, rtt99)
		if setup.warm {
			// The acquisitions are the standbys' refills, off the path.
			rtt = fmt.Sprintf("%9s %9s", "-", "-")
		}
		b.printf("%22s | %9.3f %9.3f | %9.3f %9.3f | %9.3f %9.3f | %s\n", setup.name,
			local.quantile(.5), local.quantile(.99), shared.quantile(.5), shared.quantile(.99), add50, add99, rtt)
		rows[setup.key] = map[string]any{
			"local_p50_ms": local.quantile(.5), "local_p99_ms": local.quantile(.99),
			"redis_p50_ms": shared.quantile(.5), "redis_p99_ms": shared.quantile(.99),
			"added_p50_ms": add50, "added_p99_ms": add99, "streams": runs,
			"redis_acquire_p50_ms": rtt50, "redis_acquire_p99_ms": rtt99,
		}
		if setup.key == "dial_budget" {
			b.res["stream_start_budget_added_p99_ms"] = add99
		}
	}
	b.printf("\n")
	b.res["stream_start"] = rows
	return nil
}

// startTime runs one SynthesizeText, after pause, and returns the time
// from the call to `started`.
func startTime(ctx context.Context, conn *grpc.ClientConn, pause time.Duration) (time.Duration, error) {
	if pause > 0 {
		time.Sleep(pause)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "x-caller-id", "bench")
	start := time.Now()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Go."})
	if err != nil {
		return 0, err
	}
	var took time.Duration
	for {
		m, err := stream.Recv()
		if err != nil {
			if !isEOF(err) {
				return 0, err
			}
			return took, nil
		}
		if took == 0 && m.GetStarted() != nil {
			took = time.Since(start)
		}
	}
}

// histogramQuantiles estimates quantiles, in milliseconds, of the gateway's
// histogram name (in seconds) over the series whose labels contain match,
// interpolating within buckets as Prometheus's histogram_quantile does.
func (p *proc) histogramQuantiles(name, match string, qs ...float64) (float64, float64, error) {
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	type bucket struct{ le, count float64 }
	var buckets []bucket
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_bucket{") || !strings.Contains(line, match) {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		le, rest, _ := strings.Cut(rest, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[strings.LastIndexByte(rest, ' '):]), 64)
		if err != nil {
			return 0, 0, err
		}
		bound := math.Inf(1)
		if le != "+Inf" {
			if bound, err = strconv.ParseFloat(le, 64); err != nil {
				return 0, 0, err
			}
		}
		buckets = append(buckets, bucket{bound, v})
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if len(buckets) == 0 || buckets[len(buckets)-1].count == 0 {
		return 0, 0, fmt.Errorf("%s{%s} has no observations", name, match)
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	total := buckets[len(buckets)-1].count
	quantile := func(q float64) float64 {
		rank := q * total
		lower, below := 0.0, 0.0
		for _, b := range buckets {
			if b.count >= rank {
				if math.IsInf(b.le, 1) {
					return lower * 1000
				}
				return (lower + (b.le-lower)*(rank-below)/max(b.count-below, 1)) * 1000
			}
			lower, below = b.le, b.count
		}
		return lower * 1000
	}
	return quantile(qs[0]), quantile(qs[1]), nil
}
