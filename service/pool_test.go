package service

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// firstAudio opens a SynthesizeText stream and returns how long the first
// audio chunk took, whether a warm session served it, and the upstream
// session id; it reads the stream to its end.
func (h *harness) firstAudio(t *testing.T, ctx context.Context, text string) (time.Duration, bool, string) {
	t.Helper()
	start := time.Now()
	stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	var ttfa time.Duration
	var started *speechv1.SynthesisStarted
	for {
		m, err := stream.Recv()
		if err != nil {
			if ttfa == 0 {
				t.Fatalf("stream ended before audio: %v", err)
			}
			break
		}
		if s := m.GetStarted(); s != nil {
			started = s
		}
		if m.GetAudio() != nil && ttfa == 0 {
			ttfa = time.Since(start)
		}
	}
	return ttfa, started.GetWarmSession(), started.GetUpstreamSessionId()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestWarmTimeToFirstAudio: with 50 ms of connect latency and 50 ms from
// init to ready at SLNG, a warm session makes the first audio of a stream
// arrive at least 3 times sooner than a fresh dial.
func TestWarmTimeToFirstAudio(t *testing.T) {
	t.Parallel()
	sim := slngsim.Options{ConnectLatency: 50 * time.Millisecond, ReadyLatency: 50 * time.Millisecond}
	const runs = 7
	ctx := testContext(t)

	cold := newHarness(t, sim, Config{})
	var coldTimes []time.Duration
	for range runs {
		d, warm, _ := cold.firstAudio(t, ctx, "Cold start.")
		if warm {
			t.Fatal("a warm session without a pool")
		}
		coldTimes = append(coldTimes, d)
	}

	warmH := newPooledHarness(t, sim, Config{}, slngpool.Options{})
	profiles, err := warmH.srv.Profiles([]*speechv1.SynthesisConfig{{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := warmH.pool.Prewarm(profiles[0]); err != nil {
		t.Fatal(err)
	}
	var warmTimes []time.Duration
	for range runs {
		waitFor(t, func() bool { return warmH.pool.IdleCount() > 0 }, "a standby session")
		d, warm, _ := warmH.firstAudio(t, ctx, "Warm start.")
		if !warm {
			t.Fatal("the prewarmed session did not serve the stream")
		}
		warmTimes = append(warmTimes, d)
	}
	c, w := median(coldTimes), median(warmTimes)
	t.Logf("time to first audio, median of %d: pooling disabled %s, warm session %s (%.1fx)", runs, c, w, float64(c)/float64(w))
	if c < 3*w {
		t.Fatalf("a warm session is only %.1fx faster", float64(c)/float64(w))
	}
}

// TestReuseAfterCleanStream: a SynthesizeText stream leaves its session
// clean, so the next stream gets it; a stream that cleared a turn or left
// text unflushed does not hand its session on.
func TestReuseAfterCleanStream(t *testing.T) {
	t.Parallel()
	h := newPooledHarness(t, slngsim.Options{}, Config{}, slngpool.Options{RecentTTL: -1})
	ctx := testContext(t)
	_, warm, first := h.firstAudio(t, ctx, "First.")
	if warm {
		t.Fatal("the first stream cannot be warm")
	}
	waitFor(t, func() bool { return h.pool.IdleCount() == 1 }, "the session back in the pool")
	_, warm, second := h.firstAudio(t, ctx, "Second.")
	if !warm || second != first {
		t.Fatalf("warm %v, session %s; want the first stream's session %s", warm, second, first)
	}

	for _, tc := range []struct {
		name string
		reqs []*speechv1.SynthesizeRequest
	}{
		{"cleared", []*speechv1.SynthesizeRequest{ttsText("One.", true), {Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}}}},
		{"unflushed text", []*speechv1.SynthesizeRequest{ttsText("Left hanging", false)}},
	} {
		waitFor(t, func() bool { return h.pool.IdleCount() == 1 }, "the session back in the pool")
		b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{})
		for _, r := range tc.reqs {
			b.send(r)
		}
		if err := b.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		resps, err := recvAll(t, b.stream.Recv)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !resps[0].GetStarted().GetWarmSession() {
			t.Fatalf("%s: the clean session was not reused", tc.name)
		}
		waitFor(t, func() bool { return h.pool.IdleCount() == 0 }, "the pool to be empty")
		time.Sleep(20 * time.Millisecond)
		if h.pool.IdleCount() != 0 {
			t.Fatalf("%s: the session went back to the pool", tc.name)
		}
		// The next stream must get a fresh session.
		_, warm, _ := h.firstAudio(t, ctx, "Fresh.")
		if warm {
			t.Fatalf("%s: the next stream got a used session", tc.name)
		}
	}
}

func TestKilledStandbyStreamSucceeds(t *testing.T) {
	t.Parallel()
	h := newPooledHarness(t, slngsim.Options{}, Config{}, slngpool.Options{})
	// Transcribe at the default synthesis rate, so that it hears the
	// synthesized audio as it is.
	sttCfg := &speechv1.RecognitionConfig{Format: &speechv1.AudioFormat{
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: defaultTTSSampleRate}}
	profiles, err := h.srv.Profiles([]*speechv1.SynthesisConfig{{}}, []*speechv1.RecognitionConfig{sttCfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range profiles {
		if err := h.pool.Prewarm(pr); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testContext(t)
	killed := map[string]bool{}
	for range 3 {
		waitFor(t, func() bool { return h.pool.IdleCount() >= 2 }, "two standby sessions")
		// No stream is running: every open session is a standby (some
		// are sessions clean streams handed back).
		n := h.sim.Kill(func(info slngsim.SessionInfo) bool {
			if killed[info.ID] {
				return false // cut already; its handler has not noticed yet
			}
			killed[info.ID] = true
			return true
		})
		if n < 2 {
			t.Fatalf("killed %d standbys, want 2 or more", n)
		}
		resps, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Still here."})
		if err != nil {
			t.Fatalf("synthesize after the standby died: %v", err)
		}
		got, err := h.transcribe(t, ctx, sttCfg, audioOf(resps), 4800)
		if err != nil {
			t.Fatalf("transcribe after the standby died: %v", err)
		}
		if finalText(got) != "Still here." {
			t.Fatalf("transcript %q", finalText(got))
		}
	}
}

func TestCircuitBreakerThroughTheGateway(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	h := newPooledHarness(t, slngsim.Options{Script: func(slngsim.ConnInfo) slngsim.Fault {
		if failing.Load() {
			_, f, _ := slngsim.ParseFault("*=handshake:503")
			return f
		}
		return slngsim.Fault{}
	}}, Config{}, slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 3, BreakerOpenTimeout: 300 * time.Millisecond})
	ctx := testContext(t)
	req := &speechv1.SynthesizeTextRequest{Text: "Hello."}
	for range 3 {
		_, err := h.synthesizeText(t, ctx, req)
		wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	}
	rejected := h.sim.Stats().Rejected
	_, err := h.synthesizeText(t, ctx, req)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamCircuitOpen)
	_, retry := details(st)
	if d := retry.GetRetryDelay().AsDuration(); d <= 0 || d > 300*time.Millisecond {
		t.Fatalf("RetryInfo delay %s, want the time left open", d)
	}
	if h.sim.Stats().Rejected != rejected {
		t.Fatal("the gateway dialled SLNG while the circuit was open")
	}
	failing.Store(false)
	// Until the breaker's open time (real time, gobreaker's) has passed,
	// streams fail at once without a dial; then the half-open probe
	// restores service.
	waitFor(t, func() bool {
		_, err = h.synthesizeText(t, ctx, req)
		if err != nil {
			wantStatus(t, err, codes.Unavailable, ReasonUpstreamCircuitOpen)
		}
		return err == nil
	}, "the half-open probe")
	if h.sim.Stats().Rejected != rejected {
		t.Fatal("the gateway dialled SLNG while the circuit was open")
	}
	if err != nil {
		t.Fatalf("the half-open probe did not restore service: %v", err)
	}
	if _, err := h.synthesizeText(t, ctx, req); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestCallerKey(t *testing.T) {
	t.Parallel()
	sim := slngsim.Options{APIKeys: []string{callerKey}}
	withKey := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, CallerKeyHeader, callerKey)
	}

	t.Run("refused by default", func(t *testing.T) {
		h := newHarness(t, sim, Config{})
		_, err := h.synthesizeText(t, withKey(testContext(t)), &speechv1.SynthesizeTextRequest{Text: "Hi."})
		st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
		if f := fieldViolations(st); len(f) != 1 || f[0] != "metadata."+CallerKeyHeader {
			t.Fatalf("violations %v", f)
		}
		if len(h.sim.Sessions()) != 0 {
			t.Fatal("dialled with a refused key")
		}
	})
	t.Run("pooled per key", func(t *testing.T) {
		h := newPooledHarness(t, sim, Config{AllowCallerKey: true}, slngpool.Options{RecentTTL: -1})
		ctx := testContext(t)
		_, warm, first := h.firstAudio(t, withKey(ctx), "Mine.")
		if warm {
			t.Fatal("first stream warm")
		}
		waitFor(t, func() bool { return h.pool.IdleCount() == 1 }, "the caller's session back in the pool")
		_, warm, other := h.firstAudio(t, ctx, "The gateway's.")
		if warm || other == first {
			t.Fatal("a session opened with the caller's key served a stream without it")
		}
		_, warm, again := h.firstAudio(t, withKey(ctx), "Mine again.")
		if !warm || again != first {
			t.Fatalf("the caller's own session was not reused: warm %v", warm)
		}
		byKey := map[string][]string{}
		for _, s := range h.sim.Sessions() {
			byKey[s.KeyID] = append(byKey[s.KeyID], s.ID)
		}
		if ids := byKey[slngsim.KeyID(callerKey)]; len(ids) != 1 || ids[0] != first {
			t.Fatalf("sessions with the caller's key: %v", ids)
		}
		if ids := byKey[slngsim.KeyID(testKey)]; len(ids) != 1 || ids[0] != other {
			t.Fatalf("sessions with the gateway's key: %v", ids)
		}
	})
}

func TestUpstreamCapacity(t *testing.T) {
	t.Parallel()
	h := newPooledHarness(t, slngsim.Options{}, Config{},
		slngpool.Options{DisableWarm: true, MaxSessions: 1, AcquireTimeout: 100 * time.Millisecond})
	ctx := testContext(t)
	b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{})
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetStarted() != nil })

	start := time.Now()
	_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "No room."})
	wantStatus(t, err, codes.ResourceExhausted, ReasonUpstreamCapacity)
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("refused after %s, before the acquire timeout", waited)
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, b.stream.Recv); err != nil {
		t.Fatal(err)
	}
	if _, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Room now."}); err != nil {
		t.Fatalf("after the first stream ended: %v", err)
	}
}
