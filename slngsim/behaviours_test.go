package slngsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// send writes client messages, as JSON, in order.
func send(t *testing.T, c *websocket.Conn, msgs ...string) {
	t.Helper()
	ctx := t.Context()
	for _, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

// ttsSession opens a ready TTS session on profile p.
func ttsSession(t *testing.T, p Profile, init string) *websocket.Conn {
	t.Helper()
	s := startSim(t, Options{Profile: &p})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", init)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", m, err)
	}
	return c
}

// TestSpeakOnText: each text is spoken at once and its audio ended with
// audio_end; the flush gets an audio_end of its own and no audio.
func TestSpeakOnText(t *testing.T) {
	t.Parallel()
	p, _ := ProfileByName("speak-on-text")
	c := ttsSession(t, p, `{"type":"init","config":{}}`)
	send(t, c, `{"type":"text","text":"One, "}`)
	frames, _ := readFrames(t.Context(), t, c, func(f wsFrame) bool { return f.msg["type"] == "audio_end" })
	if got := summary(frames, -1); got != "audio audio_end" {
		t.Fatalf("after the first text: %q, want its audio then audio_end", got)
	}
	first := audioIn(t, frames)
	send(t, c, `{"type":"text","text":"two."}`, `{"type":"flush"}`, `{"type":"sim_sentinel"}`)
	frames, _ = readFrames(t.Context(), t, c, isSentinel)
	if got := summary(frames, -1); got != "audio audio_end audio_end sentinel" {
		t.Fatalf("after the second text and the flush: %q", got)
	}
	audio := append(first, audioIn(t, frames)...)
	want := append(Synthesize("One, ", "linear16", 24000), Synthesize("two.", "linear16", 24000)...)
	if !bytes.Equal(audio, want) {
		t.Errorf("audio: %d bytes, want %d: each text spoken as it came", len(audio), len(want))
	}
}

// TestClearAnswers: `clear` answered by `cleared`, by the end of a turn,
// or by nothing, as the profile says; the turn's audio stops either way.
func TestClearAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		answer ClearAnswer
		want   string
	}{
		{ClearCleared, "cleared sentinel"},
		{ClearEnd, "audio_end sentinel"},
		{ClearNothing, "sentinel"},
	} {
		t.Run(tc.answer.String(), func(t *testing.T) {
			t.Parallel()
			p := ProfileRich()
			p.TurnEnd, p.Segments, p.ClearAnswer = TurnEndAudioEnd, false, tc.answer
			s := startSim(t, Options{Profile: &p, Realtime: true})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v; want ready", m, err)
			}
			send(t, c, `{"type":"text","text":"`+strings.Repeat("A long turn. ", 20)+`","flush":true}`)
			readFrames(ctx, t, c, func(f wsFrame) bool { return f.binary })
			send(t, c, `{"type":"clear"}`, `{"type":"sim_sentinel"}`)
			frames, _ := readFrames(ctx, t, c, isSentinel)
			var after []wsFrame
			for _, f := range frames {
				if !f.binary {
					after = append(after, f)
				}
			}
			if got := summary(after, -1); got != tc.want {
				t.Errorf("after the clear: %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMidTurnDrop: a turn whose text holds the marker loses the connection
// after its first chunks, with no close frame.
func TestMidTurnDrop(t *testing.T) {
	t.Parallel()
	p := ProfileRich()
	p.MidTurnDrop = MidTurnDrop{Marker: "<drop>", AfterChunks: 2}
	c := ttsSession(t, p, `{"type":"init","config":{}}`)
	send(t, c, `{"type":"text","text":"This <drop> turn is long enough.","flush":true}`)
	var audio int
	for {
		typ, b, err := c.Read(t.Context())
		if err != nil {
			if code := websocket.CloseStatus(err); code != -1 {
				t.Fatalf("closed with %d, want the connection lost", code)
			}
			break
		}
		if typ == websocket.MessageBinary {
			audio++
		} else if !strings.Contains(string(b), "segment_start") {
			t.Fatalf("frame %s before the drop", b)
		}
	}
	if audio != 2 {
		t.Errorf("%d audio chunks before the drop, want 2", audio)
	}
}

// TestVoiceRefused: a session whose init names the refused voice gets an
// error frame and close 1011 instead of ready; another voice works.
func TestVoiceRefused(t *testing.T) {
	t.Parallel()
	p, _ := ProfileByName("voice-refused")
	s := startSim(t, Options{Profile: &p})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","voice":"refused-voice","config":{}}`)
	frames, code := readFrames(ctx, t, c, nil)
	if got := summary(frames, code); got != "error:provider_error close:1011" {
		t.Errorf("answer to init: %q, want the provider's refusal", got)
	}
	_, frames, code = ttsTurn(t, startSim(t, Options{Profile: &p}), "deepgram/aura:2", `{"type":"init","voice":"fine","config":{}}`, "Works.")
	if got := summary(frames, code); got != richTTS {
		t.Errorf("another voice: %q", got)
	}
}

// TestNotDeployed: a model the profile marks not deployed in the region is
// refused at the handshake with 404, naming the model and the region.
func TestNotDeployed(t *testing.T) {
	t.Parallel()
	p, _ := ProfileByName("not-deployed")
	s := startSim(t, Options{Profile: &p, Region: "eu-north"})
	code, body, _ := dialBody(t, s, "deepgram/aura:2", false)
	if code != http.StatusNotFound || body != "Model deepgram/aura:2 is not deployed in eu-north" {
		t.Errorf("handshake = %d %q", code, body)
	}
}

// TestSTTEncodings: the STT bridge takes linear16, mp3 and opus only:
// telephony audio is refused at init, as SLNG's bridge refuses it.
func TestSTTEncodings(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	for enc, ok := range map[string]bool{"linear16": true, "mp3": true, "opus": true, "mulaw": false, "alaw": false} {
		ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3",
			`{"type":"init","config":{"encoding":"`+enc+`","sample_rate":8000}}`)
		frames, code := readFrames(ctx, t, c, func(f wsFrame) bool { return f.msg["type"] == "ready" })
		got := summary(frames, code)
		if ok && got != "ready" || !ok && got != "error:config_error close:1008" {
			t.Errorf("STT init with %s: %q", enc, got)
		}
	}
}

// TestSTTProfileRules: partials despite enable_partials false
// (PartialsAlways), and utterance_end by the profile's rule, never by
// enable_vad alone.
func TestSTTProfileRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile, config, want string
	}{
		{"rich", `"enable_partials":false,"enable_vad":true`, "final utterance_end close:1000"},
		{"partials-always", `"enable_partials":false`, "partial final close:1000"},
		{"utterance-end-never", `"enable_vad":true`, "partial final close:1000"},
		{"utterance-end-always", `"enable_partials":false`, "final utterance_end close:1000"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName(tc.profile)
			s := startSim(t, Options{Profile: &p})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3", `{"type":"init","config":{`+tc.config+`}}`)
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v; want ready", m, err)
			}
			audio := Synthesize("Hello there.", "linear16", 16000)
			for off := 0; off < len(audio); off += 640 { // 20 ms
				if err := c.Write(ctx, websocket.MessageBinary, audio[off:min(off+640, len(audio))]); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := json.Marshal(map[string]string{"type": "close"})
			send(t, c, string(b))
			frames, code := readFrames(ctx, t, c, nil)
			if got := summary(frames, code); got != tc.want {
				t.Errorf("frames %q, want %q", got, tc.want)
			}
		})
	}
}

// TestFinalizeLate: a finalize's final comes no sooner than the profile's
// FinalizeDelay after the finalize was sent, and the audio sent after the
// finalize is transcribed after it, in order.
func TestFinalizeLate(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"finalize-late", "rich"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName(name)
			s := startSim(t, Options{Profile: &p})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/slng/deepgram/nova:3-en", `{"type":"init","config":{"enable_partials":false}}`)
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v; want ready", m, err)
			}
			first := Synthesize("Before it.", "linear16", 16000)
			if err := c.Write(ctx, websocket.MessageBinary, first[:len(first)-2*symbolSamples]); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			// The next utterance follows the finalize at once.
			send(t, c, `{"type":"finalize"}`)
			if err := c.Write(ctx, websocket.MessageBinary, Synthesize("After it.", "linear16", 16000)); err != nil {
				t.Fatal(err)
			}
			frames, _ := readFrames(ctx, t, c, func(f wsFrame) bool { return f.msg["type"] == "final_transcript" })
			waited := time.Since(sent)
			if got := frames[len(frames)-1].msg["transcript"]; got != "Before it." {
				t.Errorf("first final %q, want the finalized %q", got, "Before it.")
			}
			if waited < p.FinalizeDelay.Min {
				t.Errorf("final %v after the finalize, want at least %v", waited, p.FinalizeDelay.Min)
			}
			if p.FinalizeDelay.Min == 0 && waited > time.Second {
				t.Errorf("final %v after the finalize on a profile that answers at once", waited)
			}
			frames, _ = readFrames(ctx, t, c, func(f wsFrame) bool { return f.msg["type"] == "final_transcript" })
			if got := frames[len(frames)-1].msg["transcript"]; got != "After it." {
				t.Errorf("second final %q, want %q", got, "After it.")
			}
		})
	}
	if p, _ := ProfileByName("finalize-late"); p.FinalizeDelay != Fixed(605*time.Millisecond) {
		t.Errorf("finalize-late waits %v, want SLNG's measured 605 ms", p.FinalizeDelay)
	}
}

// TestClearLate: `clear` is answered no sooner than ClearDelay after it was
// sent, the turn's audio stopping at once; with AudioAfterCleared, that many
// more chunks of the cleared turn follow the answer, the turn's next audio.
func TestClearLate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile  string
		minWait  time.Duration
		after    int
		answer   string
		maxAfter time.Duration // 0: no bound
	}{
		{"clear-late", 300 * time.Millisecond, 0, "cleared", 0},
		{"audio-after-cleared", 0, 3, "cleared", time.Second},
		{"clear-late-audio-after", 300 * time.Millisecond, 3, "cleared", 0},
		{"rich", 0, 0, "cleared", time.Second},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName(tc.profile)
			p.TurnEnd, p.Segments = TurnEndAudioEnd, false
			s := startSim(t, Options{Profile: &p, Realtime: true})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v; want ready", m, err)
			}
			text := strings.Repeat("A long turn. ", 20)
			send(t, c, `{"type":"text","text":"`+text+`","flush":true}`)
			before, _ := readFrames(ctx, t, c, func(f wsFrame) bool { return f.binary })
			sent := time.Now()
			send(t, c, `{"type":"clear"}`, `{"type":"sim_sentinel"}`)
			frames, _ := readFrames(ctx, t, c, isSentinel)
			var answeredAt int
			for i, f := range frames {
				if f.msg["type"] == tc.answer {
					answeredAt = i
				}
			}
			waited := time.Since(sent)
			if waited < tc.minWait {
				t.Errorf("answer and sentinel %v after the clear, want at least %v", waited, tc.minWait)
			}
			if tc.maxAfter > 0 && waited > tc.maxAfter {
				t.Errorf("answer and sentinel %v after the clear, want at most %v", waited, tc.maxAfter)
			}
			after := 0
			for _, f := range frames[answeredAt+1:] {
				if f.binary {
					after++
				}
			}
			if after != tc.after {
				t.Errorf("%d audio chunks after %s (%s), want %d", after, tc.answer, summary(frames, -1), tc.after)
			}
			// All the audio, the chunks after the answer included, is the
			// turn's, in order.
			audio := audioIn(t, append(before, frames...))
			if want := Synthesize(text, "linear16", 24000); !bytes.Equal(audio, want[:min(len(audio), len(want))]) {
				t.Errorf("the %d bytes of audio are not the turn's first", len(audio))
			}
			if got := s.Sessions()[0].ClearedAudioSent; got != tc.after {
				t.Errorf("ClearedAudioSent = %d, want %d", got, tc.after)
			}
		})
	}
}
