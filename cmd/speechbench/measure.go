package main

import (
	"context"
	"fmt"
	"time"
)

// relayRun is what one wave cost the relay it went through, read from the
// relay's own process: its CPU and memory, and for the gateway, which
// serves /metrics, its allocations.
type relayRun struct {
	elapsed         time.Duration
	cpu             time.Duration // the relay process's user and system CPU over the wave
	rssPerStreamKiB float64       // peak RSS during the wave less RSS before it, per stream
	peakRSS         int64
	mallocs         float64 // heap allocations over the wave (gateway only)
	steadyAllocs    float64 // per chunk in the wave's middle third (gateway TTS only)
}

// measure runs wave, n streams through relay p, and reads p's usage
// around it. tts, if not nil, is the wave's result, watched for the
// steady allocation count. The first wave of a part is profiled when
// --profile is on and p serves pprof.
func (b *bench) measure(ctx context.Context, p *proc, part string, level, n int, tts *ttsResult, wave func()) relayRun {
	stopProfile := func() {}
	if p.debug != "" {
		stopProfile = b.profile(ctx, p, level, part)
	}
	before, _ := p.usage()
	peak := watchRSS(p)
	steady := func() float64 { return 0 }
	if p.admin != "" && tts != nil {
		steady = watchAllocs(p, tts, b.o.wave)
	}
	start := time.Now()
	wave()
	m := relayRun{elapsed: time.Since(start)}
	m.steadyAllocs = steady()
	after, _ := p.usage()
	m.peakRSS = peak()
	stopProfile()
	m.cpu = after.cpu - before.cpu
	m.rssPerStreamKiB = float64(m.peakRSS-before.rss) / float64(n) / 1024
	m.mallocs = after.mallocs - before.mallocs
	return m
}

// usPerChunk is CPU per chunk in microseconds (0 without chunks).
func usPerChunk(cpu time.Duration, chunks int) float64 {
	if chunks == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(chunks)
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// atMost is the level of the largest wave of at most n streams, or the
// first level when every wave is larger: the level the headline figures
// come from.
func atMost(levels []map[string]any, n int) map[string]any {
	var at map[string]any
	for _, lv := range levels {
		if at == nil || lv["streams"].(int) <= n {
			at = lv
		}
	}
	return at
}

// perCore is the streams a relay carried per CPU by the capacity rule:
// with --pin the relay had exactly one CPU, so it is the capacity itself.
// Without --pin the relay shared the machine with the load and the
// simulator, and there is no per-core figure (nil).
func (b *bench) perCore(capacity int) any {
	if !b.o.pin {
		return nil
	}
	return capacity
}

// loadBoundMs is the direct path's p99 above which a level counts as load
// bound: the load generator and simulator, not a relay, ran short of CPU,
// and the relays' added latency there says little about them.
const loadBoundMs = 5.0

// loadBoundNote names the load-bound levels, for the capacity line.
func loadBoundNote(levels []map[string]any) string {
	var at []any
	for _, lv := range levels {
		if lv["load_bound"] == true {
			at = append(at, lv["streams"])
		}
	}
	if len(at) == 0 {
		return ""
	}
	return fmt.Sprintf("; direct p99 above %.0f ms at %v streams: there the load side, not the relay, was short of CPU, and those levels do not count for capacity", loadBoundMs, at)
}

// capNote says when a capacity is the largest wave tried, and so only a
// lower bound.
func capNote(levels []int, caps ...int) string {
	for _, c := range caps {
		if c == levels[len(levels)-1] {
			return fmt.Sprintf(" (%d is the largest wave tried: a lower bound)", c)
		}
	}
	return ""
}
