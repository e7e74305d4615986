package main

import (
	"context"
	"fmt"
)

// ttsCapacity runs waves of real-time TTS streams through the gateway, the
// floor and directly, interleaved level by level, and finds for each relay
// the largest wave whose added p99 stays within 5 ms without errors.
func (b *bench) ttsCapacity(ctx context.Context) error {
	st, err := b.stack(ctx, []string{"--realtime", "--bench-stamp", "--max-duration", "1h"},
		relayGatewayArgs, 8)
	if err != nil {
		return err
	}
	defer st.close()
	text := speechText(b.o.wave, 24000)
	b.printf("Real-time TTS, 24 kHz LINEAR16 in 20 ms chunks, %s of audio per stream; chunk latency from the simulator's send stamp\n", b.o.wave)
	b.printf("%8s %-8s | %9s %9s %9s | %9s %9s | %6s | %10s %9s | %9s %8s %8s\n", "streams", "path", "p50", "p99", "p99.9",
		"add p50", "add p99", "errors", "cpu s/min", "cpu µs/ch", "rss KiB", "allocs", "steady")
	var levels []map[string]any
	gwCap, floorCap := 0, 0
	for i, n := range b.o.ttsLevels {
		g, f := newTTSResult(), newTTSResult()
		var d *ttsResult
		var gm, fm relayRun
		interleave(i, func() {
			gm = b.measure(ctx, st.gw, "tts", i, n, g, func() { ttsRelay(ctx, st.gwConns, n, text, g) })
		}, func() {
			fm = b.measure(ctx, st.floor, "floor-tts", i, n, nil, func() { ttsRelay(ctx, st.floorConns, n, text, f) })
		}, func() {
			d = ttsDirect(ctx, st.direct, n, text)
		})
		streamMinutes := float64(n) * b.o.wave.Minutes()
		lv := map[string]any{"streams": n, "chunks": g.latency.count(), "wave_seconds": gm.elapsed.Seconds()}
		for _, p := range []struct {
			name string
			r    *ttsResult
			m    *relayRun
		}{{"gateway", g, &gm}, {"floor", f, &fm}, {"direct", d, nil}} {
			q50, q99, q999 := p.r.latency.quantile(.5), p.r.latency.quantile(.99), p.r.latency.quantile(.999)
			lv[p.name+"_p50_ms"], lv[p.name+"_p99_ms"], lv[p.name+"_p999_ms"] = q50, q99, q999
			lv[p.name+"_errors"] = p.r.errors.Load()
			if p.m == nil {
				b.printf("%8d %-8s | %9.3f %9.3f %9.3f | %9s %9s | %6d | %10s %9s | %9s %8s %8s\n", n, p.name, q50, q99, q999,
					"-", "-", p.r.errors.Load(), "-", "-", "-", "-", "-")
				continue
			}
			// The gateway's keys keep their names from before the floor
			// (added_p50_ms and not gateway_added_p50_ms).
			prefix := map[string]string{"gateway": "", "floor": "floor_"}[p.name]
			add50, add99 := q50-d.latency.quantile(.5), q99-d.latency.quantile(.99)
			cpuMin := p.m.cpu.Seconds() / streamMinutes
			perChunk := usPerChunk(p.m.cpu, p.r.latency.count())
			lv[prefix+"added_p50_ms"], lv[prefix+"added_p99_ms"] = add50, add99
			lv[p.name+"_cpu_seconds_per_stream_minute"], lv[p.name+"_cpu_us_per_chunk"] = cpuMin, perChunk
			lv[p.name+"_rss_per_stream_kib"], lv[p.name+"_peak_rss_mib"] = p.m.rssPerStreamKiB, float64(p.m.peakRSS)/(1<<20)
			allocs, steady := "-", "-"
			if p.name == "gateway" {
				// Every allocation of the gateway during the wave, stream
				// setup included, per chunk delivered.
				perChunkAllocs := p.m.mallocs / float64(max(p.r.latency.count(), 1))
				lv["gateway_allocs_per_chunk"], lv["gateway_steady_allocs_per_chunk"] = perChunkAllocs, p.m.steadyAllocs
				allocs, steady = fmt.Sprintf("%8.1f", perChunkAllocs), fmt.Sprintf("%8.1f", p.m.steadyAllocs)
			}
			b.printf("%8d %-8s | %9.3f %9.3f %9.3f | %9.3f %9.3f | %6d | %10.3f %9.1f | %9.1f %8s %8s\n", n, p.name, q50, q99, q999,
				add50, add99, p.r.errors.Load(), cpuMin, perChunk, p.m.rssPerStreamKiB, allocs, steady)
		}
		lv["load_bound"] = d.latency.quantile(.99) > loadBoundMs
		lv["cpu_ratio_to_floor"] = ratio(lv["gateway_cpu_us_per_chunk"].(float64), lv["floor_cpu_us_per_chunk"].(float64))
		// A load-bound level says nothing of the relays: the added
		// latency is measured against a direct path that was itself late.
		measurable := lv["load_bound"] == false
		if measurable && g.errors.Load() == 0 && lv["added_p99_ms"].(float64) <= 5 {
			gwCap = n
		}
		if measurable && f.errors.Load() == 0 && lv["floor_added_p99_ms"].(float64) <= 5 {
			floorCap = n
		}
		levels = append(levels, lv)
	}
	b.printf("capacity by the 5 ms rule: gateway %d, floor %d streams%s%s\n\n", gwCap, floorCap,
		capNote(b.o.ttsLevels, gwCap, floorCap), loadBoundNote(levels))
	at := atMost(levels, 500)
	b.res["tts_levels"] = levels
	b.res["capacity_tts_streams"] = gwCap
	b.res["capacity_tts_floor_streams"] = floorCap
	b.res["tts_streams_per_gateway_core"] = b.perCore(gwCap)
	b.res["tts_streams_per_floor_core"] = b.perCore(floorCap)
	b.res["added_latency_p50_ms"] = at["added_p50_ms"]
	b.res["added_latency_p99_ms"] = at["added_p99_ms"]
	b.res["floor_added_latency_p50_ms"] = at["floor_added_p50_ms"]
	b.res["floor_added_latency_p99_ms"] = at["floor_added_p99_ms"]
	b.res["direct_latency_p99_ms"] = at["direct_p99_ms"]
	b.res["added_latency_streams"] = at["streams"]
	b.res["rss_per_stream_kib"] = at["gateway_rss_per_stream_kib"]
	b.res["cpu_seconds_per_stream_minute"] = at["gateway_cpu_seconds_per_stream_minute"]
	b.res["gateway_cpu_us_per_chunk"] = at["gateway_cpu_us_per_chunk"]
	b.res["floor_cpu_us_per_chunk"] = at["floor_cpu_us_per_chunk"]
	b.res["cpu_ratio_to_floor"] = at["cpu_ratio_to_floor"]
	return nil
}
