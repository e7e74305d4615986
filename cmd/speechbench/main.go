// Command speechbench measures speech-gateway against the floor (speechfloor,
// the cheapest relay from gRPC to SLNG these libraries allow) and against a
// direct WebSocket client, all three talking to the same SLNG simulator on
// this machine. It starts the simulator, the gateway and the floor as
// separate processes, drives real-time and unpaced streams through real
// gRPC clients and through slngclient, prints a table and writes the
// figures as JSON. With --pin, the relay under test runs alone on CPU 0 and
// everything else on CPU 1.
//
//	go run ./cmd/speechbench --gateway bin/speech-gateway --floor bin/speechfloor --sim bin/slngsim
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
	"syscall"
	"time"
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
	gatewayBin, floorBin string
	simBin, out          string
	quick, pin           bool
	ttsLevels, sttLevels []int
	wave                 time.Duration
	ttfaRuns             int
	only                 string
	profileDir           string
	memProfileRate       int
	clientWindow         int
	soak                 time.Duration
	soakStreams          int
	redisBin             string
	startRuns            int
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
	fs.StringVar(&o.floorBin, "floor", "", "speechfloor binary, the bare relay the gateway is measured against (default: speechfloor next to the gateway binary)")
	fs.StringVar(&o.simBin, "sim", "bin/slngsim", "slngsim binary")
	fs.BoolVar(&o.pin, "pin", false, "run the relay under test (gateway or floor) alone on CPU 0 and the load generator and simulator on the other CPUs; needs at least 2")
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
	fs.StringVar(&o.profileDir, "profile", "", "write CPU and allocation profiles of the gateway and the floor during the first TTS and STT waves into this directory")
	fs.IntVar(&o.clientWindow, "client-window", 0, "fix the gRPC clients' HTTP/2 stream window at this many bytes, which turns off grpc-go's BDP pings; 0 keeps grpc-go's defaults")
	fs.IntVar(&o.memProfileRate, "profile-mem-rate", 0, "with --profile, the gateway's --debug-mem-profile-rate: 1 counts every allocation (and slows the gateway)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.floorBin == "" {
		o.floorBin = filepath.Join(filepath.Dir(o.gatewayBin), "speechfloor")
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
	if o.pin {
		if b.loadCPUs, err = pinSelf(); err != nil {
			return err
		}
	}
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
	// loadCPUs is how many CPUs the load generator and simulator share
	// with --pin.
	loadCPUs int
}

func (b *bench) sim(ctx context.Context, args ...string) (*proc, error) {
	return b.keep(startSim(ctx, b.o.simBin, args...))
}

func (b *bench) gateway(ctx context.Context, simURL string, args ...string) (*proc, error) {
	// The admin server serves /metrics, where the allocation count comes
	// from; the debug listener serves pprof when profiling.
	admin := []string{"--admin-listen", "127.0.0.1:0"}
	if b.o.profileDir != "" {
		admin = append(admin, "--debug-listen", "127.0.0.1:0", "--debug-mem-profile-rate", strconv.Itoa(b.o.memProfileRate))
	}
	return b.keep(startGateway(ctx, b.relayCPU(), b.o.gatewayBin, simURL, append(admin, args...)...))
}

// floor starts the bare relay against simURL.
func (b *bench) floor(ctx context.Context, simURL string) (*proc, error) {
	return b.keep(startFloor(ctx, b.relayCPU(), b.o.floorBin, simURL, b.o.profileDir != ""))
}

// relayCPU is where a relay under test runs: alone on relayCPU with
// --pin, else wherever the kernel puts it.
func (b *bench) relayCPU() int {
	if b.o.pin {
		return relayCPU
	}
	return anyCPU
}

// keep adds a started process to those stopAll stops.
func (b *bench) keep(p *proc, err error) (*proc, error) {
	if err == nil {
		b.procs = append(b.procs, p)
	}
	return p, err
}

// stop stops procs before the end of the run, and forgets them.
func (b *bench) stop(procs ...*proc) {
	for _, p := range procs {
		p.stop()
		b.procs = slices.DeleteFunc(b.procs, func(q *proc) bool { return q == p })
	}
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
	b.res["pinned"] = b.o.pin
	if b.o.pin {
		b.printf("pinned: each relay under test alone on CPU %d; this load generator, the simulator and Redis on the other %d CPU(s)\n\n", relayCPU, b.loadCPUs)
		b.res["load_cpus"] = b.loadCPUs
	}
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
