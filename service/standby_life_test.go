package service

import (
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// A warm standby is lent at once: its first text or audio never waits for
// a ping. These tests run the gateway on a pool that keeps one standby of
// each RPC's default configuration and reaches the simulator through a
// proxy whose connections can vanish without a FIN.

// standbyTTS and standbySTT are the configurations the tests' streams use and keep
// warm.
var (
	standbyTTS = &speechv1.SynthesisConfig{}
	standbySTT = &speechv1.RecognitionConfig{EnablePartials: true}
)

// newStandbyHarness is a gateway whose pool dials the simulator through a
// proxy, keeps one standby of standbyTTS and of standbySTT, and has no
// liveness pings of its own.
func newStandbyHarness(t *testing.T, simOpts slngsim.Options, poolOpts slngpool.Options) (*harness, *slngtest.Proxy) {
	t.Helper()
	simOpts.APIKey = testKey
	sim := slngtest.NewServer(t, simOpts)
	proxy := slngtest.NewProxy(t, sim.URL())
	h := gatewayVia(t, slngclient.Options{BaseURL: proxy.URL(), PingInterval: -1}, Config{}, poolOpts, sentinelLogger(t))
	h.sim = sim
	profiles, err := h.srv.Profiles([]*speechv1.SynthesisConfig{standbyTTS}, []*speechv1.RecognitionConfig{standbySTT})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range profiles {
		if err := h.pool.Prewarm(p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return h.pool.IdleCount() == 2 }, "a standby of each RPC")
	return h, proxy
}

// TestVanishedStandbyStillSpeaks: the standbys' peers vanish without a
// FIN. A stream lent one still gets its audio (Synthesize) or its
// transcript (Transcribe), within the checkout ping timeout and a dial:
// the standby fails its proof of life beside the first message, and the
// stream replays it on a new session, before any answer reached the
// caller. Without the proof, the stream would wait for its turn timeout.
func TestVanishedStandbyStillSpeaks(t *testing.T) {
	t.Parallel()
	const checkout = 300 * time.Millisecond
	h, proxy := newStandbyHarness(t, slngsim.Options{}, slngpool.Options{CheckoutPingTimeout: checkout, HeardWithin: -1})
	if n := proxy.Freeze(); n != 2 {
		t.Fatalf("froze %d connections, want the 2 standbys'", n)
	}
	ctx := testContext(t)
	// The bound leaves a loaded machine plenty for the dial; a stream
	// held by a dead session would wait for the turn timeout instead.
	bound := checkout + 3*time.Second
	if h.srv.cfg.TurnTimeout <= bound {
		t.Fatalf("turn timeout %v: the test cannot tell a replay from a turn timeout", h.srv.cfg.TurnTimeout)
	}

	ttfa, warm, id := h.firstAudio(t, ctx, "Still here.")
	if !warm {
		t.Error("the standby did not serve the stream")
	}
	if ttfa > bound {
		t.Errorf("first audio after %v, want within the checkout ping timeout and a dial (%v)", ttfa, bound)
	}
	// The standby never heard the text; another session spoke it.
	spoke := ""
	for _, s := range h.sim.Sessions() {
		if s.Kind == "tts" && s.TurnsCompleted > 0 {
			spoke = s.ID
		}
	}
	if spoke == "" || spoke == id || sessionInfo(h.sim, id).Received["text"] != 0 {
		t.Errorf("session %s spoke, the standby %s heard %d texts; want a new session to speak, the standby to hear nothing",
			spoke, id, sessionInfo(h.sim, id).Received["text"])
	}

	start := time.Now()
	resps, err := h.transcribe(t, ctx, standbySTT, slngsim.Synthesize("Still listening.", "linear16", 16000), 640)
	if err != nil {
		t.Fatalf("transcribe: %v", err)
	}
	if got := finalText(resps); got != "Still listening." {
		t.Errorf("final %q, want the audio's words, replayed on a new session", got)
	}
	if !resps[0].GetStarted().GetWarmSession() {
		t.Error("the standby did not serve the stream")
	}
	if d := time.Since(start); d > bound {
		t.Errorf("transcript after %v, want within the checkout ping timeout and a dial (%v)", d, bound)
	}
	if got := h.counter(t, "speech_gateway_pool_standby_deaths_total", map[string]string{"cause": "ping"}); got != 2 {
		t.Errorf("standby deaths by ping = %v, want 2", got)
	}
}

// TestStandbyFirstMessageBeforePing: a healthy standby not heard from
// lately carries its first text, or first audio, before any ping: the
// simulator receives it before the proof's ping, so answers no ping
// before it, and answers that one after.
func TestStandbyFirstMessageBeforePing(t *testing.T) {
	t.Parallel()
	h, _ := newStandbyHarness(t, slngsim.Options{Latency: 10 * time.Millisecond},
		slngpool.Options{CheckoutPingTimeout: 5 * time.Second, HeardWithin: -1})
	ctx := testContext(t)
	standbys := map[string]string{} // kind to session id
	for _, s := range h.sim.Sessions() {
		standbys[s.Kind] = s.ID
	}

	_, warm, id := h.firstAudio(t, ctx, "Text first.")
	if !warm || id != standbys["tts"] {
		t.Fatalf("warm %v, session %s; want the standby %s", warm, id, standbys["tts"])
	}
	resps, err := h.transcribe(t, ctx, standbySTT, slngsim.Synthesize("Audio first.", "linear16", 16000), 640)
	if err != nil || finalText(resps) != "Audio first." || resps[0].GetStarted().GetUpstreamSessionId() != standbys["stt"] {
		t.Fatalf("transcribe: %q, %v, session %s; want the audio's words from the standby %s",
			finalText(resps), err, resps[0].GetStarted().GetUpstreamSessionId(), standbys["stt"])
	}
	for kind, id := range standbys {
		waitFor(t, func() bool { return sessionInfo(h.sim, id).Pings == 1 }, "the proof's ping on the "+kind+" standby")
		if info := sessionInfo(h.sim, id); info.PingsBeforeData != 0 {
			t.Errorf("%s: the simulator answered %d pings before the first data, want 0", kind, info.PingsBeforeData)
		}
	}
}

// sessionInfo is the simulator's record of session id.
func sessionInfo(sim *slngsim.Server, id string) slngsim.SessionInfo {
	for _, s := range sim.Sessions() {
		if s.ID == id {
			return s
		}
	}
	return slngsim.SessionInfo{}
}
