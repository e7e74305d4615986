package main

import (
	"context"
	"time"
)

// throughput streams unpaced audio through the gateway, the floor and
// directly.
func (b *bench) throughput(ctx context.Context) error {
	st, err := b.stack(ctx, nil, nil, 2)
	if err != nil {
		return err
	}
	defer st.close()
	const streams = 8
	text := speechText(4*b.o.wave, 24000)
	var mbps [3]float64
	var errs [3]int64
	timed := func(i int, run func() *ttsResult) func() {
		return func() {
			start := time.Now()
			r := run()
			mbps[i], errs[i] = float64(r.bytes.Load())/time.Since(start).Seconds()/1e6, r.errors.Load()
		}
	}
	interleave(0,
		timed(0, func() *ttsResult { return ttsRelay(ctx, st.gwConns, streams, text, newTTSResult()) }),
		timed(1, func() *ttsResult { return ttsRelay(ctx, st.floorConns, streams, text, newTTSResult()) }),
		timed(2, func() *ttsResult { return ttsDirect(ctx, st.direct, streams, text) }))
	g, f, d := mbps[0], mbps[1], mbps[2]
	b.printf("Unpaced TTS audio, %d streams: gateway %.1f MB/s, floor %.1f MB/s, direct %.1f MB/s (errors %d, %d, %d)\n\n",
		streams, g, f, d, errs[0], errs[1], errs[2])
	b.res["throughput_gateway_mbps"] = g
	b.res["throughput_floor_mbps"] = f
	b.res["throughput_direct_mbps"] = d
	return nil
}
