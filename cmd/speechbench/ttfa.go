package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// The time-to-first-audio part. A real network puts its latency on every
// message, not only on the dial: the simulator runs with --latency (half
// the round trip, on every byte each way, so a connection's TCP handshake,
// the upgrade, init and ready, every text, audio frame, ping and pong
// pay it) and --connect-latency of one more round trip, standing for the
// TLS 1.3 handshake that its ws:// does not do. A cold dial then costs
// five round trips before the first audio (TCP, TLS, upgrade, init/ready,
// text), a session already open one.
//
// Each path is measured from the caller's side:
//   - open: a direct client on a session it already holds, from its text
//     (or first audio) to the first audio (or partial): the simulator's
//     own time plus one round trip, what no relay can beat;
//   - warm: the gateway with a prewarmed standby session;
//   - pool off: the gateway with --pool-warm=false, dialling per stream;
//   - direct: a direct client dialling per stream, as a service without
//     the gateway would;
//   - floor: speechfloor, the bare relay, which dials per stream.
//
// Synthesize is timed from the SynthesizeText call to the first audio;
// Transcribe from the first audio sent (right after the config) to the
// first partial transcript. The paths take turns within each run, and a
// warm standby has sat idle ttfaIdle before it is used, longer than the
// window in which a session heard from recently is trusted without a
// proof of life, so that the warm figure is that of a standby waiting
// for its next caller. The warm figure counts the streams a standby
// served (started.warm_session); how many others there were is reported.
//
// The simulator runs the rich profile here. Realistic routes drop a TTS
// session that gets no text within 5 s of init, which the pool meets by
// refreshing its standbys, or keeping none when callers are rare; with
// every path taking its turn at a 100 ms round trip, the warm path's
// callers come about every 5 s, and the figure would measure that policy
// rather than a warm session's first audio. The warm figure counts the streams a standby
// served (started.warm_session); the others are reported.
//
// The simulator runs the rich profile here. Realistic routes drop a TTS
// session that gets no text within 5 s of init, which the pool meets by
// refreshing its standbys or keeping none when callers are rare; with
// every path taking its turn at a 100 ms round trip, the warm path's
// callers come about every 5 s, and the figure would measure that policy
// rather than a warm session's first audio.

// ttfaPaths are the paths, in the order printed.
var ttfaPaths = []string{"open", "warm", "pool_off", "direct", "floor"}

// ttfaIdle is how long a warm standby waits between uses; quick runs
// shorten it.
const ttfaIdle = 2 * time.Second

// The models and voice the direct paths use: the gateway's defaults, which
// the relays' calls get and its prewarms keep warm.
const (
	ttfaTTSModel = "deepgram/aura:2"
	ttfaVoice    = "aura-2-thalia-en"
	ttfaSTTModel = "deepgram/nova:3"
)

// ttfaText is the turn each Synthesize path speaks.
const ttfaText = "First audio, please."

// ttfaTarget is the round trip at which the targets are read.
const ttfaTarget = 50 * time.Millisecond

func (b *bench) ttfa(ctx context.Context) error {
	rtts := []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
	idle := ttfaIdle
	if b.o.quick {
		rtts, idle = []time.Duration{0, ttfaTarget}, 200*time.Millisecond
	}
	audio, _ := utterances(1)
	tts := map[time.Duration]map[string]*samples{}
	stt := map[time.Duration]map[string]*samples{}
	for _, rtt := range rtts {
		var err error
		if tts[rtt], stt[rtt], err = b.ttfaAt(ctx, rtt, idle, audio); err != nil {
			return err
		}
	}
	b.printf("Time to first audio with a round trip on every message (simulator --latency RTT/2, --connect-latency RTT for TLS), median of %d (ms)\n", b.o.ttfaRuns)
	rows := map[string]any{}
	for _, part := range []struct {
		name, title, prefix string
		res                 map[time.Duration]map[string]*samples
	}{
		{"synthesize", "Synthesize: from the call to the first audio", "ttfa_", tts},
		{"transcribe", "Transcribe: from the first audio sent to the first partial", "stt_ttfa_", stt},
	} {
		b.printf("%s\n%10s |", part.title, "round trip")
		for _, p := range ttfaPaths {
			b.printf(" %9s", strings.ReplaceAll(p, "_", " "))
		}
		b.printf(" | %9s %11s\n", "warm-open", "direct/warm")
		perPath := map[string]map[string]float64{}
		for _, rtt := range rtts {
			key := fmt.Sprintf("rtt_%dms", rtt.Milliseconds())
			b.printf("%8dms |", rtt.Milliseconds())
			row := map[string]any{}
			for _, p := range ttfaPaths {
				m := part.res[rtt][p].quantile(.5)
				b.printf(" %9.2f", m)
				row[p+"_ms"], row[p+"_spread_ms"] = m, spread(part.res[rtt][p])
				if perPath[p] == nil {
					perPath[p] = map[string]float64{}
				}
				perPath[p][key] = m
			}
			warm, open, direct := part.res[rtt]["warm"].quantile(.5), part.res[rtt]["open"].quantile(.5), part.res[rtt]["direct"].quantile(.5)
			row["warm_over_open_ms"], row["direct_to_warm"] = warm-open, ratio(direct, warm)
			b.printf(" | %9.2f %11.1f\n", warm-open, ratio(direct, warm))
			if rows[key] == nil {
				rows[key] = map[string]any{}
			}
			rows[key].(map[string]any)[part.name] = row
		}
		for _, p := range ttfaPaths {
			b.res[part.prefix+p+"_ms"] = perPath[p]
		}
		if at := part.res[ttfaTarget]; at != nil {
			// The targets: warm within one round trip plus 10 ms of the
			// simulator's own time (the open path at no latency), and at
			// least 4x better than dialling directly.
			own := part.res[rtts[0]]["open"].quantile(.5)
			warm := at["warm"].quantile(.5)
			limit := float64(ttfaTarget.Milliseconds()) + 10 + own
			b.printf("at %s: warm %.2f ms against at most %.2f (one round trip + 10 ms + the simulator's own %.2f): %s; direct/warm %.1fx against at least 4x: %s\n",
				ttfaTarget, warm, limit, own, metWord(warm <= limit), ratio(at["direct"].quantile(.5), warm), metWord(ratio(at["direct"].quantile(.5), warm) >= 4))
		}
		b.printf("\n")
	}
	b.res["ttfa"] = rows
	return nil
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// spread is the distance from the 10th to the 90th percentile.
func spread(s *samples) float64 { return s.quantile(.9) - s.quantile(.1) }

// ttfaAt starts a simulator with round trip rtt and the four relays and
// clients in front of it, and measures every path runs times, for both
// RPCs. It stops the processes it started before it returns.
func (b *bench) ttfaAt(ctx context.Context, rtt, idle time.Duration, audio []byte) (tts, stt map[string]*samples, err error) {
	sim, err := b.sim(ctx, "--profile", "rich", "--latency", (rtt / 2).String(), "--connect-latency", rtt.String())
	if err != nil {
		return nil, nil, err
	}
	procs := []*proc{sim}
	defer func() { b.stop(procs...) }()
	sttCfg := `{"enablePartials": true}`
	warm, err := b.gateway(ctx, sim.addr, "--prewarm-tts", "{}", "--prewarm-stt", sttCfg)
	if err != nil {
		return nil, nil, err
	}
	procs = append(procs, warm)
	off, err := b.gateway(ctx, sim.addr, "--pool-warm=false")
	if err != nil {
		return nil, nil, err
	}
	procs = append(procs, off)
	floor, err := b.floor(ctx, sim.addr)
	if err != nil {
		return nil, nil, err
	}
	procs = append(procs, floor)
	direct, err := directClient(sim.addr)
	if err != nil {
		return nil, nil, err
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for _, p := range []*proc{warm, off, floor} {
		c, err := gatewayClients(p.addr, 1, b.o.clientWindow)
		if err != nil {
			return nil, nil, err
		}
		conns = append(conns, c[0])
	}
	wc, oc, fc := conns[0], conns[1], conns[2]
	tts, stt = map[string]*samples{}, map[string]*samples{}
	for _, p := range ttfaPaths {
		tts[p], stt[p] = &samples{}, &samples{}
	}
	// run returns the time to first audio and whether a warm standby
	// served it (always false off the warm path).
	measures := []struct {
		path string
		rpc  int // 0 Synthesize, 1 Transcribe
		run  func() (time.Duration, bool, error)
	}{
		{"warm", 0, func() (time.Duration, bool, error) { return ttfaSynthesize(ctx, wc) }},
		{"warm", 1, func() (time.Duration, bool, error) { return ttfaTranscribe(ctx, wc, audio) }},
		{"open", 0, func() (time.Duration, bool, error) { return ttfaDirectTTS(ctx, direct, true) }},
		{"open", 1, func() (time.Duration, bool, error) { return ttfaDirectSTT(ctx, direct, audio, true) }},
		{"pool_off", 0, func() (time.Duration, bool, error) { return ttfaSynthesize(ctx, oc) }},
		{"pool_off", 1, func() (time.Duration, bool, error) { return ttfaTranscribe(ctx, oc, audio) }},
		{"direct", 0, func() (time.Duration, bool, error) { return ttfaDirectTTS(ctx, direct, false) }},
		{"direct", 1, func() (time.Duration, bool, error) { return ttfaDirectSTT(ctx, direct, audio, false) }},
		{"floor", 0, func() (time.Duration, bool, error) { return ttfaSynthesize(ctx, fc) }},
		{"floor", 1, func() (time.Duration, bool, error) { return ttfaTranscribe(ctx, fc, audio) }},
	}
	// The prewarmed standbys must be ready, and idle, before the first
	// warm run; then each RPC's standby idles between its uses.
	var lastWarm [2]time.Time
	lastWarm[0] = time.Now().Add(5 * rtt)
	lastWarm[1] = lastWarm[0]
	res := [2]map[string]*samples{tts, stt}
	var missed [2]int
	for run := range b.o.ttfaRuns {
		// The paths take turns, each run starting one further along, so
		// that a drift of the machine's speed favours none.
		for i := range measures {
			m := measures[(run*2+i)%len(measures)]
			if m.path == "warm" {
				if wait := time.Until(lastWarm[m.rpc].Add(idle)); wait > 0 {
					time.Sleep(wait)
				}
			}
			d, warmSession, err := m.run()
			if err != nil {
				return nil, nil, fmt.Errorf("time to first audio, %s at %s round trip: %w", m.path, rtt, err)
			}
			if m.path == "warm" {
				lastWarm[m.rpc] = time.Now()
				if !warmSession {
					missed[m.rpc]++
					continue
				}
			}
			res[m.rpc][m.path].add(d)
		}
	}
	for i, name := range []string{"Synthesize", "Transcribe"} {
		if missed[i] > 0 {
			b.printf("(%s at %s round trip: %d of %d warm-path streams found no standby and are left out of the warm figure)\n",
				name, rtt, missed[i], b.o.ttfaRuns)
		}
	}
	return tts, stt, nil
}

// ttfaSynthesize times one SynthesizeText call through a relay, from the
// call to its first audio, and reads the call to its end. It reports
// whether a warm standby served it.
func ttfaSynthesize(ctx context.Context, conn *grpc.ClientConn) (time.Duration, bool, error) {
	start := time.Now()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: ttfaText})
	if err != nil {
		return 0, false, err
	}
	var first time.Duration
	warm := false
	for {
		m, err := stream.Recv()
		if err != nil {
			if !isEOF(err) {
				return 0, false, err
			}
			break
		}
		warm = warm || m.GetStarted().GetWarmSession()
		if m.GetAudio() != nil && first == 0 {
			first = time.Since(start)
		}
	}
	if first == 0 {
		return 0, false, errors.New("no audio")
	}
	return first, warm, nil
}

// ttfaTranscribe times one Transcribe stream through a relay, from its
// first audio, sent right after the config, to its first partial. It then
// ends the stream and reads it to its end.
func ttfaTranscribe(ctx context.Context, conn *grpc.ClientConn, audio []byte) (time.Duration, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		return 0, false, err
	}
	cfg := &speechv1.RecognitionConfig{EnablePartials: true}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: cfg}}); err != nil {
		return 0, false, err
	}
	start := time.Now()
	if err := sendChunks(audio, func(b []byte) error {
		return stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}})
	}); err != nil {
		return 0, false, err
	}
	var first time.Duration
	warm := false
	for first == 0 {
		m, err := stream.Recv()
		if err != nil {
			return 0, false, fmt.Errorf("before the first partial: %w", err)
		}
		warm = warm || m.GetStarted().GetWarmSession()
		if m.GetPartialTranscript() != nil {
			first = time.Since(start)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return 0, false, err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if isEOF(err) {
				return first, warm, nil
			}
			return 0, false, err
		}
	}
}

// sendChunks sends audio in 20 ms chunks, unpaced: the first partial then
// comes as soon as the recognizer has heard enough, whatever the pace.
func sendChunks(audio []byte, send func([]byte) error) error {
	const chunk = 640 // 20 ms at 16 kHz LINEAR16
	for off := 0; off < len(audio); off += chunk {
		if err := send(audio[off:min(off+chunk, len(audio))]); err != nil {
			return err
		}
	}
	return nil
}

// ttfaDirectTTS times one turn with slngclient: from the dial to the
// first audio, a new session per turn as a service without a pool would,
// or, with open, from the text on a session already open.
func ttfaDirectTTS(ctx context.Context, client *slngclient.Client, open bool) (time.Duration, bool, error) {
	start := time.Now()
	sess, err := client.DialTTS(ctx, slngclient.Endpoint{Model: ttfaTTSModel}, slngclient.TTSConfig{Voice: ttfaVoice})
	if err != nil {
		return 0, false, err
	}
	defer sess.CloseNow()
	if open {
		start = time.Now()
	}
	if err := sess.Text(ctx, ttfaText, true); err != nil {
		return 0, false, err
	}
	for {
		ev, err := sess.Recv(ctx)
		if err != nil {
			return 0, false, err
		}
		if ev.Kind == slngclient.TTSAudio {
			return time.Since(start), false, nil
		}
	}
}

// ttfaDirectSTT times one utterance with slngclient, from the first audio
// sent to the first partial: dialling first (after the dial, with open).
func ttfaDirectSTT(ctx context.Context, client *slngclient.Client, audio []byte, open bool) (time.Duration, bool, error) {
	start := time.Now()
	sess, err := client.DialSTT(ctx, slngclient.Endpoint{Model: ttfaSTTModel},
		slngclient.STTConfig{Encoding: "linear16", SampleRate: 16000, EnablePartials: true})
	if err != nil {
		return 0, false, err
	}
	defer sess.CloseNow()
	if open {
		start = time.Now()
	}
	if err := sendChunks(audio, func(b []byte) error { return sess.SendAudio(ctx, b) }); err != nil {
		return 0, false, err
	}
	for {
		ev, err := sess.Recv(ctx)
		if err != nil {
			return 0, false, err
		}
		if ev.Kind == slngclient.STTPartial {
			return time.Since(start), false, nil
		}
	}
}
