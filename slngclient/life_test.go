package slngclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestProveLifeBesideTheFirstMessage: the proof's ping follows the first
// message instead of holding it back (the simulator answers no ping before
// the text), the turn is spoken, and the pong counts as SLNG heard from.
func TestProveLifeBesideTheFirstMessage(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	sim, c := setup(t, slngsim.Options{Latency: 10 * time.Millisecond}, slngclient.Options{PingInterval: -1})
	for _, kind := range []string{"tts", "stt"} {
		var sess interface {
			ProveLife(time.Duration)
			LifeUnproven() bool
			Heard() time.Time
			Stats() slngclient.Stats
			CloseNow()
		}
		var send, answered func()
		switch kind {
		case "tts":
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			sess = s
			send = func() {
				if err := s.Text(ctx, "Alive.", true); err != nil {
					t.Fatal(err)
				}
			}
			answered = func() { recvUntil(t, ctx, s, slngclient.TTSAudio) }
		case "stt":
			s, err := c.DialSTT(ctx, nova, slngclient.STTConfig{EnablePartials: true})
			if err != nil {
				t.Fatal(err)
			}
			sess = s
			send = func() {
				// In 20 ms chunks: partials come between chunks.
				audio := slngsim.Synthesize("Alive and well.", "linear16", 16000)
				for off := 0; off < len(audio); off += 640 {
					if err := s.SendAudio(ctx, audio[off:min(off+640, len(audio))]); err != nil {
						t.Fatal(err)
					}
				}
			}
			answered = func() {
				for {
					ev, err := s.Recv(ctx)
					if err != nil {
						t.Fatalf("recv: %v", err)
					}
					if ev.Kind == slngclient.STTPartial {
						return
					}
				}
			}
		}
		heard := sess.Heard()
		if heard.IsZero() || time.Since(heard) > time.Minute {
			t.Fatalf("%s: Heard = %v right after ready", kind, heard)
		}
		sess.ProveLife(5 * time.Second)
		send()
		answered()
		if err := poll.Until(ctx, 5*time.Millisecond, func() bool { return sess.Stats().PingsSent == 1 && sess.Heard().After(heard) }); err != nil {
			t.Fatalf("%s: no pong for the proof: %v", kind, err)
		}
		info := sim.Sessions()[len(sim.Sessions())-1]
		if info.Pings != 1 || info.PingsBeforeData != 0 {
			t.Errorf("%s: the simulator answered %d pings, %d of them before the first data; want one, after it", kind, info.Pings, info.PingsBeforeData)
		}
		if sess.LifeUnproven() {
			t.Errorf("%s: LifeUnproven on a live session", kind)
		}
		sess.CloseNow()
	}
}

// TestProveLifeEndsSilentSession: a session whose peer vanished without a
// FIN ends within the proof's bound, with a retryable timeout, and
// LifeUnproven says why; without a proof it would wait for the next
// liveness ping.
func TestProveLifeEndsSilentSession(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: key})
	proxy := slngtest.NewProxy(t, sim.URL())
	c, err := slngclient.New(slngclient.Options{BaseURL: proxy.URL(), APIKey: key, PingInterval: -1, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	if n := proxy.Freeze(); n != 1 {
		t.Fatalf("froze %d connections, want 1", n)
	}
	const within = 200 * time.Millisecond
	s.ProveLife(within)
	start := time.Now()
	if err := s.Text(ctx, "Anyone there?", true); err != nil {
		t.Fatalf("text: %v", err)
	}
	_, err = s.Recv(ctx)
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok || ue.Kind != slngclient.KindTimeout || !ue.Retryable {
		t.Fatalf("Recv = %v, want a retryable timeout", err)
	}
	if d := time.Since(start); d < within {
		t.Errorf("ended after %v, before the proof's bound %v", d, within)
	}
	if !s.LifeUnproven() {
		t.Error("LifeUnproven = false")
	}
}

// TestProveLifeCountsFrames: a frame proves life as a pong does. The
// peer here answers no ping but speaks after the first message; the
// session lives on past the proof's bound.
func TestProveLifeCountsFrames(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			OnPingReceived: func(context.Context, []byte) bool { return false }, // no pong, ever
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context()) // init
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"ready","session_id":"sess_mute"}`))
		_, _, _ = c.Read(r.Context()) // text
		_ = c.Write(r.Context(), websocket.MessageBinary, []byte{1, 2, 3, 4})
		go func() { _, _, _ = c.Read(r.Context()) }() // reads pings until the end
		<-stop
	}))
	defer srv.Close()
	defer close(stop)
	ctx := testCtx(t)
	c, err := slngclient.New(slngclient.Options{BaseURL: "ws" + strings.TrimPrefix(srv.URL, "http"), PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	// Long enough for the audio to come on a busy machine: the proof
	// counts any frame that arrives within it.
	const within = 300 * time.Millisecond
	s.ProveLife(within)
	if err := s.Text(ctx, "Audio, no pong.", false); err != nil {
		t.Fatal(err)
	}
	if ev, err := s.Recv(ctx); err != nil || ev.Kind != slngclient.TTSAudio {
		t.Fatalf("Recv = %v, %v; want the audio", ev, err)
	}
	// Waits out the proof's bound; no goroutine is synchronized by it.
	time.Sleep(2 * within)
	if s.LifeUnproven() || s.Err() != nil || s.Stats().PingsSent != 1 {
		t.Fatalf("LifeUnproven %v, Err %v, %d pings; want a live session after one unanswered ping", s.LifeUnproven(), s.Err(), s.Stats().PingsSent)
	}
}
