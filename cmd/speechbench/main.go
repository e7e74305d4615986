// Command speechbench measures speech-gateway against a direct WebSocket
// client, both talking to the same SLNG simulator on this machine. It
// starts the simulator and the gateway as separate processes, drives
// real-time and unpaced streams through real gRPC clients and through
// slngclient, prints a table and writes the figures as JSON.
//
//	go run ./cmd/speechbench --gateway bin/speech-gateway --sim bin/slngsim
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "speechbench:", err)
		os.Exit(1)
	}
}

type options struct {
	gatewayBin, simBin, out string
	quick                   bool
	ttsLevels, sttLevels    []int
	wave                    time.Duration
	ttfaRuns                int
	only                    string
	profileDir              string
	memProfileRate          int
	clientWindow            int
	soak                    time.Duration
	soakStreams             int
	redisBin                string
	startRuns               int
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad level %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("speechbench", flag.ContinueOnError)
	var o options
	var tts, stt string
	fs.StringVar(&o.gatewayBin, "gateway", "bin/speech-gateway", "speech-gateway binary")
	fs.StringVar(&o.simBin, "sim", "bin/slngsim", "slngsim binary")
	fs.StringVar(&o.out, "out", "bench/results.json", "where to write the results")
	fs.BoolVar(&o.quick, "quick", false, "a reduced run (well under two minutes) that only proves the harness works")
	fs.StringVar(&tts, "tts-levels", "100,250,500,750,1000,1250", "concurrent real-time TTS streams to try")
	fs.StringVar(&stt, "stt-levels", "100,250,500,1000", "concurrent real-time STT streams to try")
	fs.DurationVar(&o.wave, "wave", 6*time.Second, "audio per stream in each wave")
	fs.IntVar(&o.ttfaRuns, "ttfa-runs", 20, "time-to-first-audio samples per setup")
	fs.DurationVar(&o.soak, "soak", 0, "instead of the benchmark, churn streams for this long and report RSS and goroutines")
	fs.IntVar(&o.soakStreams, "soak-streams", 200, "concurrent streams during --soak")
	fs.StringVar(&o.only, "only", "", "run only these parts, comma-separated: tts, stt, ttfa, throughput, start")
	fs.StringVar(&o.redisBin, "redis-server", "redis-server", "redis-server binary, for the stream-start part")
	fs.IntVar(&o.startRuns, "start-runs", 1000, "streams per setup in the stream-start part")
	fs.StringVar(&o.profileDir, "profile", "", "write CPU and allocation profiles of the gateway during the first TTS and STT waves into this directory")
	fs.IntVar(&o.clientWindow, "client-window", 0, "fix the gRPC clients' HTTP/2 stream window at this many bytes, which turns off grpc-go's BDP pings; 0 keeps grpc-go's defaults")
	fs.IntVar(&o.memProfileRate, "profile-mem-rate", 0, "with --profile, the gateway's --debug-mem-profile-rate: 1 counts every allocation (and slows the gateway)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.quick {
		tts, stt, o.wave, o.ttfaRuns, o.startRuns = "10,40", "10,40", 2*time.Second, 5, 40
	}
	var err error
	if o.ttsLevels, err = parseLevels(tts); err != nil {
		return err
	}
	if o.sttLevels, err = parseLevels(stt); err != nil {
		return err
	}
	b := &bench{o: o, out: stdout, res: map[string]any{}}
	defer b.stopAll()
	if o.soak > 0 {
		if err := b.soak(ctx, o.soak, o.soakStreams); err != nil {
			return err
		}
		return b.write()
	}
	if err := b.runAll(ctx); err != nil {
		return err
	}
	return b.write()
}

// bench holds the processes and the results of one run.
type bench struct {
	o     options
	out   io.Writer
	procs []*proc
	res   map[string]any
}

func (b *bench) sim(ctx context.Context, args ...string) (*proc, error) {
	p, err := startSim(ctx, b.o.simBin, args...)
	if err == nil {
		b.procs = append(b.procs, p)
	}
	return p, err
}

func (b *bench) gateway(ctx context.Context, simURL string, args ...string) (*proc, error) {
	// The admin server serves /metrics, where the allocation count comes
	// from; the debug listener serves pprof when profiling.
	admin := []string{"--admin-listen", "127.0.0.1:0"}
	if b.o.profileDir != "" {
		admin = append(admin, "--debug-listen", "127.0.0.1:0", "--debug-mem-profile-rate", strconv.Itoa(b.o.memProfileRate))
	}
	p, err := startGateway(ctx, b.o.gatewayBin, simURL, append(admin, args...)...)
	if err == nil {
		b.procs = append(b.procs, p)
	}
	return p, err
}

func (b *bench) stopAll() {
	for _, p := range b.procs {
		p.stop()
	}
	b.procs = nil
}

func (b *bench) printf(format string, args ...any) { fmt.Fprintf(b.out, format, args...) }

func (b *bench) runAll(ctx context.Context) error {
	b.printf("speechbench: %d CPUs, %s/%s, %s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.RFC3339))
	b.res["machine"] = map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH}
	b.res["quick"] = b.o.quick
	steps := []struct {
		name string
		run  func(context.Context) error
	}{{"tts", b.ttsCapacity}, {"stt", b.sttCapacity}, {"ttfa", b.ttfa}, {"throughput", b.throughput}, {"start", b.streamStart}}
	for _, step := range steps {
		if b.o.only != "" && !slices.Contains(strings.Split(b.o.only, ","), step.name) {
			continue
		}
		if err := step.run(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// ttsCapacity runs waves of real-time TTS streams through the gateway and
// directly, and finds the largest wave whose added p99 stays within 5 ms
// without errors.
func (b *bench) ttsCapacity(ctx context.Context) error {
	st, err := b.stack(ctx, []string{"--realtime", "--bench-stamp", "--max-duration", "1h"},
		[]string{"--pool-max-sessions", "100000", "--max-streams", "0"}, 8)
	if err != nil {
		return err
	}
	defer st.close()
	gw, conns, direct := st.gw, st.conns, st.direct
	text := speechText(b.o.wave, 24000)
	b.printf("Real-time TTS, 24 kHz LINEAR16 in 20 ms chunks, %s of audio per stream; chunk latency from the simulator's send stamp\n", b.o.wave)
	b.printf("%8s | %9s %9s %9s | %9s %9s | %9s %9s | %6s %6s | %10s %9s %8s %8s\n", "streams", "gw p50", "gw p99", "gw p99.9", "dir p50", "dir p99", "add p50", "add p99", "gw err", "d err", "cpu s/min", "rss KiB", "allocs", "steady")
	var levels []map[string]any
	capacity := 0
	var at500 map[string]any
	for i, n := range b.o.ttsLevels {
		stopProfile := b.profile(ctx, gw, i, "tts")
		before, _ := gw.usage()
		peak := watchRSS(gw)
		start := time.Now()
		g := &ttsResult{latency: &samples{}}
		steady := watchAllocs(gw, g, b.o.wave)
		ttsGateway(ctx, conns, n, text, g)
		elapsed := time.Since(start)
		steadyAllocs := steady()
		after, _ := gw.usage()
		peakRSS := peak()
		stopProfile()
		d := ttsDirect(ctx, direct, n, text)
		add50 := g.latency.quantile(.5) - d.latency.quantile(.5)
		add99 := g.latency.quantile(.99) - d.latency.quantile(.99)
		streamMinutes := float64(n) * b.o.wave.Minutes()
		cpuPerMin := (after.cpu - before.cpu).Seconds() / streamMinutes
		rssPer := float64(peakRSS-before.rss) / float64(n) / 1024
		// Every allocation of the gateway during the wave, stream setup
		// included, per chunk delivered.
		allocsPer := (after.mallocs - before.mallocs) / float64(max(g.latency.count(), 1))
		b.printf("%8d | %9.3f %9.3f %9.3f | %9.3f %9.3f | %9.3f %9.3f | %6d %6d | %10.3f %9.1f %8.1f %8.1f\n",
			n, g.latency.quantile(.5), g.latency.quantile(.99), g.latency.quantile(.999),
			d.latency.quantile(.5), d.latency.quantile(.99), add50, add99, g.errors.Load(), d.errors.Load(), cpuPerMin, rssPer, allocsPer, steadyAllocs)
		lv := map[string]any{
			"streams": n, "gateway_p50_ms": g.latency.quantile(.5), "gateway_p99_ms": g.latency.quantile(.99),
			"gateway_p999_ms": g.latency.quantile(.999), "direct_p50_ms": d.latency.quantile(.5),
			"direct_p99_ms": d.latency.quantile(.99), "direct_p999_ms": d.latency.quantile(.999),
			"added_p50_ms": add50, "added_p99_ms": add99, "gateway_errors": g.errors.Load(), "direct_errors": d.errors.Load(),
			"chunks": g.latency.count(), "wave_seconds": elapsed.Seconds(),
			"gateway_cpu_seconds_per_stream_minute": cpuPerMin, "gateway_rss_per_stream_kib": rssPer,
			"gateway_peak_rss_mib": float64(peakRSS) / (1 << 20), "gateway_allocs_per_chunk": allocsPer,
			"gateway_steady_allocs_per_chunk": steadyAllocs,
		}
		levels = append(levels, lv)
		if g.errors.Load() == 0 && add99 <= 5 {
			capacity = n
		}
		if at500 == nil || n <= 500 {
			at500 = lv
		}
	}
	b.printf("\n")
	b.res["tts_levels"] = levels
	b.res["capacity_tts_streams"] = capacity
	b.res["added_latency_p50_ms"] = at500["added_p50_ms"]
	b.res["added_latency_p99_ms"] = at500["added_p99_ms"]
	b.res["direct_latency_p99_ms"] = at500["direct_p99_ms"]
	b.res["added_latency_streams"] = at500["streams"]
	b.res["rss_per_stream_kib"] = at500["gateway_rss_per_stream_kib"]
	b.res["cpu_seconds_per_stream_minute"] = at500["gateway_cpu_seconds_per_stream_minute"]
	return nil
}

// sttCapacity does the same for real-time Transcribe streams, measuring
// the delay from an utterance's last audio to its final transcript.
func (b *bench) sttCapacity(ctx context.Context) error {
	st, err := b.stack(ctx, []string{"--max-duration", "1h"}, []string{"--pool-max-sessions", "100000"}, 8)
	if err != nil {
		return err
	}
	defer st.close()
	gw, conns, direct := st.gw, st.conns, st.direct
	// Each utterance is about 0.5 s of audio.
	audio, ends := utterances(max(int(b.o.wave.Seconds()*2), 1))
	b.printf("Real-time STT, 16 kHz LINEAR16 in 20 ms chunks; delay from an utterance's last audio to its final\n")
	b.printf("%8s | %9s %9s | %9s %9s | %9s | %6s %6s | %8s | %10s\n", "streams", "gw p50", "gw p99", "dir p50", "dir p99", "add p99", "gw err", "d err", "finals", "cpu s/min")
	var levels []map[string]any
	capacity := 0
	for i, n := range b.o.sttLevels {
		stopProfile := b.profile(ctx, gw, i, "stt")
		before, _ := gw.usage()
		start := time.Now()
		g := sttGateway(ctx, conns, n, audio, ends)
		elapsed := time.Since(start)
		after, _ := gw.usage()
		stopProfile()
		cpuPerMin := (after.cpu - before.cpu).Seconds() / (float64(n) * elapsed.Minutes())
		d := sttDirect(ctx, direct, n, audio, ends)
		add99 := g.finalDelay.quantile(.99) - d.finalDelay.quantile(.99)
		b.printf("%8d | %9.3f %9.3f | %9.3f %9.3f | %9.3f | %6d %6d | %8d | %10.3f\n", n,
			g.finalDelay.quantile(.5), g.finalDelay.quantile(.99), d.finalDelay.quantile(.5), d.finalDelay.quantile(.99),
			add99, g.errors.Load(), d.errors.Load(), g.finals.Load(), cpuPerMin)
		levels = append(levels, map[string]any{
			"streams": n, "gateway_p50_ms": g.finalDelay.quantile(.5), "gateway_p99_ms": g.finalDelay.quantile(.99),
			"direct_p50_ms": d.finalDelay.quantile(.5), "direct_p99_ms": d.finalDelay.quantile(.99), "added_p99_ms": add99,
			"gateway_errors": g.errors.Load(), "direct_errors": d.errors.Load(), "finals": g.finals.Load(),
			"finals_expected": int64(n * len(ends)), "gateway_cpu_seconds_per_stream_minute": cpuPerMin,
		})
		if g.errors.Load() == 0 && add99 <= 5 && g.finals.Load() == int64(n*len(ends)) {
			capacity = n
		}
	}
	b.printf("\n")
	b.res["stt_levels"] = levels
	b.res["capacity_stt_streams"] = capacity
	return nil
}

// ttfa measures time to first audio: the gateway with a warm standby, the
// gateway with pooling off, and a direct client dialing per turn, at 0 and
// 50 ms of simulated connect latency.
func (b *bench) ttfa(ctx context.Context) error {
	b.printf("Time to first audio, median of %d (ms)\n", b.o.ttfaRuns)
	b.printf("%16s | %9s %9s %9s\n", "connect latency", "warm", "pool off", "direct")
	rows := map[string]any{}
	for _, lat := range []time.Duration{0, 50 * time.Millisecond} {
		sim, err := b.sim(ctx, "--connect-latency", lat.String())
		if err != nil {
			return err
		}
		warm, err := b.gateway(ctx, sim.addr, "--prewarm-tts", "{}")
		if err != nil {
			return err
		}
		off, err := b.gateway(ctx, sim.addr, "--pool-warm=false")
		if err != nil {
			return err
		}
		direct, err := directClient(sim.addr)
		if err != nil {
			return err
		}
		wc, err := gatewayClients(warm.addr, 1, b.o.clientWindow)
		if err != nil {
			return err
		}
		oc, err := gatewayClients(off.addr, 1, b.o.clientWindow)
		if err != nil {
			return err
		}
		pause := lat + 100*time.Millisecond // time to replace the standby
		w, err := ttfaGateway(ctx, wc[0], b.o.ttfaRuns, pause)
		if err != nil {
			return err
		}
		p, err := ttfaGateway(ctx, oc[0], b.o.ttfaRuns, 0)
		if err != nil {
			return err
		}
		d, err := ttfaDirect(ctx, direct, b.o.ttfaRuns)
		if err != nil {
			return err
		}
		_ = wc[0].Close()
		_ = oc[0].Close()
		b.printf("%16s | %9.2f %9.2f %9.2f\n", lat, w.quantile(.5), p.quantile(.5), d.quantile(.5))
		key := fmt.Sprintf("connect_%dms", lat.Milliseconds())
		rows[key] = map[string]any{"warm_ms": w.quantile(.5), "pool_off_ms": p.quantile(.5), "direct_ms": d.quantile(.5)}
		if lat == 50*time.Millisecond {
			b.res["ttfa_warm_ms"] = w.quantile(.5)
			b.res["ttfa_pool_off_ms"] = p.quantile(.5)
			b.res["ttfa_direct_ms"] = d.quantile(.5)
		}
	}
	b.printf("\n")
	b.res["ttfa"] = rows
	return nil
}

// throughput streams unpaced audio through the gateway and directly.
func (b *bench) throughput(ctx context.Context) error {
	st, err := b.stack(ctx, nil, nil, 2)
	if err != nil {
		return err
	}
	defer st.close()
	conns, direct := st.conns, st.direct
	const streams = 8
	text := speechText(4*b.o.wave, 24000)
	start := time.Now()
	g := ttsGateway(ctx, conns, streams, text, &ttsResult{latency: &samples{}})
	gs := time.Since(start)
	start = time.Now()
	d := ttsDirect(ctx, direct, streams, text)
	ds := time.Since(start)
	gm := float64(g.bytes.Load()) / gs.Seconds() / 1e6
	dm := float64(d.bytes.Load()) / ds.Seconds() / 1e6
	b.printf("Unpaced TTS audio, %d streams: gateway %.1f MB/s, direct %.1f MB/s (errors %d, %d)\n\n", streams, gm, dm, g.errors.Load(), d.errors.Load())
	b.res["throughput_gateway_mbps"] = gm
	b.res["throughput_direct_mbps"] = dm
	return nil
}

// stack is a simulator, a gateway in front of it, gRPC connections to the
// gateway and a direct client to the simulator: the two paths a benchmark
// compares.
type stack struct {
	sim, gw *proc
	conns   []*grpc.ClientConn
	direct  *slngclient.Client
}

func (b *bench) stack(ctx context.Context, simArgs, gwArgs []string, nconns int) (*stack, error) {
	sim, err := b.sim(ctx, simArgs...)
	if err != nil {
		return nil, err
	}
	gw, err := b.gateway(ctx, sim.addr, gwArgs...)
	if err != nil {
		return nil, err
	}
	conns, err := gatewayClients(gw.addr, nconns, b.o.clientWindow)
	if err != nil {
		return nil, err
	}
	direct, err := directClient(sim.addr)
	if err != nil {
		return nil, err
	}
	return &stack{sim: sim, gw: gw, conns: conns, direct: direct}, nil
}

func (st *stack) close() {
	for _, c := range st.conns {
		_ = c.Close()
	}
}

// watchAllocs counts the gateway's allocations per chunk in the middle
// third of a wave, when every stream is speaking and none is starting or
// ending, until the returned func is called (0 if the wave was too short
// to tell). Reading /metrics allocates too: a second read right after the
// first measures that, and it is taken off.
func watchAllocs(gw *proc, r *ttsResult, wave time.Duration) func() float64 {
	res := make(chan float64, 1)
	stop := make(chan struct{})
	go func() {
		var m [3]float64
		var b [2]float64
		for i := range 3 {
			if i != 1 {
				select {
				case <-time.After(wave / 3):
				case <-stop:
					res <- 0
					return
				}
			}
			u, err := gw.usage()
			if err != nil {
				res <- 0
				return
			}
			m[i] = u.mallocs
			if i != 1 {
				b[i/2] = float64(r.bytes.Load())
			}
		}
		scrape := m[1] - m[0]
		const chunk = 960 // 20 ms of 24 kHz LINEAR16
		if chunks := (b[1] - b[0]) / chunk; chunks > 0 {
			res <- max(m[2]-m[0]-2*scrape, 0) / chunks
			return
		}
		res <- 0
	}()
	return func() float64 {
		close(stop)
		return <-res
	}
}

// watchRSS samples p's RSS every 100 ms until the returned func is called,
// which returns the peak.
func watchRSS(p *proc) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if u, err := p.usage(); err == nil && u.rss > peak {
				peak = u.rss
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

func (b *bench) write() error {
	if b.o.out == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(b.o.out), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(b.res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.o.out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	b.printf("results written to %s\n", b.o.out)
	return nil
}

// profile takes a CPU profile and an allocation profile of gw during the
// first wave of a part, when profiling is on; the returned func waits for
// both.
func (b *bench) profile(ctx context.Context, gw *proc, wave int, part string) func() {
	if b.o.profileDir == "" || wave != 0 {
		return func() {}
	}
	d := max(b.o.wave-time.Second, time.Second)
	var wg sync.WaitGroup
	for kind, file := range map[string]string{"profile": part + "-cpu.pprof", "allocs": part + "-allocs.pprof"} {
		wg.Go(func() {
			if err := gw.profile(ctx, kind, d, filepath.Join(b.o.profileDir, file)); err != nil {
				fmt.Fprintln(os.Stderr, "speechbench:", err)
			}
		})
	}
	return wg.Wait
}
