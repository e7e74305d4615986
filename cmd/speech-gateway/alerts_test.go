package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// The files under test, from this package's directory.
const (
	rulesFile          = "../../deploy/monitoring/alerts.rules.yaml"
	dashboardFile      = "../../deploy/monitoring/grafana-dashboard.json"
	operationsDocFile  = "../../docs/operations.md"
	alertsTestVersion  = "v0.0.0-alerts-e2e"
	alertsTestRevision = "e2e0000"
)

// alertScenario is one gateway, against its own simulator, driven into one
// fault (or none) while a real Prometheus scrapes it. The scenario's name is
// its Prometheus job, which every alert keeps as a label.
type alertScenario struct {
	name string
	sim  slngsim.Options
	// key is the gateway's SLNG key; empty: the simulator's.
	key  string
	args []string
	// drive causes the fault until ctx ends, checking that callers see
	// what the fault should show them; g.signal stops the gateway.
	drive func(ctx context.Context, t *testing.T, g *gatewayProc)
	// want must fire (pending or firing) while drive runs; allow may fire
	// too, because the same fault also satisfies them. Any other alert of
	// this job is a false alarm.
	want, allow []string
}

// TestAlertsEndToEnd is the proof that the alerts in deploy/monitoring
// fire: it builds the real binary, starts one gateway per fault against a
// simulator on loopback, has a real Prometheus (Debian's prometheus
// package) scrape them every second and evaluate alerts.rules.yaml as
// shipped, causes each fault, and waits for the alerts that name the fault's
// job. A healthy gateway, under the same configuration and steady traffic,
// fires nothing, and no fault fires an alert it should not. Alerts with a
// `for` clause are accepted once pending (their expression holds):
// promtool's unit tests (make monitoring-check) cover the durations. At the
// end, every metric docs/operations.md lists must have moved, and every
// dashboard query must be valid and find data.
func TestAlertsEndToEnd(t *testing.T) {
	t.Parallel()
	promBin := requireTool(t, "prometheus")
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	ruleNames := alertNames(t, rules)
	bin := buildGatewayBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	scenarios := alertScenarios()
	// Every alert has a scenario that fires it, or is named here with why
	// not.
	covered := map[string]bool{
		// A gateway bug has no simulator fault; the key-refused scenario
		// shows it stays silent on the INTERNAL that SLNG's refusal causes,
		// and alerts.test.yaml shows it fires.
		"SpeechGatewayInternalErrors": true,
		// A slow Redis: fleet.TestSlowRedisAtStreamStart moves its metric
		// behind a proxy that delays Redis's replies, and
		// alerts.test.yaml shows the alert fires on it.
		"SpeechGatewayRedisSlow": true,
	}
	for _, sc := range scenarios {
		for _, a := range append(slices.Clone(sc.want), sc.allow...) {
			if !slices.Contains(ruleNames, a) {
				t.Fatalf("scenario %s names %s, which alerts.rules.yaml lacks", sc.name, a)
			}
		}
		for _, a := range sc.want {
			covered[a] = true
		}
	}
	for _, a := range ruleNames {
		if !covered[a] {
			t.Errorf("no scenario fires %s", a)
		}
	}

	sims := make([]*slngsim.Server, len(scenarios))
	for i, sc := range scenarios {
		sims[i] = slngtest.NewServer(t, sc.sim)
	}
	gateways := startGatewayProcs(ctx, t, bin, len(scenarios), func(i int) (string, string, []string) {
		sc := scenarios[i]
		key := sc.key
		if key == "" {
			key = sc.sim.APIKey
		}
		return sc.name, key, append([]string{"--slng-base-url", sims[i].URL()}, sc.args...)
	})
	targets := map[string]string{}
	for i, sc := range scenarios {
		targets[sc.name] = gateways[i].admin
	}
	prom := startPrometheus(ctx, t, promBin, rules, targets)
	// Every gateway scraped before any fault begins: on a busy machine
	// Prometheus takes seconds to start, and a short-lived condition (the
	// draining one) would come and go unseen.
	prom.waitFor(ctx, t, fmt.Sprintf("count(up == 1) == %d", len(scenarios)))
	start := time.Now()

	// Every fault at once, each until its alerts fire: the scenarios are
	// independent jobs, and the wall time is that of the slowest. The
	// subtests only wait, so they need no t.Parallel slots.
	stops := make([]func(), len(scenarios))
	for i, sc := range scenarios {
		driveCtx, stop := context.WithCancel(ctx)
		driven := make(chan struct{})
		go func() {
			defer close(driven)
			sc.drive(driveCtx, t, gateways[i])
		}()
		stops[i] = sync.OnceFunc(func() { stop(); <-driven })
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			defer stops[i]()
			if len(sc.want) == 0 {
				// Traffic until Prometheus has seen plenty of it; the
				// silence is checked below, with every other job's.
				prom.waitFor(ctx, t, fmt.Sprintf(`sum(speech_gateway_streams_total{job=%q,code="OK"}) >= 30`, sc.name))
				return
			}
			prom.waitForAlerts(ctx, t, sc.name, sc.want, start)
		})
	}
	if t.Failed() {
		return
	}

	// Two more rounds of rule evaluation after the last scrape of the
	// scenarios, then every alert that was ever pending or firing.
	prom.waitForEvaluations(ctx, t, 2)
	ever := prom.alertHistory(ctx, t, time.Since(start)+time.Minute)
	for _, sc := range scenarios {
		for _, a := range ever[sc.name] {
			if !slices.Contains(sc.want, a) && !slices.Contains(sc.allow, a) {
				t.Errorf("%s: %s fired, want only %v (or %v)", sc.name, a, sc.want, sc.allow)
			}
		}
		t.Logf("%s: alerts %v", sc.name, ever[sc.name])
	}

	t.Run("documented metrics moved", func(t *testing.T) {
		// Only a misbehaving upstream moves these, in ways no simulator
		// fault reproduces; service.TestTranscriptOutsideTheProtocol
		// asserts them. A slow Redis (no scenario runs one) moves
		// speech_gateway_fleet_redis_slow_total;
		// fleet.TestSlowRedisAtStreamStart asserts it. The key and TLS
		// files' metrics have tests of their own (the scenarios rotate no
		// key and serve no TLS), and so do the slow callers' (no scenario
		// pauses a caller): service.TestFiftyPausedCallers.
		elsewhere := []string{"speech_gateway_upstream_protocol_violations_total", "speech_gateway_stt_finals_dropped_total",
			"speech_gateway_key_reloads_total", "speech_gateway_fleet_redis_slow_total",
			"speech_gateway_tls_reloads_total", "speech_gateway_tls_certificate_expiry_timestamp_seconds",
			"speech_gateway_caller_buffered_bytes", "speech_gateway_caller_pauses_total"}
		for _, name := range documentedMetrics(t) {
			q := fmt.Sprintf(`max by (job) (max_over_time({__name__=~"%s|%s_count"}[%ds])) > 0`, name, name, int(time.Since(start).Seconds())+60)
			var jobs []string
			for _, s := range prom.vector(ctx, t, q) {
				jobs = append(jobs, s.Metric["job"])
			}
			sort.Strings(jobs)
			switch {
			case len(jobs) == 0 && !slices.Contains(elsewhere, name):
				t.Errorf("%s never moved in any scenario", name)
			case len(jobs) > 0:
				t.Logf("%s moved in %v", name, jobs)
			}
		}
	})
	t.Run("build info", func(t *testing.T) {
		// Over the whole run, not at this instant: on a busy machine a
		// gateway's last scrape may have gone stale, and the drained one
		// is gone.
		q := fmt.Sprintf(`count(max_over_time(speech_gateway_build_info{version=%q,revision=%q}[%ds]) == 1)`,
			alertsTestVersion, alertsTestRevision, int(time.Since(start).Seconds())+60)
		if v, ok := prom.scalar(ctx, t, q); !ok || int(v) < len(scenarios) {
			t.Errorf("%s = %v, want a build_info from every running gateway", q, v)
		}
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if want := "speech-gateway " + alertsTestVersion + " (revision " + alertsTestRevision + ", go1."; err != nil || !strings.HasPrefix(string(out), want) {
			t.Errorf("speech-gateway --version = %q, %v; want %q...", out, err, want)
		}
	})
	t.Run("dashboard queries", func(t *testing.T) {
		window := fmt.Sprintf("%ds", int(time.Since(start).Seconds())+60)
		for _, q := range dashboardQueries(t) {
			expr := strings.NewReplacer("$__rate_interval", window, "$__range", window, "$namespace", ".*", "$job", ".*").Replace(q)
			if n, err := prom.query(ctx, expr); err != nil || n == 0 {
				t.Errorf("dashboard query %s: %d series, %v", q, n, err)
			}
		}
	})
}

// alertScenarios are the faults, each with the alerts it must fire.
func alertScenarios() []alertScenario {
	const key = "sk_sim_ALERTS_e2e"
	base := []string{"--max-streams", "4", "--dial-attempts", "1", "--pool-acquire-timeout", "200ms", "--shutdown-timeout", "5s"}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
	return []alertScenario{{
		name:  "healthy",
		sim:   slngsim.Options{APIKey: key, ProfileFor: slngsim.Realistic},
		args:  with("--pool-max-idle-age", "1s"),
		drive: driveHealthy,
	}, {
		// Harmless upstream noise: warnings, unknown frames and finals
		// without timing. The metrics move; no alert fires.
		name: "noise",
		sim: slngsim.Options{APIKey: key,
			Profile: ptr(mustProfile("asyncapi-finals-no-duration")),
			Script: func(c slngsim.ConnInfo) slngsim.Fault {
				if c.Kind == "tts" {
					return mustFault("*=error:pronunciation_not_found@ready")
				}
				return mustFault("*=unknown@ready")
			}},
		args:  with(),
		drive: driveNoise,
	}, {
		name:  "key-refused",
		sim:   slngsim.Options{APIKey: key},
		key:   "sk_gw_ROTATED_AWAY",
		args:  with(),
		drive: failStreams(codes.Internal, "UPSTREAM_AUTH_FAILED"),
		want:  []string{"SpeechGatewaySLNGKeyRefused", "SpeechGatewayUpstreamFailures"},
		allow: []string{"SpeechGatewayTurnFailures"},
	}, {
		name: "upstream-failures",
		sim:  slngsim.Options{APIKey: key, Faults: slngsim.MustFaults("*=error:provider_error@chunks:2,fatal")},
		// A breaker that opened would turn the failures into
		// UPSTREAM_CIRCUIT_OPEN; that is the next scenario.
		args:  with("--breaker-failures", "100000"),
		drive: failStreams(codes.Unavailable, "UPSTREAM_UNAVAILABLE"),
		want:  []string{"SpeechGatewayUpstreamFailures", "SpeechGatewayTurnFailures"},
	}, {
		name:  "circuit-open",
		sim:   slngsim.Options{APIKey: key, Faults: slngsim.MustFaults("*=handshake:503")},
		args:  with("--breaker-failures", "2", "--breaker-open-timeout", "5m"),
		drive: failStreams(codes.Unavailable, "UPSTREAM_CIRCUIT_OPEN"),
		want:  []string{"SpeechGatewayCircuitOpen", "SpeechGatewayUpstreamFailures"},
		allow: []string{"SpeechGatewayTurnFailures"},
	}, {
		// Turns fail mid-audio and move to new sessions; the streams
		// themselves succeed.
		name:  "turn-failures",
		sim:   slngsim.Options{APIKey: key, Faults: slngsim.MustFaults("*=error:provider_error@chunks:2")},
		args:  with("--breaker-failures", "100000"),
		drive: driveFailingTurns,
		want:  []string{"SpeechGatewayTurnFailures", "SpeechGatewayReconnectStorm"},
		// A turn queued behind one that fails waits for that failure and
		// a new session before its first audio: past 1 s at the 95th
		// percentile on a busy machine.
		allow: []string{"SpeechGatewaySlowFirstAudio"},
	}, {
		name:  "stream-cap",
		sim:   slngsim.Options{APIKey: key},
		args:  with("--max-streams", "1"),
		drive: holdAndRefuse(codes.ResourceExhausted, "GATEWAY_OVERLOADED"),
		want:  []string{"SpeechGatewayAtStreamCap", "SpeechGatewayNearStreamCap"},
	}, {
		name:  "session-cap",
		sim:   slngsim.Options{APIKey: key},
		args:  with("--pool-max-sessions", "1"),
		drive: holdAndRefuse(codes.ResourceExhausted, "UPSTREAM_CAPACITY_EXHAUSTED"),
		want:  []string{"SpeechGatewaySessionCapReached"},
	}, {
		name:  "slow-first-audio",
		sim:   slngsim.Options{APIKey: key, FirstAudioLatency: 1200 * time.Millisecond},
		args:  with(),
		drive: driveHealthy,
		want:  []string{"SpeechGatewaySlowFirstAudio"},
	}, {
		// SIGTERM with a shutdown delay longer than a few scrapes: the
		// replica reports draining until it exits.
		name:  "draining",
		sim:   slngsim.Options{APIKey: key},
		args:  with("--shutdown-delay", "8s"),
		drive: driveDrain,
		want:  []string{"SpeechGatewayDrainingTooLong"},
	}}
}

func ptr[T any](v T) *T { return &v }

func mustProfile(name string) slngsim.Profile {
	p, err := slngsim.ProfileByName(name)
	if err != nil {
		panic(err)
	}
	return p
}

func mustFault(spec string) slngsim.Fault {
	_, f, err := slngsim.ParseFault(spec)
	if err != nil {
		panic(err)
	}
	return f
}

// pace runs fn every d until ctx ends; fn's error ends the loop, and is
// reported unless ctx ended first.
func pace(ctx context.Context, t *testing.T, d time.Duration, fn func() error) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		if err := fn(); err != nil {
			if ctx.Err() == nil {
				t.Error(err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reasonOf is the ErrorInfo reason of a gRPC error, "" without one.
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// synthesizeText speaks text and returns the stream's error (nil on a
// clean end) and the audio.
func synthesizeText(ctx context.Context, conn *grpc.ClientConn, text string) ([]byte, error) {
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		return nil, err
	}
	var audio []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return audio, nil
		}
		if err != nil {
			return audio, err
		}
		audio = append(audio, m.GetAudio().GetData()...)
	}
}

// transcribe sends the audio of text, a finalize and a half-close, and
// returns the final transcripts.
func transcribe(ctx context.Context, conn *grpc.ClientConn, text string) ([]string, error) {
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		return nil, err
	}
	audio := slngsim.Synthesize(text, "linear16", 16000)
	for off := 0; off < len(audio); off += 8 << 10 {
		if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: audio[off:min(off+8<<10, len(audio))]}}); err != nil {
			return nil, err
		}
	}
	// A finalize before the half-close, as a voice agent's turn end does.
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Finalize{Finalize: &speechv1.Finalize{}}}); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var finals []string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return finals, nil
		}
		if err != nil {
			return finals, err
		}
		if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
			finals = append(finals, f.GetText())
		}
	}
}

// driveHealthy keeps two callers busy: SynthesizeText, a Synthesize stream
// of two turns (which leaves its session clean for the pool), and
// Transcribe, each checked for its content.
func driveHealthy(ctx context.Context, t *testing.T, g *gatewayProc) {
	conn := dial(t, g.grpc)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pace(ctx, t, 50*time.Millisecond, func() error {
			const text = "All is well."
			audio, err := synthesizeText(ctx, conn, text)
			if err != nil {
				return fmt.Errorf("SynthesizeText: %w", err)
			}
			if got, err := slngsim.Decode(audio, "linear16", 24000); err != nil || got != text {
				return fmt.Errorf("SynthesizeText decoded %q, %v; want %q", got, err, text)
			}
			return synthesizeTurns(ctx, conn, []string{"First turn.", "Second turn."}, false)
		})
	}()
	go func() {
		defer wg.Done()
		pace(ctx, t, 50*time.Millisecond, func() error {
			const text = "Transcribe me."
			finals, err := transcribe(ctx, conn, text)
			if err != nil {
				return fmt.Errorf("Transcribe: %w", err)
			}
			if strings.Join(finals, " ") != text {
				return fmt.Errorf("Transcribe: finals %q, want %q", finals, text)
			}
			return nil
		})
	}()
	wg.Wait()
}

// synthesizeTurns speaks each text as a flushed turn on one Synthesize
// stream, waits for every turn to end (audio_end, or turn_failed when
// failing), and half-closes.
func synthesizeTurns(ctx context.Context, conn *grpc.ClientConn, texts []string, failing bool) error {
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).Synthesize(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
		return err
	}
	var ended, failed, warnings int
	for _, text := range texts {
		if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: text, Flush: true}}}); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("Synthesize: %w", err)
		}
		switch {
		case m.GetAudioEnd() != nil:
			ended++
		case m.GetTurnFailed() != nil:
			failed++
		case m.GetWarning() != nil:
			warnings++
		}
	}
	switch {
	case failing && failed == 0:
		return fmt.Errorf("Synthesize: no turn_failed in %d turns", len(texts))
	case !failing && (failed > 0 || ended != len(texts)):
		return fmt.Errorf("Synthesize: %d turns ended, %d failed; want all %d to end", ended, failed, len(texts))
	}
	return nil
}

// driveNoise speaks and transcribes through upstream noise that must not
// fail anything: an error frame on an idle Synthesize session reaches the
// caller as a warning, and the turn after it succeeds.
func driveNoise(ctx context.Context, t *testing.T, g *gatewayProc) {
	conn := dial(t, g.grpc)
	pace(ctx, t, 100*time.Millisecond, func() error {
		// Bounded, so that a warning that never comes is reported as
		// such rather than as a healthy run that never ends.
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := warnThenSpeak(callCtx, conn, "After the warning."); err != nil {
			return err
		}
		if finals, err := transcribe(ctx, conn, "Noise."); err != nil || strings.Join(finals, " ") != "Noise." {
			return fmt.Errorf("Transcribe: finals %q, %v", finals, err)
		}
		return nil
	})
}

// warnThenSpeak opens a Synthesize stream, waits for the warning the
// session's error frame becomes, then speaks one turn.
func warnThenSpeak(ctx context.Context, conn *grpc.ClientConn, text string) error {
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).Synthesize(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
		return err
	}
	var warned, ended bool
	var audio []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("Synthesize: %w", err)
		}
		switch {
		case m.GetWarning() != nil && !warned:
			warned = true
			if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: text, Flush: true}}}); err != nil {
				return err
			}
			if err := stream.CloseSend(); err != nil {
				return err
			}
		case m.GetTurnFailed() != nil:
			return fmt.Errorf("Synthesize: turn failed after the warning: %v", m.GetTurnFailed())
		case m.GetAudioEnd() != nil:
			ended = true
		}
		audio = append(audio, m.GetAudio().GetData()...)
	}
	if got, err := slngsim.Decode(audio, "linear16", 24000); !ended || err != nil || got != text {
		return fmt.Errorf("Synthesize after a warning: ended %v, decoded %q, %v", ended, got, err)
	}
	return nil
}

// failStreams sends SynthesizeText streams that must fail with code and,
// once the fault has settled, reason.
func failStreams(code codes.Code, reason string) func(context.Context, *testing.T, *gatewayProc) {
	return func(ctx context.Context, t *testing.T, g *gatewayProc) {
		conn := dial(t, g.grpc)
		seen := false
		pace(ctx, t, 50*time.Millisecond, func() error {
			_, err := synthesizeText(ctx, conn, "This stream fails.")
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				return errors.New("SynthesizeText succeeded under the fault")
			}
			if status.Code(err) == code && reasonOf(err) == reason {
				seen = true
			}
			return nil
		})
		if !seen {
			t.Errorf("no stream failed with %v / %s", code, reason)
		}
	}
}

// driveFailingTurns speaks turns that the upstream fails mid-audio; the
// stream goes on to the next turn on a new session and ends cleanly.
func driveFailingTurns(ctx context.Context, t *testing.T, g *gatewayProc) {
	conn := dial(t, g.grpc)
	pace(ctx, t, 50*time.Millisecond, func() error {
		err := synthesizeTurns(ctx, conn, []string{"One turn that fails mid-audio.", "Another turn that fails."}, true)
		if ctx.Err() != nil {
			return nil
		}
		return err
	})
}

// holdAndRefuse holds one Synthesize stream open (with its upstream
// session) and sends more streams, which must be refused with code and
// reason.
func holdAndRefuse(code codes.Code, reason string) func(context.Context, *testing.T, *gatewayProc) {
	return func(ctx context.Context, t *testing.T, g *gatewayProc) {
		conn := dial(t, g.grpc)
		held, err := speechv1.NewTextToSpeechServiceClient(conn).Synthesize(ctx)
		if err == nil {
			err = held.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}})
		}
		if err == nil {
			var m *speechv1.SynthesizeResponse
			m, err = held.Recv()
			if err == nil && m.GetStarted() == nil {
				err = fmt.Errorf("first message %v, want started", m)
			}
		}
		if err != nil {
			t.Errorf("held stream: %v", err)
			return
		}
		pace(ctx, t, 100*time.Millisecond, func() error {
			_, err := synthesizeText(ctx, conn, "No room for this one.")
			if ctx.Err() != nil {
				return nil
			}
			if status.Code(err) != code || reasonOf(err) != reason {
				return fmt.Errorf("a stream beyond the cap ended with %v, want %v / %s", err, code, reason)
			}
			return nil
		})
		_ = held.CloseSend()
	}
}

// driveDrain sends SIGTERM once; the gateway keeps reporting draining for
// its shutdown delay.
func driveDrain(ctx context.Context, t *testing.T, g *gatewayProc) {
	if resp, err := httpClient.Get("http://" + g.admin + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("readyz before SIGTERM: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	g.signal(t)
	<-ctx.Done()
}

// requireTool finds a Prometheus tool, or fails: CI installs Debian's
// prometheus package (.ci/run), and without it nothing proves the alerts.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: the alert tests need Debian's prometheus package (apt-get install prometheus), which .ci/run installs", name)
	}
	return path
}

// gatewayBinary is the binary that TestFleet and TestAlertsEndToEnd run,
// built once for both; TestMain removes it.
var gatewayBinary struct {
	once      sync.Once
	dir, path string
	err       error
}

// buildGatewayBinary builds this command, as the Makefile does, with a
// version and revision set at link time, once for the test binary. It
// builds with -race when the test does: the packages are then already
// compiled, and the gateway's races are caught too.
func buildGatewayBinary(t *testing.T) string {
	t.Helper()
	gatewayBinary.once.Do(func() {
		// Its own bound, apart from the tests' time budgets: the build
		// takes a minute or more on a busy machine.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		gatewayBinary.path, gatewayBinary.err = goBuild(ctx)
		t.Logf("built %s in %v", gatewayBinary.path, time.Since(start).Round(time.Millisecond))
	})
	if gatewayBinary.err != nil {
		t.Fatal(gatewayBinary.err)
	}
	return gatewayBinary.path
}

// goBuild builds the gateway into a new directory, gatewayBinary.dir.
func goBuild(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "speech-gateway-test-")
	if err != nil {
		return "", err
	}
	gatewayBinary.dir = dir
	out := filepath.Join(dir, "speech-gateway")
	args := []string{"build", "-o", out, "-ldflags", "-X main.version=" + alertsTestVersion + " -X main.revision=" + alertsTestRevision}
	args = append(args, raceFlag()...)
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found: %w", err)
	}
	if b, err := exec.CommandContext(ctx, goBin, append(args, ".")...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// raceFlag is -race when the test binary was built with it, for the
// binaries it builds: their packages are then already compiled.
func raceFlag() []string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return []string{"-race"}
			}
		}
	}
	return nil
}

// gatewayProc is the real binary, running until the test ends.
type gatewayProc struct {
	name        string
	cmd         *exec.Cmd
	grpc, admin string
	logs        *boundedLog
	exited      chan struct{}
	waitErr     error
	signalOnce  sync.Once
}

// boundedLog keeps the first 256 KiB of a process's output, for failure
// reports, and notes data races anywhere in it.
type boundedLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	race bool
}

func (l *boundedLog) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(s, "DATA RACE") {
		l.race = true
	}
	if l.b.Len() < 256<<10 {
		l.b.WriteString(s + "\n")
	}
}

func (l *boundedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startGatewayProcs starts n gateway processes at once, the i-th with the
// name, key and args spec(i) returns, and stops the test if any did not
// start.
func startGatewayProcs(ctx context.Context, t *testing.T, bin string, n int, spec func(i int) (name, key string, args []string)) []*gatewayProc {
	t.Helper()
	gws := make([]*gatewayProc, n)
	var wg sync.WaitGroup
	for i := range gws {
		name, key, args := spec(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			gws[i] = startGatewayProc(ctx, t, bin, name, key, args)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return gws
}

// startGatewayProc starts the binary on loopback ports it picks itself and
// reads them from its "serving" log line. At the end of the test it gets
// SIGTERM and must exit cleanly, without a data race.
func startGatewayProc(ctx context.Context, t *testing.T, bin, name, key string, args []string) *gatewayProc {
	t.Helper()
	args = append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"SPEECH_GATEWAY_SLNG_API_KEY=" + key}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return nil
	}
	if err := cmd.Start(); err != nil {
		t.Errorf("%s: %v", name, err)
		return nil
	}
	g := &gatewayProc{name: name, cmd: cmd, logs: &boundedLog{}, exited: make(chan struct{})}
	serving := make(chan [2]string, 1)
	go func() {
		defer close(g.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			g.logs.line(sc.Text())
			var m struct{ Msg, GRPC, Admin string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" {
				serving <- [2]string{m.GRPC, m.Admin}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		g.waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		g.signal(t)
		timer := time.NewTimer(20 * time.Second)
		defer timer.Stop()
		select {
		case <-g.exited:
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-g.exited
			t.Errorf("%s: no exit 20 s after SIGTERM", name)
		}
		if g.waitErr != nil {
			t.Errorf("%s exited with %v", name, g.waitErr)
		}
		if g.logs.race {
			t.Errorf("%s: data race:\n%s", name, g.logs)
		}
	})
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case a := <-serving:
		g.grpc, g.admin = a[0], a[1]
		return g
	case <-g.exited:
		t.Errorf("%s exited before serving: %v\n%s", name, g.waitErr, g.logs)
	case <-timer.C:
		t.Errorf("%s did not serve within 20 s\n%s", name, g.logs)
	case <-ctx.Done():
		t.Errorf("%s: %v", name, ctx.Err())
	}
	return nil
}

// signal sends SIGTERM, once.
func (g *gatewayProc) signal(t *testing.T) {
	g.signalOnce.Do(func() {
		if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("%s: SIGTERM: %v", g.name, err)
		}
	})
}

// promServer is a Prometheus process and its HTTP API.
type promServer struct {
	url  string
	logs *boundedLog
}

// startPrometheus runs Prometheus on a free loopback port (never its 9090
// default, which is the gateway's admin default), scraping each target as
// its own job every second and evaluating rules every second.
func startPrometheus(ctx context.Context, t *testing.T, bin, rules string, targets map[string]string) *promServer {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n", rules)
	jobs := make([]string, 0, len(targets))
	for job := range targets {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", job, targets[job])
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// A free port can be taken between the check and Prometheus's listen:
	// then try another.
	for attempt := 1; ; attempt++ {
		addr := freeLoopbackAddr(t)
		p := &promServer{url: "http://" + addr, logs: &boundedLog{}}
		cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, fmt.Sprint("data", attempt)),
			"--web.listen-address="+addr, "--log.level=warn", "--storage.tsdb.retention.time=1h")
		out, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				p.logs.line(sc.Text())
			}
			_, _ = io.Copy(io.Discard, out)
			_ = cmd.Wait()
		}()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			timer := time.NewTimer(10 * time.Second)
			defer timer.Stop()
			select {
			case <-exited:
			case <-timer.C:
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if p.ready(ctx, exited) {
			t.Cleanup(stop)
			return p
		}
		stop()
		if attempt == 3 || ctx.Err() != nil {
			t.Fatalf("prometheus did not become ready on %s:\n%s", addr, p.logs)
		}
	}
}

// ready polls /-/ready until Prometheus answers, exits or ctx ends.
func (p *promServer) ready(ctx context.Context, exited <-chan struct{}) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := httpClient.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// api GETs a Prometheus API path and decodes its data into out.
func (p *promServer) api(ctx context.Context, path string, params url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s %s: %s", path, params.Get("query"), body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

// promSample is one series of an instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query evaluates expr now and returns the number of series.
func (p *promServer) query(ctx context.Context, expr string) (int, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	if data.ResultType != "vector" {
		return 1, nil
	}
	var v []promSample
	err := json.Unmarshal(data.Result, &v)
	return len(v), err
}

// vector evaluates expr now.
func (p *promServer) vector(ctx context.Context, t *testing.T, expr string) []promSample {
	t.Helper()
	var data struct {
		Result []promSample `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		t.Fatal(err)
	}
	return data.Result
}

// scalar is the value of a one-series expr; false when it has none.
func (p *promServer) scalar(ctx context.Context, t *testing.T, expr string) (float64, bool) {
	t.Helper()
	v := p.vector(ctx, t, expr)
	if len(v) != 1 {
		return 0, false
	}
	s, _ := v[0].Value[1].(string)
	var f float64
	_, err := fmt.Sscan(s, &f)
	return f, err == nil
}

// waitFor polls until expr has a result.
func (p *promServer) waitFor(ctx context.Context, t *testing.T, expr string) {
	t.Helper()
	p.poll(ctx, t, expr, func() bool { return len(p.vector(ctx, t, expr)) > 0 })
}

// waitForAlerts polls the alerts API until every alert in want is pending
// or firing for job, or was since since: a scenario whose gateway ends
// (draining) may be looked at after its alert went.
func (p *promServer) waitForAlerts(ctx context.Context, t *testing.T, job string, want []string, since time.Time) {
	t.Helper()
	var active map[string]string
	p.poll(ctx, t, fmt.Sprintf("alerts %v for job %s (active: %v)", want, job, &active), func() bool {
		var data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := p.api(ctx, "/api/v1/alerts", nil, &data); err != nil {
			t.Fatal(err)
		}
		active = map[string]string{}
		for _, a := range data.Alerts {
			if a.Labels["job"] == job {
				active[a.Labels["alertname"]] = a.State
			}
		}
		for _, a := range p.alertHistory(ctx, t, time.Since(since)+time.Minute)[job] {
			if active[a] == "" {
				active[a] = "seen"
			}
		}
		for _, a := range want {
			if active[a] == "" {
				return false
			}
		}
		t.Logf("%s: %v", job, active)
		return true
	})
}

// waitForEvaluations waits until the rule group has been evaluated n more
// times.
func (p *promServer) waitForEvaluations(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	var first time.Time
	p.poll(ctx, t, "rule evaluations", func() bool {
		var data struct {
			Groups []struct {
				LastEvaluation time.Time `json:"lastEvaluation"`
			} `json:"groups"`
		}
		if err := p.api(ctx, "/api/v1/rules", nil, &data); err != nil {
			t.Fatal(err)
		}
		if len(data.Groups) == 0 {
			return false
		}
		last := data.Groups[0].LastEvaluation
		if first.IsZero() {
			first = last
		}
		return last.Sub(first) >= time.Duration(n)*time.Second
	})
}

// alertHistory is every alert that was pending or firing within d, by
// job, from the ALERTS series Prometheus records.
func (p *promServer) alertHistory(ctx context.Context, t *testing.T, d time.Duration) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, s := range p.vector(ctx, t, fmt.Sprintf("count by (job, alertname) (count_over_time(ALERTS[%ds]))", int(d.Seconds()))) {
		out[s.Metric["job"]] = append(out[s.Metric["job"]], s.Metric["alertname"])
	}
	for _, names := range out {
		sort.Strings(names)
	}
	return out
}

// poll calls done every 250 ms until it reports true, failing the test
// when ctx ends first.
func (p *promServer) poll(ctx context.Context, t *testing.T, what any, done func() bool) {
	t.Helper()
	if err := poll.Until(ctx, 250*time.Millisecond, done); err != nil {
		t.Fatalf("gave up waiting for %v: %v\nprometheus:\n%s", what, err, p.logs)
	}
}

// alertNames lists the alerts a rules file defines.
func alertNames(t *testing.T, path string) []string {
	t.Helper()
	b := readFile(t, path)
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`).FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("%s defines no alerts", path)
	}
	return names
}

// documentedMetrics lists the metrics in docs/operations.md's metrics
// table, without the go_* and process_* families of client_golang (whose
// names the table does not spell out).
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b := readFile(t, operationsDocFile)
	// The table's rows follow its header up to the first line that is not
	// a row.
	_, table, _ := strings.Cut(string(b), "\n| metric | type | labels | meaning |\n|---|")
	var names []string
	for _, line := range strings.Split(table, "\n")[1:] {
		if !strings.HasPrefix(line, "| ") {
			break
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " | ")
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cell, -1) {
			names = append(names, m[1])
		}
	}
	if len(names) < 10 {
		t.Fatalf("found %d metrics in the table of %s: %v", len(names), operationsDocFile, names)
	}
	return names
}

// dashboardQueries lists every PromQL expression in the Grafana dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b := readFile(t, dashboardFile)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				out = append(out, tg.Expr)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no queries", dashboardFile)
	}
	return out
}
