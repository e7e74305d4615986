package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

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

// ttfaGateway measures time to first audio of SynthesizeText, runs times,
// pausing between runs so that a standby session can be replaced.
func ttfaGateway(ctx context.Context, conn *grpc.ClientConn, runs int, pause time.Duration) (*samples, error) {
	s := &samples{}
	client := speechv1.NewTextToSpeechServiceClient(conn)
	for range runs {
		time.Sleep(pause)
		start := time.Now()
		stream, err := client.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "First audio, please."})
		if err != nil {
			return nil, err
		}
		first := true
		for {
			m, err := stream.Recv()
			if err != nil {
				if !isEOF(err) {
					return nil, err
				}
				break
			}
			if m.GetAudio() != nil && first {
				s.add(time.Since(start))
				first = false
			}
		}
	}
	return s, nil
}

// ttfaDirect measures dial + text + first audio with slngclient, a new
// session per turn as a service without a pool would.
func ttfaDirect(ctx context.Context, client *slngclient.Client, runs int) (*samples, error) {
	s := &samples{}
	for range runs {
		start := time.Now()
		sess, err := client.DialTTS(ctx, slngclient.Endpoint{Model: "deepgram/aura:2"}, slngclient.TTSConfig{Voice: "aura-2-thalia-en"})
		if err != nil {
			return nil, err
		}
		if err := sess.Text(ctx, "First audio, please.", true); err != nil {
			sess.CloseNow()
			return nil, err
		}
		for {
			ev, err := sess.Recv(ctx)
			if err != nil {
				sess.CloseNow()
				return nil, err
			}
			if ev.Kind == slngclient.TTSAudio {
				s.add(time.Since(start))
				break
			}
		}
		sess.CloseNow()
	}
	return s, nil
}
