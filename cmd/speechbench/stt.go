package main

import (
	"context"
)

// sttCapacity does the same for real-time Transcribe streams, measuring
// the delay from an utterance's last audio to its final transcript.
func (b *bench) sttCapacity(ctx context.Context) error {
	st, err := b.stack(ctx, []string{"--max-duration", "1h"}, relayGatewayArgs, 8)
	if err != nil {
		return err
	}
	defer st.close()
	// Each utterance is about 0.5 s of audio.
	audio, ends := utterances(max(int(b.o.wave.Seconds()*2), 1))
	const chunk = 640 // 20 ms at 16 kHz LINEAR16, as sttPaced sends
	chunksPerStream := (len(audio) + chunk - 1) / chunk
	b.printf("Real-time STT, 16 kHz LINEAR16 in 20 ms chunks; delay from an utterance's last audio to its final\n")
	b.printf("%8s %-8s | %9s %9s | %9s %9s | %6s | %8s | %10s %9s\n", "streams", "path", "p50", "p99", "add p50", "add p99",
		"errors", "finals", "cpu s/min", "cpu µs/ch")
	var levels []map[string]any
	gwCap, floorCap := 0, 0
	for i, n := range b.o.sttLevels {
		var g, f, d *sttResult
		var gm, fm relayRun
		interleave(i, func() {
			gm = b.measure(ctx, st.gw, "stt", i, n, nil, func() { g = sttRelay(ctx, st.gwConns, n, audio, ends) })
		}, func() {
			fm = b.measure(ctx, st.floor, "floor-stt", i, n, nil, func() { f = sttRelay(ctx, st.floorConns, n, audio, ends) })
		}, func() {
			d = sttDirect(ctx, st.direct, n, audio, ends)
		})
		expected := int64(n * len(ends))
		lv := map[string]any{"streams": n, "finals_expected": expected}
		for _, p := range []struct {
			name string
			r    *sttResult
			m    *relayRun
		}{{"gateway", g, &gm}, {"floor", f, &fm}, {"direct", d, nil}} {
			q50, q99 := p.r.finalDelay.quantile(.5), p.r.finalDelay.quantile(.99)
			lv[p.name+"_p50_ms"], lv[p.name+"_p99_ms"], lv[p.name+"_errors"] = q50, q99, p.r.errors.Load()
			if p.m == nil {
				b.printf("%8d %-8s | %9.3f %9.3f | %9s %9s | %6d | %8d | %10s %9s\n", n, p.name, q50, q99, "-", "-",
					p.r.errors.Load(), p.r.finals.Load(), "-", "-")
				continue
			}
			// The gateway's keys keep their names from before the floor.
			prefix := map[string]string{"gateway": "", "floor": "floor_"}[p.name]
			add50, add99 := q50-d.finalDelay.quantile(.5), q99-d.finalDelay.quantile(.99)
			cpuMin := p.m.cpu.Seconds() / (float64(n) * p.m.elapsed.Minutes())
			perChunk := usPerChunk(p.m.cpu, n*chunksPerStream)
			lv[prefix+"added_p50_ms"], lv[prefix+"added_p99_ms"], lv[prefix+"finals"] = add50, add99, p.r.finals.Load()
			lv[p.name+"_cpu_seconds_per_stream_minute"], lv[p.name+"_cpu_us_per_chunk"] = cpuMin, perChunk
			b.printf("%8d %-8s | %9.3f %9.3f | %9.3f %9.3f | %6d | %8d | %10.3f %9.1f\n", n, p.name, q50, q99, add50, add99,
				p.r.errors.Load(), p.r.finals.Load(), cpuMin, perChunk)
		}
		lv["direct_finals"] = d.finals.Load()
		lv["load_bound"] = d.finalDelay.quantile(.99) > loadBoundMs
		lv["cpu_ratio_to_floor"] = ratio(lv["gateway_cpu_us_per_chunk"].(float64), lv["floor_cpu_us_per_chunk"].(float64))
		// A load-bound level says nothing of the relays: the added
		// latency is measured against a direct path that was itself late.
		measurable := lv["load_bound"] == false
		if measurable && g.errors.Load() == 0 && lv["added_p99_ms"].(float64) <= 5 && g.finals.Load() == expected {
			gwCap = n
		}
		if measurable && f.errors.Load() == 0 && lv["floor_added_p99_ms"].(float64) <= 5 && f.finals.Load() == expected {
			floorCap = n
		}
		levels = append(levels, lv)
	}
	b.printf("capacity by the 5 ms rule: gateway %d, floor %d streams%s%s\n\n", gwCap, floorCap,
		capNote(b.o.sttLevels, gwCap, floorCap), loadBoundNote(levels))
	b.res["stt_levels"] = levels
	b.res["capacity_stt_streams"] = gwCap
	b.res["capacity_stt_floor_streams"] = floorCap
	b.res["stt_streams_per_gateway_core"] = b.perCore(gwCap)
	b.res["stt_streams_per_floor_core"] = b.perCore(floorCap)
	at := atMost(levels, 250)
	b.res["stt_gateway_cpu_us_per_chunk"] = at["gateway_cpu_us_per_chunk"]
	b.res["stt_floor_cpu_us_per_chunk"] = at["floor_cpu_us_per_chunk"]
	b.res["stt_cpu_ratio_to_floor"] = at["cpu_ratio_to_floor"]
	b.res["stt_cpu_streams"] = at["streams"]
	at = atMost(levels, 100)
	b.res["stt_added_latency_p50_ms"] = at["added_p50_ms"]
	b.res["stt_floor_added_latency_p50_ms"] = at["floor_added_p50_ms"]
	b.res["stt_added_latency_streams"] = at["streams"]
	return nil
}
