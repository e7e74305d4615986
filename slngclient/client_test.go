package slngclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const key = "sk_client_test_SENTINEL_123"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a simulator and a client pointed at it.
func setup(t *testing.T, simOpts slngsim.Options, opts slngclient.Options) (*slngsim.Server, *slngclient.Client) {
	t.Helper()
	simOpts.APIKey = key
	sim := slngtest.NewServer(t, simOpts)
	opts.BaseURL = sim.URL()
	if opts.APIKey == "" {
		opts.APIKey = key
	}
	opts.Logger = zaptest.NewLogger(t)
	c, err := slngclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

var aura = slngclient.Endpoint{Model: "deepgram/aura:2"}
var nova = slngclient.Endpoint{Model: "deepgram/nova:3"}

// recvTurn reads TTS events until audio_end and returns the kinds (audio
// runs collapsed) and the audio.
func recvTurn(t *testing.T, ctx context.Context, s *slngclient.TTSSession) ([]slngclient.TTSEventKind, []byte) {
	t.Helper()
	var kinds []slngclient.TTSEventKind
	var audio []byte
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if ev.Kind != slngclient.TTSAudio || len(kinds) == 0 || kinds[len(kinds)-1] != slngclient.TTSAudio {
			kinds = append(kinds, ev.Kind)
		}
		audio = append(audio, ev.Audio...)
		if ev.Kind == slngclient.TTSTurnEnd {
			return kinds, audio
		}
	}
}

// recvUntil reads TTS events until one of kind want and returns the kinds
// before it.
func recvUntil(t *testing.T, ctx context.Context, s *slngclient.TTSSession, want slngclient.TTSEventKind) []slngclient.TTSEventKind {
	t.Helper()
	var before []slngclient.TTSEventKind
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if ev.Kind == want {
			return before
		}
		before = append(before, ev.Kind)
	}
}

// TestRoundTrip2000 is the package's acceptance test: 2,000 characters
// through the simulator's TTS at 24 kHz linear16, in both audio forms, fed
// back through the simulator's STT, give back the same text.
func TestRoundTrip2000(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("Every byte arrives once and in order; ", 60)[:2000]
	for name, form := range map[string]slngsim.AudioForm{"binary": slngsim.AudioBinary, "audio_chunk": slngsim.AudioJSON} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sim, c := setup(t, slngsim.Options{AudioForm: form}, slngclient.Options{})
			ctx := testCtx(t)
			tts, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{Voice: "aura-2-thalia-en", Encoding: "linear16", SampleRate: 24000})
			if err != nil {
				t.Fatal(err)
			}
			defer tts.CloseNow()
			if !strings.HasPrefix(tts.ID(), "sess_") || !strings.HasPrefix(tts.RequestID(), "req_") {
				t.Errorf("ids %q %q", tts.ID(), tts.RequestID())
			}
			if err := tts.Text(ctx, text, true); err != nil {
				t.Fatal(err)
			}
			kinds, audio := recvTurn(t, ctx, tts)
			want := []slngclient.TTSEventKind{slngclient.TTSSegmentStart, slngclient.TTSAudio, slngclient.TTSSegmentEnd, slngclient.TTSTurnEnd}
			if !equalKinds(kinds, want) {
				t.Fatalf("events %v, want %v", kinds, want)
			}
			if err := tts.Close(ctx); err != nil {
				t.Fatal(err)
			}

			stt, err := c.DialSTT(ctx, nova, slngclient.STTConfig{SampleRate: 24000, EnablePartials: true})
			if err != nil {
				t.Fatal(err)
			}
			defer stt.CloseNow()
			for i := 0; i < len(audio); i += 4801 { // odd chunks split samples
				if err := stt.SendAudio(ctx, audio[i:min(i+4801, len(audio))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := stt.CloseSend(ctx); err != nil {
				t.Fatal(err)
			}
			var finals []string
			partials := 0
			for {
				ev, err := stt.Recv(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				switch ev.Kind {
				case slngclient.STTFinal:
					finals = append(finals, ev.Transcript.Text)
				case slngclient.STTPartial:
					partials++
				}
			}
			if strings.Join(finals, " ") != text {
				t.Fatalf("round trip lost the text (%d finals)", len(finals))
			}
			if partials == 0 {
				t.Error("no partial transcripts")
			}
			if v := sim.Stats().ProtocolViolations; v != 0 {
				t.Errorf("simulator counted %d protocol violations", v)
			}
		})
	}
}

func equalKinds[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTTSControlMessages(t *testing.T) {
	t.Parallel()
	sim, c := setup(t, slngsim.Options{Realtime: true}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	// A bare flush never reaches SLNG.
	if err := s.Flush(ctx); !errors.Is(err, slngclient.ErrNothingToFlush) {
		t.Fatalf("bare flush: %v", err)
	}
	// Clear mid-turn: cleared, and nothing of the turn after it.
	if err := s.Text(ctx, strings.Repeat("long ", 100), false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, ctx, s, slngclient.TTSAudio)
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	for _, kind := range recvUntil(t, ctx, s, slngclient.TTSCleared) {
		if kind != slngclient.TTSAudio {
			t.Fatalf("unexpected %v before cleared", kind)
		}
	}
	// The next turn is whole: nothing of the cleared one leaks into it.
	if err := s.Keepalive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Text(ctx, "After the cancel.", true); err != nil {
		t.Fatal(err)
	}
	var audio []byte
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == slngclient.TTSSegmentStart {
			audio = audio[:0] // the previous turn's stray start, if any
		}
		audio = append(audio, ev.Audio...)
		if ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	if got, _ := slngsim.Decode(audio, "linear16", 24000); got != "After the cancel." {
		t.Fatalf("turn after cancel decoded %q", got)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(ctx); !errors.Is(err, slngclient.ErrSessionClosed) {
		t.Fatalf("recv after close: %v", err)
	}
	if err := s.Text(ctx, "x", false); !errors.Is(err, slngclient.ErrSessionClosed) {
		t.Fatalf("text after close: %v", err)
	}
	info := sim.Sessions()[0]
	if info.ProtocolErrors != 0 || info.Received["flush"] != 2 || info.Received["clear"] != 1 ||
		info.Received["keepalive"] != 1 || info.Received["close"] != 1 {
		t.Fatalf("simulator saw %+v", info.Received)
	}
	if !strings.Contains(string(info.Init), `"encoding":"linear16"`) || !strings.Contains(string(info.Init), `"sample_rate":24000`) {
		t.Fatalf("init must state encoding and sample rate: %s", info.Init)
	}
}

func TestSTTEvents(t *testing.T) {
	t.Parallel()
	_, c := setup(t, slngsim.Options{}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialSTT(ctx, nova, slngclient.STTConfig{
		EnablePartials: true, EnableVAD: true, EnableDiarization: true, MaxSpeakers: 2, EnableWordTimestamps: true, Language: "en",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	if err := s.SendAudio(ctx, nil); !errors.Is(err, slngclient.ErrEmptyAudio) {
		t.Fatalf("empty audio: %v", err)
	}
	// 20 ms chunks, as a live caller sends them; partials come between.
	audio := slngsim.Synthesize("Hello there, world.", "linear16", 16000)
	for len(audio) > 0 {
		n := min(640, len(audio))
		if err := s.SendAudio(ctx, audio[:n]); err != nil {
			t.Fatal(err)
		}
		audio = audio[n:]
	}
	seen := map[slngclient.STTEventKind]int{}
	var final slngclient.Transcript
	for seen[slngclient.STTUtteranceEnd] == 0 {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[ev.Kind]++
		if ev.Kind == slngclient.STTFinal {
			final = ev.Transcript
		}
		if ev.Kind == slngclient.STTUtteranceEnd && ev.LastWordEnd <= 0 {
			t.Error("utterance_end without last_word_end")
		}
	}
	if seen[slngclient.STTPartial] == 0 || final.Text != "Hello there, world." || !final.HasStart ||
		final.Duration <= 0 || final.Language != "en" || len(final.Words) != 3 ||
		final.Words[2].PunctuatedWord != "world." || final.Words[2].Word != "world" || !final.Words[0].HasSpeaker ||
		final.Words[0].End <= final.Words[0].Start {
		t.Fatalf("events %v, final %+v", seen, final)
	}
	// finalize with nothing pending: an empty final from the finalize.
	if err := s.Finalize(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := s.Recv(ctx)
	if err != nil || ev.Kind != slngclient.STTFinal || !ev.Transcript.FromFinalize || ev.Transcript.Text != "" {
		t.Fatalf("finalize answered %+v, %v", ev, err)
	}
	if err := s.Keepalive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
	if !errors.Is(s.Err(), io.EOF) {
		t.Fatalf("Err() = %v", s.Err())
	}
}

// TestErrorCodes drives every SLNG error code through both session kinds,
// fatal (frame then close) and non-fatal (frame only).
func TestErrorCodes(t *testing.T) {
	t.Parallel()
	codes := map[string]bool{ // code -> retryable
		"auth_error": false, "config_error": false, "rate_limit": true, "provider_error": true,
		"backend_connection_failed": true, "pronunciation_not_found": false, "invalid_request": false,
		"payload_too_large": false, "rate_limit_exceeded": true, "idle_timeout_exceeded": true,
		"max_connection_duration_exceeded": true, "not_ready": true, "backpressure": true,
		"stt_metering_unavailable": true, "translation_error": true, "backend_error": true,
	}
	for code, retryable := range codes {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults(
				"deepgram/aura:2=error:"+code+"@ready,fatal,close=1011",
				"deepgram/nova:3=error:"+code+"@ready",
			)}, slngclient.Options{})
			ctx := testCtx(t)
			// Fatal on TTS: a warning event, then the terminal error with
			// the same code and the close code.
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			ev, err := s.Recv(ctx)
			if err != nil || ev.Kind != slngclient.TTSWarning || ev.Err.Code != code {
				t.Fatalf("first event %+v, %v", ev, err)
			}
			_, err = s.Recv(ctx)
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != slngclient.KindErrorFrame || ue.Code != code || ue.CloseCode != 1011 || ue.Retryable != retryable || ue.Message == "" {
				t.Fatalf("terminal error %#v", err)
			}
			// Non-fatal on STT: a warning, and the session goes on.
			stt, err := c.DialSTT(ctx, nova, slngclient.STTConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer stt.CloseNow()
			sev, err := stt.Recv(ctx)
			if err != nil || sev.Kind != slngclient.STTWarning || sev.Err.Code != code {
				t.Fatalf("stt warning %+v, %v", sev, err)
			}
			if err := stt.SendAudio(ctx, slngsim.Synthesize("ok", "linear16", 16000)); err != nil {
				t.Fatal(err)
			}
			sev, err = stt.Recv(ctx)
			if err != nil || sev.Transcript.Text != "ok" {
				t.Fatalf("after a non-fatal error: %+v, %v", sev, err)
			}
		})
	}
}

func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	for status, retryable := range map[int]bool{400: false, 401: false, 403: false, 404: false, 429: true, 500: true, 503: true} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults("*=handshake:" + strconv.Itoa(status))}, slngclient.Options{TokenInQuery: true})
			_, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != slngclient.KindHandshake || ue.HTTPStatus != status || ue.Retryable != retryable {
				t.Fatalf("err = %#v", err)
			}
			if strings.Contains(err.Error(), key) {
				t.Fatal("the key leaked into the error")
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		t.Parallel()
		_, c := setup(t, slngsim.Options{}, slngclient.Options{APIKey: "sk_wrong_SENTINEL"})
		_, err := c.DialSTT(testCtx(t), nova, slngclient.STTConfig{})
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != 401 || strings.Contains(err.Error(), "SENTINEL") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("per-key limit", func(t *testing.T) {
		t.Parallel()
		_, c := setup(t, slngsim.Options{MaxConcurrentPerKey: 1}, slngclient.Options{})
		s, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		_, err = c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.HTTPStatus != 429 || !ue.Retryable {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("config error before ready", func(t *testing.T) {
		t.Parallel()
		_, c := setup(t, slngsim.Options{}, slngclient.Options{})
		_, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{Encoding: "flac"})
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindErrorFrame || ue.Code != "config_error" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("dial failure", func(t *testing.T) {
		t.Parallel()
		c, err := slngclient.New(slngclient.Options{BaseURL: "ws://127.0.0.1:1", APIKey: key, TokenInQuery: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
		ue, ok := slngclient.AsUpstreamError(err)
		if !ok || ue.Kind != slngclient.KindTransport || !ue.Retryable || strings.Contains(err.Error(), key) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestCloseCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		fault     string
		kind      slngclient.ErrorKind // 0: io.EOF
		closeCode int
		retryable bool
		reaped    bool
	}{
		{"close:1000@chunks:2", 0, 1000, false, false},
		{"close:1008@chunks:2", slngclient.KindClose, 1008, true, true},
		// In the middle of the audio, 1011 is a provider crashing the
		// stream, not a reap (see TestReaps).
		{"close:1011@chunks:2", slngclient.KindClose, 1011, true, false},
		{"close:1012@chunks:2", slngclient.KindClose, 1012, true, true},
		{"drop@chunks:2", slngclient.KindTransport, 1006, true, false},
		{"oversized@chunks:2", slngclient.KindProtocol, 1009, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.fault, func(t *testing.T) {
			t.Parallel()
			_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults("*=" + tc.fault)}, slngclient.Options{ReadLimit: 1 << 20})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			if err := s.Text(ctx, strings.Repeat("abc ", 50), true); err != nil {
				t.Fatal(err)
			}
			for {
				_, err = s.Recv(ctx)
				if err != nil {
					break
				}
			}
			if tc.kind == 0 {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("err = %v, want EOF", err)
				}
				return
			}
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != tc.kind || ue.Retryable != tc.retryable || ue.Reaped() != tc.reaped || (tc.closeCode != 1009 && ue.CloseCode != tc.closeCode) {
				t.Fatalf("err = %#v, reaped %v", err, ue.Reaped())
			}
		})
	}
}

func TestIgnoresUnknownAndMalformed(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"*=unknown@ready", "*=malformed@ready"} {
		_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults(fault)}, slngclient.Options{})
		ctx := testCtx(t)
		s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
		if err != nil {
			t.Fatalf("%s: %v", fault, err)
		}
		if err := s.Text(ctx, "fine", true); err != nil {
			t.Fatal(err)
		}
		_, audio := recvTurn(t, ctx, s)
		if got, _ := slngsim.Decode(audio, "linear16", 24000); got != "fine" {
			t.Fatalf("%s: decoded %q", fault, got)
		}
		st := s.Stats()
		if st.UnknownTypes+st.Malformed == 0 {
			t.Fatalf("%s: nothing counted: %+v", fault, st)
		}
		s.CloseNow()
	}
}

// TestKeepaliveHoldsIdleSession checks that application keepalives, not
// pings, keep SLNG's idle timer from closing a quiet session.
func TestKeepaliveHoldsIdleSession(t *testing.T) {
	t.Parallel()
	simOpts := slngsim.Options{IdleTimeout: 400 * time.Millisecond}
	t.Run("pings only", func(t *testing.T) {
		t.Parallel()
		sim, c := setup(t, simOpts, slngclient.Options{TTSKeepalive: -1, PingInterval: 50 * time.Millisecond})
		s, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		ev, err := s.Recv(testCtx(t))
		if err != nil || ev.Kind != slngclient.TTSWarning || ev.Err.Code != "idle_timeout_exceeded" {
			t.Fatalf("event %+v, %v", ev, err)
		}
		_, err = s.Recv(testCtx(t))
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Code != "idle_timeout_exceeded" || ue.CloseCode != 1008 {
			t.Fatalf("err = %v", err)
		}
		if sim.Sessions()[0].Pings == 0 {
			t.Fatal("no pings were sent")
		}
	})
	t.Run("keepalive", func(t *testing.T) {
		t.Parallel()
		sim, c := setup(t, simOpts, slngclient.Options{STTKeepalive: 100 * time.Millisecond})
		s, err := c.DialSTT(testCtx(t), nova, slngclient.STTConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		ctx, cancel := context.WithTimeout(testCtx(t), 1200*time.Millisecond)
		defer cancel()
		if _, err := s.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the idle session ended: %v", err)
		}
		if s.Stats().KeepalivesSent < 5 || sim.Sessions()[0].KeepalivesHeard < 5 {
			t.Fatalf("keepalives sent %d", s.Stats().KeepalivesSent)
		}
	})
}

func TestMaxConnectionDuration(t *testing.T) {
	t.Parallel()
	_, c := setup(t, slngsim.Options{MaxConnectionDuration: 200 * time.Millisecond}, slngclient.Options{})
	s, err := c.DialSTT(testCtx(t), nova, slngclient.STTConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	// The error frame comes first, then the close: Recv reports the error
	// frame's code with the close code attached.
	var rerr error
	for rerr == nil {
		_, rerr = s.Recv(testCtx(t))
	}
	<-s.Done()
	if ue, ok := slngclient.AsUpstreamError(rerr); !ok || ue.Code != "max_connection_duration_exceeded" || ue.CloseCode != 1008 {
		t.Fatalf("err = %v", rerr)
	}
	if s.Err() == nil {
		t.Fatal("Err is nil after Done")
	}
}

func TestReadyTimeout(t *testing.T) {
	t.Parallel()
	_, c := setup(t, slngsim.Options{ReadyLatency: 3 * time.Second}, slngclient.Options{ReadyTimeout: 100 * time.Millisecond})
	_, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
	if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTimeout || !ue.Retryable {
		t.Fatalf("err = %v", err)
	}
}

// TestHandshakeTimeout: an upstream that accepts the connection and never
// answers fails the dial within HandshakeTimeout with KindTimeout, which
// says SLNG is unwell, however far away the caller's deadline is; the
// caller's own cancellation stays the caller's.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	url, accepted := slngtest.BlackHole(t)
	c, err := slngclient.New(slngclient.Options{BaseURL: url, APIKey: "k", HandshakeTimeout: 200 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	took := time.Since(start)
	if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTimeout || !ue.Unwell() || !ue.Retryable {
		t.Fatalf("err = %v, want an unwell, retryable KindTimeout", err)
	}
	if took > 10*time.Second || accepted() != 1 {
		t.Fatalf("the dial took %v over %d connections, want about 200ms over 1", took, accepted())
	}
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if _, err := c.DialTTS(short, aura, slngclient.TTSConfig{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a caller's deadline before the handshake timeout: err = %v, want the caller's DeadlineExceeded", err)
	}
}

// TestDeadPeer: a server that stops reading never answers pings; the
// session must end with KindTimeout instead of hanging.
func TestDeadPeer(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context()) // init
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"ready","session_id":"sess_dead"}`))
		<-stop // then never read again: pings go unanswered
	}))
	defer srv.Close()
	defer close(stop)
	c, err := slngclient.New(slngclient.Options{BaseURL: "ws" + strings.TrimPrefix(srv.URL, "http"), PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	_, err = s.Recv(testCtx(t))
	if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTimeout {
		t.Fatalf("err = %v", err)
	}
}

// TestFramesProveLifeWithoutPongs: a server that never answers pings but
// keeps sending frames is alive (its pong may wait behind them, as after
// a backlog); once it sends nothing, the next unanswered ping ends the
// session with KindTimeout.
func TestFramesProveLifeWithoutPongs(t *testing.T) {
	t.Parallel()
	quiet, stop := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			OnPingReceived: func(context.Context, []byte) bool { return false }, // no pong, ever
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context()) // init
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"ready","session_id":"sess_busy"}`))
		go func() { _, _, _ = c.Read(r.Context()) }() // reads pings until the end
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quiet:
				<-stop
				return
			case <-tick.C:
				if c.Write(r.Context(), websocket.MessageBinary, []byte{1, 2}) != nil {
					return
				}
			}
		}
	}))
	defer srv.Close()
	defer close(stop)
	c, err := slngclient.New(slngclient.Options{BaseURL: "ws" + strings.TrimPrefix(srv.URL, "http"), PingInterval: 20 * time.Millisecond, PingTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	ctx := testCtx(t)
	// Many pings go unanswered while the frames come: the session lives.
	for s.Stats().PingsSent < 5 {
		if ev, err := s.Recv(ctx); err != nil || ev.Kind != slngclient.TTSAudio {
			t.Fatalf("Recv = %v, %v with frames still coming, after %d pings", ev, err, s.Stats().PingsSent)
		}
	}
	close(quiet)
	for {
		_, err := s.Recv(ctx)
		if err == nil {
			continue
		}
		if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTimeout {
			t.Fatalf("err = %v once the frames stopped, want KindTimeout", err)
		}
		return
	}
}

func TestRoutesAndHeaders(t *testing.T) {
	t.Parallel()
	sim, c := setup(t, slngsim.Options{}, slngclient.Options{Routes: slngclient.RoutesDirect, RegionOverride: "eu-north-1", WorldPartOverride: "eu", ProviderKey: "pk_SENTINEL"})
	s, err := c.DialTTS(testCtx(t), slngclient.Endpoint{Model: "slng/deepgram/aura:2-en"}, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s.CloseNow()
	info := sim.Sessions()[0]
	if info.Route != "direct" || info.Model != "slng/deepgram/aura:2-en" || info.Region != "eu-north-1" ||
		info.WorldPart != "eu" || !info.ProviderKey || info.TokenInQuery {
		t.Fatalf("session %+v", info)
	}
}

func TestValidateModel(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"deepgram/aura:2", "slng/deepgram/nova:3-en", "slng/openai/whisper:large-v3", "cartesia/sonic:3.5", "a/b"} {
		if err := slngclient.ValidateModel(m); err != nil {
			t.Errorf("%q rejected", m)
		}
	}
	for _, m := range []string{"", "aura", "deepgram/aura:2?token=x", "deepgram/../../v1", "deepgram/aura#x", "deepgram/aura%2f", "deepgram/ aura",
		"deepgram/aura:2:3", "/deepgram/aura", "deepgram/aura/", "deepgram/..", "deepgram/.", "déepgram/aura", "deepgram/aura\n",
		strings.Repeat("a", 65) + "/" + strings.Repeat("b", 64)} {
		if err := slngclient.ValidateModel(m); !errors.Is(err, slngclient.ErrInvalidModel) {
			t.Errorf("%q accepted", m)
		}
	}
}

func TestNewRejectsInsecureRemote(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ws://api.slng.ai", "http://127.0.0.1", "wss://host?x=1", "wss://user:pw@host", "::"} {
		if _, err := slngclient.New(slngclient.Options{BaseURL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	if _, err := slngclient.New(slngclient.Options{BaseURL: "ws://api.slng.ai", AllowInsecure: true}); err != nil {
		t.Error(err)
	}
}

// TestConnectionLossIsNotEOF: a dropped connection ends Recv with a
// transport error that errors.Is does not mistake for io.EOF, which means
// a normal close.
func TestConnectionLossIsNotEOF(t *testing.T) {
	t.Parallel()
	_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults("*=drop@ready")}, slngclient.Options{})
	s, err := c.DialSTT(testCtx(t), nova, slngclient.STTConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	_, err = s.Recv(testCtx(t))
	if ue, ok := slngclient.AsUpstreamError(err); !ok || ue.Kind != slngclient.KindTransport || errors.Is(err, io.EOF) {
		t.Fatalf("err = %v (errors.Is io.EOF: %v)", err, errors.Is(err, io.EOF))
	}
}

// TestSkippedFramesKeepAudioIntact: the audio Recv returned stays intact
// until the next Recv, even when the reader skips a malformed or unknown
// frame and reads on meanwhile.
func TestSkippedFramesKeepAudioIntact(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"malformed@chunks:2", "unknown@chunks:2"} {
		_, c := setup(t, slngsim.Options{Faults: slngsim.MustFaults("*=" + fault)}, slngclient.Options{})
		ctx := testCtx(t)
		s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{SampleRate: 16000})
		if err != nil {
			t.Fatal(err)
		}
		const text = "Every byte of this turn survives a skipped frame."
		if err := s.Text(ctx, text, true); err != nil {
			t.Fatal(err)
		}
		var audio []byte
		for {
			ev, err := s.Recv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind == slngclient.TTSTurnEnd {
				break
			}
			if ev.Kind != slngclient.TTSAudio {
				continue
			}
			held := append([]byte(nil), ev.Audio...)
			time.Sleep(2 * time.Millisecond) // the reader reads ahead meanwhile
			if !bytes.Equal(held, ev.Audio) {
				t.Fatalf("%s: the audio changed under the caller before the next Recv", fault)
			}
			audio = append(audio, ev.Audio...)
		}
		s.CloseNow()
		if got, err := slngsim.Decode(audio, "linear16", 16000); err != nil || got != text {
			t.Fatalf("%s: decoded %q, %v", fault, got, err)
		}
	}
}

// BenchmarkTTSRecv measures receiving binary audio frames from the
// simulator through a session: the reader goroutine, the handoff and
// Recv, per 20 ms chunk of 24 kHz LINEAR16 (960 bytes).
func BenchmarkTTSRecv(b *testing.B) {
	sim := slngtest.NewServer(b, slngsim.Options{})
	c, err := slngclient.New(slngclient.Options{BaseURL: sim.URL()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.CloseNow()
	text := strings.Repeat("Benchmark audio. ", 400) // about 1,700 chunks a turn
	if err := s.Text(ctx, text, true); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		for {
			ev, err := s.Recv(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if ev.Kind == slngclient.TTSAudio {
				break
			}
			if ev.Kind == slngclient.TTSTurnEnd {
				if err := s.Text(ctx, text, true); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// TestReapAfterMidTurnError: an error frame on a socket SLNG keeps open (a
// turn SLNG will not finish) does not explain a close that comes later: an
// idle reap then is a reap, not that error again.
func TestReapAfterMidTurnError(t *testing.T) {
	t.Parallel()
	p, err := slngsim.ProfileByName("mid-turn-error")
	if err != nil {
		t.Fatal(err)
	}
	sim, c := setup(t, slngsim.Options{Profile: &p}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, slngclient.Endpoint{Model: "deepgram/aura:2"}, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	if err := s.Text(ctx, "This <error> fails.", true); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == slngclient.TTSWarning {
			break
		}
	}
	// Well after the error frame, SLNG reaps the session silently.
	timer := time.NewTimer(1500 * time.Millisecond)
	<-timer.C
	sim.Reap(func(slngsim.SessionInfo) bool { return true }, 1008, false)
	_, err = s.Recv(ctx)
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok || !ue.Reaped() || !ue.Retryable || ue.Unwell() {
		t.Fatalf("Recv after the reap = %v; want a reap (retryable, not unwell)", err)
	}
}
