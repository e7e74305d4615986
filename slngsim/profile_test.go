package slngsim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsFrame is one message a raw client read.
type wsFrame struct {
	binary bool
	raw    []byte
	msg    map[string]any // nil for binary frames
}

// readFrames reads until stop accepts a frame or the socket closes; it
// returns the frames (the accepted one included) and the close code, -1 if
// the socket did not close.
func readFrames(ctx context.Context, t *testing.T, c *websocket.Conn, stop func(wsFrame) bool) ([]wsFrame, websocket.StatusCode) {
	t.Helper()
	var out []wsFrame
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 {
				t.Fatalf("read: %v (after %s)", err, summary(out, -1))
			}
			return out, code
		}
		f := wsFrame{binary: typ == websocket.MessageBinary, raw: b}
		if !f.binary {
			if err := json.Unmarshal(b, &f.msg); err != nil {
				t.Fatalf("bad JSON %q", b)
			}
		}
		out = append(out, f)
		if stop != nil && stop(f) {
			return out, -1
		}
	}
}

// audioOf returns the audio a frame carries in any shape the simulator
// sends (those LiveKit's plugin reads).
func audioOf(t *testing.T, f wsFrame) ([]byte, bool) {
	t.Helper()
	if f.binary {
		return f.raw, true
	}
	var b64 string
	typ, hasType := f.msg["type"].(string)
	switch {
	case !hasType:
		b64, _ = f.msg["audio"].(string) // ElevenLabs pass-through
	case slices.Contains([]string{"audio_chunk", "audio", "Audio", "chunk", "audio_end", "flushed", "event"}, typ):
		// Audio, or the last audio an end of a turn carries.
		switch d := f.msg["data"].(type) {
		case string:
			b64 = d
		case map[string]any:
			b64, _ = d["audio"].(string)
		default:
			b64, _ = f.msg["audio"].(string)
		}
	}
	if b64 == "" {
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("audio frame %s: %v", f.raw, err)
	}
	return b, true
}

// errorOf reads an error frame in any of the shapes the simulator sends;
// a numeric code is given as its digits.
func errorOf(f wsFrame) (code, message string, ok bool) {
	if f.msg == nil {
		return "", "", false
	}
	typ, hasType := f.msg["type"].(string)
	d, _ := f.msg["data"].(map[string]any)
	switch {
	case strings.EqualFold(typ, "error"):
	case typ == "event" && d["event"] == "failed":
	case !hasType && f.msg["error"] != nil:
	default:
		return "", "", false
	}
	src := f.msg
	if d != nil {
		src = d
	} else if e, isMap := f.msg["error"].(map[string]any); isMap {
		src = e
	}
	switch c := firstOf(src, "code", "status_code").(type) {
	case string:
		code = c
	case float64:
		code = fmt.Sprint(c)
	}
	message, _ = src["message"].(string)
	return code, message, true
}

func firstOf(m map[string]any, keys ...string) any {
	for _, k := range keys {
		if v, ok := m[k]; ok {
			return v
		}
	}
	return nil
}

// isSentinel recognizes the answer to the unknown message the TTS tests
// send after a turn: the speaker handles it after everything before it, so
// it proves that the turn sent nothing more.
func isSentinel(f wsFrame) bool {
	code, msg, ok := errorOf(f)
	// A shape with no code (error-object-message) answers with the message
	// only, a numeric one with 400.
	return ok && (code == "invalid_request" || code == "" || code == "400") && msg == "unknown message type"
}

// summary names the frames in order, one word each, runs of audio and of
// partials collapsed: e.g. "segment_start audio segment_end flushed".
func summary(frames []wsFrame, code websocket.StatusCode) string {
	var words []string
	for _, f := range frames {
		w := ""
		switch {
		case f.binary:
			w = "audio"
		case isSentinel(f):
			w = "sentinel"
		default:
			if c, _, ok := errorOf(f); ok {
				w = "error:" + c
			} else if f.msg["isFinal"] == true && f.msg["audio"] == nil {
				w = "isFinal" // ElevenLabs' last message: no audio
			} else if f.msg["isFinal"] == true {
				w = "isFinal+audio"
			} else if d, _ := f.msg["data"].(map[string]any); f.msg["type"] == "event" {
				w = "event:" + fmt.Sprint(firstOf(d, "event", "event_type"))
			} else if typ, ok := f.msg["type"].(string); !ok || slices.Contains([]string{"audio_chunk", "audio", "Audio", "chunk"}, typ) {
				w = "audio"
			} else if typ == "partial_transcript" {
				w = "partial"
			} else if typ == "final_transcript" {
				w = "final"
			} else {
				w = typ
			}
		}
		if (w == "audio" || w == "partial") && len(words) > 0 && words[len(words)-1] == w {
			continue
		}
		words = append(words, w)
	}
	if code != -1 {
		words = append(words, fmt.Sprintf("close:%d", int(code)))
	}
	return strings.Join(words, " ")
}

// ttsTurn opens a TTS session on model, speaks one turn of text and
// returns ready and everything that followed, up to the sentinel or the
// socket's close.
func ttsTurn(t *testing.T, s *Server, model, init, text string) (ready map[string]any, frames []wsFrame, code websocket.StatusCode) {
	t.Helper()
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/"+model, init)
	ready, err := readType(ctx, t, c)
	if err != nil || ready["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", ready, err)
	}
	for _, m := range []any{map[string]any{"type": "text", "text": text}, map[string]any{"type": "flush"}, map[string]any{"type": "sim_sentinel"}} {
		b, _ := json.Marshal(m)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	frames, code = readFrames(ctx, t, c, isSentinel)
	return ready, frames, code
}

// audioIn concatenates the audio of frames.
func audioIn(t *testing.T, frames []wsFrame) []byte {
	t.Helper()
	var out []byte
	for _, f := range frames {
		if b, ok := audioOf(t, f); ok {
			out = append(out, b...)
		}
	}
	return out
}

// sttExchange opens an STT session on model and sends one whole utterance,
// then half of a second one, a finalize, another finalize with nothing
// pending, and close; it returns everything up to the close.
func sttExchange(t *testing.T, s *Server, model string) ([]wsFrame, websocket.StatusCode) {
	t.Helper()
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/"+model,
		`{"type":"init","config":{"sample_rate":16000,"encoding":"linear16","enable_partials":true,"enable_word_timestamps":true}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", m, err)
	}
	second := Synthesize("Second one", "linear16", 16000)
	audio := append(Synthesize("Hello there, world.", "linear16", 16000), second[:len(second)-2*symbolSamples]...)
	for off := 0; off < len(audio); off += 640 { // 20 ms
		if err := c.Write(ctx, websocket.MessageBinary, audio[off:min(off+640, len(audio))]); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{`{"type":"finalize"}`, `{"type":"finalize"}`, `{"type":"close"}`} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	return readFrames(ctx, t, c, nil)
}

func keysOf(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

const (
	richTTS         = "segment_start audio segment_end flushed audio_end sentinel"
	sttFrames       = "partial final partial final final close:1000"
	richFinal       = "confidence,duration,from_finalize,language,start,transcript,type,words"
	richPartial     = "confidence,duration,start,transcript,type"
	asyncFinal      = "confidence,duration,language,transcript,type"
	asyncFinalNoDu  = "confidence,language,transcript,type"
	asyncFinalWords = "confidence,language,transcript,type,words"
	asyncPartial    = "confidence,transcript,type"
)

// TestProfiles shows, for every named profile, the frames of one TTS turn
// and of one STT exchange with a finalize, and that the audio is exactly
// what Synthesize makes, whatever its framing.
func TestProfiles(t *testing.T) {
	t.Parallel()
	type want struct {
		tts            string
		final, partial string // key sets of finals with text, and of partials
	}
	rich := want{richTTS, richFinal, richPartial}
	wants := map[string]want{
		"rich":                        rich,
		"flushed-only":                {"segment_start audio segment_end flushed sentinel", richFinal, richPartial},
		"flushed-capital":             {"segment_start audio segment_end Flushed sentinel", richFinal, richPartial},
		"done-only":                   {"segment_start audio segment_end done sentinel", richFinal, richPartial},
		"end-only":                    {"segment_start audio segment_end end sentinel", richFinal, richPartial},
		"audio-end-only":              {"segment_start audio segment_end audio_end sentinel", richFinal, richPartial},
		"close-after-audio":           {"segment_start audio close:1000", richFinal, richPartial},
		"close-after-turn":            {"segment_start audio segment_end flushed audio_end close:1000", richFinal, richPartial},
		"no-segments":                 {"audio flushed audio_end sentinel", richFinal, richPartial},
		"json-audio-chunk":            rich,
		"json-audio":                  rich,
		"json-Audio":                  rich,
		"json-chunk":                  rich,
		"json-nested":                 rich,
		"json-audio-field":            rich,
		"json-elevenlabs":             rich,
		"json-elevenlabs-final":       {"segment_start audio isFinal segment_end flushed audio_end sentinel", richFinal, richPartial},
		"partial-text":                rich,
		"asyncapi-finals":             {richTTS, asyncFinal, asyncPartial},
		"asyncapi-finals-no-duration": {richTTS, asyncFinalNoDu, asyncPartial},
		"asyncapi-finals-words":       {richTTS, asyncFinalWords, asyncPartial},
		"handshake-json":              rich,
		"mid-turn-error":              rich,
		"reap-silent-1008":            rich,
		"reap-silent-1011":            rich,
		"reap-silent-1012":            rich,
		"reap-silent-1001":            rich,
		"reap-with-error":             rich,
		"text-timeout":                rich,
		"error-capital":               rich,
		"error-nested":                rich,
		"error-object":                rich,
		"error-object-message":        rich,
		"error-event":                 rich,
		"error-untyped":               rich,
		"error-numeric":               rich,
		"error-numeric-nested":        rich,
		"isfinal-only":                {"segment_start audio segment_end isFinal sentinel", richFinal, richPartial},
		"isfinal-with-audio":          {"audio isFinal+audio sentinel", richFinal, richPartial},
		"event-end":                   {"segment_start audio segment_end event:completed sentinel", richFinal, richPartial},
		"end-with-audio":              {"segment_start audio segment_end audio_end sentinel", richFinal, richPartial},
		"speak-on-text":               {"audio audio_end audio_end sentinel", richFinal, richPartial},
		"clear-answers-end":           rich,
		"clear-unanswered":            rich,
		"pcm24k-only":                 rich,
		"voice-refused":               rich,
		"partials-always":             rich,
		"utterance-end-never":         rich,
		"utterance-end-always":        {richTTS, richFinal, richPartial},
		"finalize-lost":               rich,
		"clear-late":                  rich,
		"audio-after-cleared":         rich,
		"clear-late-audio-after":      rich,
		"finalize-late":               rich,
		"realistic":                   {"audio flushed sentinel", asyncFinalNoDu, asyncPartial},
	}
	// The STT exchange, where a profile changes it.
	sttWant := map[string]string{
		"utterance-end-always": "partial final utterance_end partial final final close:1000",
		"finalize-lost":        "partial final partial final close:1000",
	}
	for _, name := range ProfileNames() {
		w, ok := wants[name]
		if name == "not-deployed" {
			continue // no session at all: TestNotDeployed
		}
		if !ok {
			t.Errorf("profile %q has no row in this test", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, err := ProfileByName(name)
			if err != nil {
				t.Fatal(err)
			}
			s := startSim(t, Options{Profile: &p})
			const text = "Every profile speaks the same bytes."
			ready, frames, code := ttsTurn(t, s, "openai/gpt-4o-mini-tts", `{"type":"init","config":{}}`, text)
			if got := summary(frames, code); got != w.tts {
				t.Errorf("TTS frames = %q, want %q", got, w.tts)
			}
			if got, want := audioIn(t, frames), Synthesize(text, "linear16", 24000); !bytes.Equal(got, want) {
				t.Errorf("TTS audio: %d bytes, want the %d bytes Synthesize makes", len(got), len(want))
			}
			if _, announced := ready["accepts_partial_text"]; announced != p.PartialText {
				t.Errorf("ready = %v, PartialText %v", ready, p.PartialText)
			}

			frames, code = sttExchange(t, s, "openai/whisper:large-v3")
			wantSTT := sttFrames
			if w, ok := sttWant[name]; ok {
				wantSTT = w
			}
			if got := summary(frames, code); got != wantSTT {
				t.Errorf("STT frames = %q, want %q", got, wantSTT)
			}
			var finals []map[string]any
			for _, f := range frames {
				switch f.msg["type"] {
				case "partial_transcript":
					if got := keysOf(f.msg); got != w.partial {
						t.Errorf("partial keys = %s, want %s", got, w.partial)
					}
				case "final_transcript":
					finals = append(finals, f.msg)
				}
			}
			texts := []string{"Hello there, world.", "Second one", ""}
			if p.LostFinalizes != 0 {
				texts = texts[:2] // the first finalize got nothing
			}
			if len(finals) != len(texts) {
				t.Errorf("%d finals, want %d", len(finals), len(texts))
			}
			for i, f := range finals {
				if f["transcript"] != texts[i] {
					t.Errorf("final %d = %q, want %q", i, f["transcript"], texts[i])
				}
				wantKeys := w.final
				if texts[i] == "" { // no words in an empty final
					wantKeys = strings.Replace(wantKeys, ",words", "", 1)
				}
				if got := keysOf(f); got != wantKeys {
					t.Errorf("final %d keys = %s, want %s", i, got, wantKeys)
				}
				if ff, has := f["from_finalize"]; has && ff != (i > 0) {
					t.Errorf("final %d from_finalize = %v", i, ff)
				}
			}
		})
	}
}

// TestRealisticByModel shows the realistic rule's TTS turn and STT finals
// for each provider it names, and for one it does not.
func TestRealisticByModel(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{ProfileFor: Realistic})
	for _, tc := range []struct {
		model, tts, final string
		elevenLabs        bool
	}{
		{"deepgram/aura:2", "audio flushed audio_end sentinel", asyncFinal, false},
		{"slng/deepgram/aura:2-en", "audio flushed audio_end sentinel", asyncFinal, false},
		{"soniox/tts-rt:v1", "audio audio_end sentinel", asyncFinalNoDu, false},
		{"rime/arcana:v2", "audio close:1000", asyncFinalNoDu, false},
		{"slng/rime/arcana", "audio close:1000", asyncFinalNoDu, false},
		{"cartesia/sonic:3", "audio close:1000", asyncFinalNoDu, false},
		{"elevenlabs/eleven_flash:v2_5", "audio isFinal sentinel", asyncFinalNoDu, true},
		{"sarvam/bulbul:v2", "audio flushed sentinel", asyncFinalNoDu, false},
		{"kugel/kugel:1", "audio flushed sentinel", asyncFinalNoDu, false},
	} {
		t.Run(tc.model, func(t *testing.T) {
			t.Parallel()
			const text = "Realistic routes, exact audio."
			_, frames, code := ttsTurn(t, s, tc.model, `{"type":"init","config":{}}`, text)
			if got := summary(frames, code); got != tc.tts {
				t.Errorf("TTS frames = %q, want %q", got, tc.tts)
			}
			if got, want := audioIn(t, frames), Synthesize(text, "linear16", 24000); !bytes.Equal(got, want) {
				t.Errorf("TTS audio: %d bytes, want %d", len(got), len(want))
			}
			if _, typed := frames[0].msg["type"]; tc.elevenLabs != (frames[0].msg != nil && !typed) {
				t.Errorf("first audio frame %s, ElevenLabs shape %v", frames[0].raw, tc.elevenLabs)
			}
			frames, code = sttExchange(t, s, tc.model)
			wantSTT := sttFrames
			if strings.HasPrefix(tc.model, "soniox/") {
				// Soniox declares final markers: utterance_end after the
				// utterance's final, whatever init says.
				wantSTT = "partial final utterance_end partial final final close:1000"
			}
			if got := summary(frames, code); got != wantSTT {
				t.Errorf("STT frames = %q, want %q", got, wantSTT)
			}
			for _, f := range frames {
				if f.msg["type"] == "final_transcript" && f.msg["transcript"] != "" {
					if got := keysOf(f.msg); got != tc.final {
						t.Errorf("final keys = %s, want %s", got, tc.final)
					}
				}
			}
		})
	}
	if p := Realistic("soniox/tts-rt:v1"); p.TextTimeout != 5*time.Second || p.TextTimeoutClose != 1008 {
		t.Errorf("soniox text timeout = %v/%d, want pipecat-slng's 5 s", p.TextTimeout, p.TextTimeoutClose)
	}
	for m, finalize := range map[string]time.Duration{"slng/deepgram/nova:3-en": 605 * time.Millisecond, "deepgram/nova:3": 280 * time.Millisecond, "x/y": 280 * time.Millisecond} {
		p := Realistic(m)
		if p.FinalizeDelay != Fixed(finalize) || p.ClearDelay != (Delay{300 * time.Millisecond, 500 * time.Millisecond}) || p.AudioAfterCleared != 3 {
			t.Errorf("Realistic(%q): finalize %v, clear %v, %d chunks after cleared; want SLNG's measured %v, 300-500 ms, 3",
				m, p.FinalizeDelay, p.ClearDelay, p.AudioAfterCleared, finalize)
		}
	}
	if p := Realistic("rime/arcana:v2"); p.MidTurnError.MaxChars != 500 {
		t.Errorf("rime MaxChars = %d, want 500", p.MidTurnError.MaxChars)
	}
	for _, m := range []string{"deepgram/aura:2", "x/y"} {
		if p := Realistic(m); p.Segments || p.ReapErrorFrame || p.ReapCode != 1008 || !p.RefuseBYOK {
			t.Errorf("Realistic(%q) = %+v: want no segments, silent 1008 reaps, BYOK refused", m, p)
		}
	}
}

// TestAudioShapesCarryTheSameBytes: every audio shape decodes to the
// audio Synthesize makes, whatever the encoding.
func TestAudioShapesCarryTheSameBytes(t *testing.T) {
	t.Parallel()
	for _, shape := range AudioShapes() {
		t.Run(shape.String(), func(t *testing.T) {
			t.Parallel()
			p := ProfileRich()
			p.AudioShape = shape
			s := startSim(t, Options{Profile: &p})
			const text = "Framing must not change a byte: ¿qué?"
			_, frames, _ := ttsTurn(t, s, "deepgram/aura:2", `{"type":"init","config":{"encoding":"mulaw","sample_rate":8000}}`, text)
			audio := audioIn(t, frames)
			if want := Synthesize(text, "mulaw", 8000); !bytes.Equal(audio, want) {
				t.Fatalf("audio: %d bytes, want %d", len(audio), len(want))
			}
			if got, err := Decode(audio, "mulaw", 8000); err != nil || got != text {
				t.Fatalf("Decode = %q, %v", got, err)
			}
			var first wsFrame
			for _, f := range frames {
				if _, ok := audioOf(t, f); ok {
					first = f
					break
				}
			}
			if (shape == AudioShapeBinary) != first.binary {
				t.Fatalf("first audio frame binary=%v for %s", first.binary, shape)
			}
			if !first.binary {
				b64 := base64.StdEncoding.EncodeToString(Synthesize(text, "mulaw", 8000)[:160])
				want := map[AudioShape]string{
					AudioShapeAudioChunk:   `{"type":"audio_chunk","data":"` + b64 + `","sequence":1}`,
					AudioShapeAudio:        `{"type":"audio","data":"` + b64 + `"}`,
					AudioShapeAudioCapital: `{"type":"Audio","data":"` + b64 + `"}`,
					AudioShapeChunk:        `{"type":"chunk","data":"` + b64 + `"}`,
					AudioShapeNested:       `{"type":"audio_chunk","data":{"audio":"` + b64 + `"}}`,
					AudioShapeAudioField:   `{"type":"audio","audio":"` + b64 + `"}`,
					// With when its first character, "F", is heard (24 ms a
					// character at 8 kHz).
					AudioShapeElevenLabs: `{"audio":"` + b64 + `","isFinal":false,` +
						`"normalizedAlignment":{"chars":["F"],"charStartTimesMs":[0],"charsDurationsMs":[24]},` +
						`"alignment":{"chars":["F"],"charStartTimesMs":[0],"charsDurationsMs":[24]}}`,
				}[shape]
				if string(first.raw) != want {
					t.Fatalf("first frame %s, want %s", first.raw, want)
				}
			}
		})
	}
}

// TestMidTurnError: the error frame arrives inside the turn, the turn never
// ends, the socket stays open, and every later turn gets the same error.
func TestMidTurnError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, init, text, code, message string
	}{
		{"marker", `{"type":"init","config":{}}`, "Fail <error> here", "provider_error", "Synthesis failed for this text"},
		{"no-letters", `{"type":"init","config":{}}`, "42 ... 17!", "provider_error", "Text must contain at least one letter"},
		{"too-long", `{"type":"init","config":{}}`, strings.Repeat("long text ", 51), "provider_error",
			"Text is too long. Maximum 500 characters per request."},
		{"pronunciation", `{"type":"init","config":{"pronunciation":"support-pronunciations"}}`, "Plain words", "pronunciation_not_found",
			"Pronunciation dictionary not found: support-pronunciations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName("mid-turn-error")
			s := startSim(t, Options{Profile: &p})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/sarvam/bulbul:v2", tc.init)
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v", m, err)
			}
			send := func(msgs ...string) {
				t.Helper()
				for _, m := range msgs {
					if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
						t.Fatal(err)
					}
				}
			}
			text, _ := json.Marshal(tc.text)
			send(`{"type":"text","text":`+string(text)+`}`, `{"type":"flush"}`, `{"type":"sim_sentinel"}`)
			frames, code := readFrames(ctx, t, c, isSentinel)
			if got, want := summary(frames, code), "segment_start audio error:"+tc.code+" sentinel"; got != want {
				t.Fatalf("first turn = %q, want %q", got, want)
			}
			if _, msg, _ := errorOf(frames[len(frames)-2]); msg != tc.message {
				t.Errorf("message = %q, want %q", msg, tc.message)
			}
			if got, want := audioIn(t, frames), Synthesize(tc.text, "linear16", 24000)[:2*960]; !bytes.Equal(got, want) {
				t.Errorf("audio before the error: %d bytes, want the turn's first 2 chunks", len(got))
			}
			// The same socket answers a good turn with the same error, at
			// once; clear still works.
			send(`{"type":"text","text":"A perfectly good sentence."}`, `{"type":"flush"}`, `{"type":"sim_sentinel"}`)
			frames, code = readFrames(ctx, t, c, isSentinel)
			if got, want := summary(frames, code), "error:"+tc.code+" sentinel"; got != want {
				t.Fatalf("second turn = %q, want %q", got, want)
			}
			send(`{"type":"clear"}`, `{"type":"sim_sentinel"}`)
			frames, code = readFrames(ctx, t, c, isSentinel)
			if got, want := summary(frames, code), "cleared sentinel"; got != want {
				t.Fatalf("clear after the failed turns = %q, want %q", got, want)
			}
			info := s.Sessions()[0]
			if !info.Open || info.TurnsFailed != 2 || info.TurnsCompleted != 0 {
				t.Fatalf("session open=%v failed=%d completed=%d, want open, 2, 0", info.Open, info.TurnsFailed, info.TurnsCompleted)
			}
		})
	}
	t.Run("good-text-passes", func(t *testing.T) {
		t.Parallel()
		p, _ := ProfileByName("mid-turn-error")
		p.MidTurnError.Code, p.MidTurnError.Message = "backend_error", "custom"
		s := startSim(t, Options{Profile: &p})
		_, frames, code := ttsTurn(t, s, "x/y", `{"type":"init","config":{}}`, "Letters, and fewer than 500 of them.")
		if got := summary(frames, code); got != richTTS {
			t.Fatalf("turn = %q, want %q", got, richTTS)
		}
		p.MidTurnError.AfterChunks = 0
		s = startSim(t, Options{Profile: &p})
		_, frames, code = ttsTurn(t, s, "x/y", `{"type":"init","config":{}}`, "<error>")
		if got := summary(frames, code); got != "segment_start error:backend_error sentinel" {
			t.Fatalf("turn = %q, want the custom code before any audio", got)
		}
		if _, msg, _ := errorOf(frames[1]); msg != "custom" {
			t.Fatalf("message = %q, want custom", msg)
		}
	})
}

// reapSession opens an STT session and reads until the simulator closes
// it; it returns what came before the close and the close code.
func reapSession(t *testing.T, s *Server, model string) ([]wsFrame, websocket.StatusCode) {
	t.Helper()
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/"+model, `{"type":"init","config":{}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v", m, err)
	}
	frames, code := readFrames(ctx, t, c, nil)
	if code == -1 {
		t.Fatal("socket did not close")
	}
	return frames, code
}

// TestReaps: idle and over-long sessions are reaped with the profile's
// close code, with or without an error frame first.
func TestReaps(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile string
		idle    bool // reap on the idle timer rather than ReapAfter
		want    string
	}{
		{"rich", false, "error:max_connection_duration_exceeded close:1008"},
		{"rich", true, "error:idle_timeout_exceeded close:1008"},
		{"reap-silent-1008", false, "close:1008"},
		{"reap-silent-1011", true, "close:1011"},
		{"reap-silent-1012", false, "close:1012"},
		{"reap-silent-1001", false, "close:1001"},
		{"reap-with-error", true, "error:idle_timeout_exceeded close:1011"},
		{"realistic", false, "close:1008"},
	} {
		t.Run(fmt.Sprint(tc.profile, "/idle=", tc.idle), func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName(tc.profile)
			opts := Options{Profile: &p}
			if tc.idle {
				opts.IdleTimeout = 100 * time.Millisecond
			} else {
				p.ReapAfter = 100 * time.Millisecond
			}
			s := startSim(t, opts)
			start := time.Now()
			frames, code := reapSession(t, s, "deepgram/nova:3")
			if got := summary(frames, code); got != tc.want {
				t.Fatalf("reap = %q, want %q", got, tc.want)
			}
			if d := time.Since(start); d < 90*time.Millisecond {
				t.Fatalf("reaped after %v, before its time", d)
			}
			if info := s.Sessions()[0]; info.CloseCode != int(code) {
				t.Fatalf("SessionInfo.CloseCode = %d, want %d", info.CloseCode, code)
			}
		})
	}
}

// TestServerReap: a test reaps chosen sessions when it likes, with a
// proper close frame, and the others go on.
func TestServerReap(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	open := func(model string) (context.Context, *websocket.Conn) {
		ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/"+model, `{"type":"init","config":{}}`)
		if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
			t.Fatalf("first message %v, %v", m, err)
		}
		return ctx, c
	}
	ctxA, a := open("deepgram/nova:3")
	ctxB, b := open("soniox/stt-rt:v3")
	ctxC, c := open("soniox/stt-rt:v3")
	if n := s.Reap(func(SessionInfo) bool { return true }, 1005, false); n != 0 {
		t.Fatalf("Reap with close code 1005 reaped %d", n)
	}
	if n := s.Reap(func(i SessionInfo) bool { return i.Model == "deepgram/nova:3" }, 1012, true); n != 1 {
		t.Fatalf("Reap = %d, want 1", n)
	}
	frames, code := readFrames(ctxA, t, a, nil)
	if got := summary(frames, code); got != "error:max_connection_duration_exceeded close:1012" {
		t.Fatalf("reaped with a frame: %q", got)
	}
	if n := s.Reap(func(i SessionInfo) bool { return i.Model == "soniox/stt-rt:v3" }, 1001, false); n != 2 {
		t.Fatalf("Reap = %d, want 2", n)
	}
	for _, x := range []struct {
		ctx context.Context
		c   *websocket.Conn
	}{{ctxB, b}, {ctxC, c}} {
		frames, code := readFrames(x.ctx, t, x.c, nil)
		if got := summary(frames, code); got != "close:1001" {
			t.Fatalf("reaped silently: %q", got)
		}
	}
	if n := s.Reap(func(SessionInfo) bool { return true }, 1000, false); n != 0 {
		t.Fatalf("Reap of closed sessions = %d, want 0", n)
	}
}

// TestTextTimeoutProfile: a TTS session with no text is dropped without an
// error frame, per profile; Options.TTSTextTimeout still overrides.
func TestTextTimeoutProfile(t *testing.T) {
	t.Parallel()
	p, _ := ProfileByName("text-timeout")
	if p.TextTimeout != 5*time.Second {
		t.Fatalf("text-timeout profile TextTimeout = %v, want 5s", p.TextTimeout)
	}
	p.TextTimeout, p.TextTimeoutClose = 100*time.Millisecond, 1011
	s := startSim(t, Options{Profile: &p})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/soniox/tts-rt:v1", `{"type":"init","config":{}}`)
	frames, code := readFrames(ctx, t, c, nil)
	if got := summary(frames, code); got != "ready close:1011" {
		t.Fatalf("frames = %q, want ready then close 1011", got)
	}

	// Options.TTSTextTimeout < 0 disables it on every model.
	s = startSim(t, Options{Profile: &p, TTSTextTimeout: -1})
	_, frames, code = ttsTurn(t, s, "soniox/tts-rt:v1", `{"type":"init","config":{}}`, "late")
	if got := summary(frames, code); got != richTTS {
		t.Fatalf("frames = %q, want a whole turn", got)
	}
}

// TestErrorShapes: every error frame follows the profile's shape, the
// reap's as well as the protocol's.
func TestErrorShapes(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"rich":          `{"code":"invalid_request","message":"unknown message type","type":"error"}`,
		"error-capital": `{"code":"invalid_request","message":"unknown message type","type":"Error"}`,
		"error-nested":  `{"data":{"code":"invalid_request","message":"unknown message type"},"type":"error"}`,
		"error-object":  `{"error":{"code":"invalid_request","message":"unknown message type"},"type":"error"}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, _ := ProfileByName(name)
			p.ReapAfter = 200 * time.Millisecond
			s := startSim(t, Options{Profile: &p})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3", `{"type":"init","config":{}}`)
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"sim_sentinel"}`)); err != nil {
				t.Fatal(err)
			}
			frames, code := readFrames(ctx, t, c, nil)
			if len(frames) != 3 || string(frames[1].raw) != want {
				t.Fatalf("frames %q; want ready, %s, then the reap", summary(frames, code), want)
			}
			if got := summary(frames, code); got != "ready sentinel error:max_connection_duration_exceeded close:1008" {
				t.Fatalf("frames = %q", got)
			}
		})
	}
}

// TestHandshakeBodies: a refused handshake says why in its body, as SLNG's
// does; BYOK on an SLNG-hosted route is refused with SLNG's own words.
func TestHandshakeBodies(t *testing.T) {
	t.Parallel()
	dial := func(t *testing.T, s *Server, model string, providerKey bool) (int, string) {
		t.Helper()
		code, body, _ := dialBody(t, s, model, providerKey)
		return code, body
	}
	realistic := startSim(t, Options{ProfileFor: Realistic})
	if code, body := dial(t, realistic, "slng/deepgram/aura:2-en", true); code != 400 || body != byokRefusal {
		t.Errorf("BYOK on slng/ = %d %q, want 400 %q", code, body, byokRefusal)
	}
	if code, _ := dial(t, realistic, "deepgram/aura:2", true); code != http.StatusSwitchingProtocols {
		t.Errorf("BYOK on an external route = %d, want accepted", code)
	}
	if code, _ := dial(t, realistic, "slng/deepgram/aura:2-en", false); code != http.StatusSwitchingProtocols {
		t.Errorf("slng/ route without a provider key = %d, want accepted", code)
	}
	if code, _ := dial(t, startSim(t, Options{}), "slng/deepgram/aura:2-en", true); code != http.StatusSwitchingProtocols {
		t.Errorf("rich profile: BYOK on slng/ = %d, want accepted as before", code)
	}

	faulty := startSim(t, Options{Faults: MustFaults("a/b=handshake:503", "c/d=handshake:401,body=Invalid API key: revoked")})
	if code, body := dial(t, faulty, "a/b", false); code != 503 || body != "Service temporarily unavailable, please retry" {
		t.Errorf("handshake:503 = %d %q", code, body)
	}
	if code, body := dial(t, faulty, "c/d", false); code != 401 || body != "Invalid API key: revoked" {
		t.Errorf("handshake:401,body= = %d %q", code, body)
	}
	if _, _, err := ParseFault("*=drop@ready,body=x"); err == nil {
		t.Error("body= accepted on a drop fault")
	}

	// handshake-json: every refusal of a known model in the OpenAPI
	// document's error shapes; a fault's own JSON body as it is.
	p, _ := ProfileByName("handshake-json")
	keyed := startSim(t, Options{Profile: &p, APIKey: "sk_right"})
	js := startSim(t, Options{Profile: &p, Faults: MustFaults("a/b=handshake:403", `c/d=handshake:503,body={"detail":"down"}`)})
	for _, tc := range []struct {
		s           *Server
		model       string
		providerKey bool
		code        int
		body        string
	}{
		{keyed, "deepgram/aura:2", false, 401, `{"error":"Invalid or missing API key","status":401}`},
		{js, "slng/deepgram/aura:2-en", true, 400, `{"error":"` + byokRefusal + `","status":400}`},
		{js, "a/b", false, 403, `{"error":"Forbidden","message":"Missing or invalid Bearer token","statusCode":403}`},
		{js, "c/d", false, 503, `{"detail":"down"}`},
	} {
		code, body, typ := dialBody(t, tc.s, tc.model, tc.providerKey)
		if code != tc.code || body != tc.body || typ != "application/json" {
			t.Errorf("handshake-json %s = %d %s (%s), want %d %s (application/json)", tc.model, code, body, typ, tc.code, tc.body)
		}
	}
	if code, body, typ := dialBody(t, js, "bad/model:a:b", false); code != 400 || !strings.HasPrefix(typ, "text/plain") {
		t.Errorf("an invalid model = %d %q (%s), want 400 in plain text: no model, no profile", code, body, typ)
	}
}

// dialBody dials a TTS route of s and returns the refusal's status, body
// and Content-Type (101 and "" when the handshake succeeds).
func dialBody(t *testing.T, s *Server, model string, providerKey bool) (code int, body, contentType string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	if providerKey {
		h.Set("X-Slng-Provider-Key", "pk_SENTINEL")
	}
	c, resp, err := websocket.Dial(ctx, s.URL()+"/v1/bridges/unmute/tts/"+model, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols, "", ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Content-Type")
}

// TestProfileSelection: ProfileFor wins over Profile; the older Options
// still apply on top of any profile; bad profiles are refused.
func TestProfileSelection(t *testing.T) {
	t.Parallel()
	flushedOnly, _ := ProfileByName("flushed-only")
	s := startSim(t, Options{
		Profile:    &flushedOnly,
		ProfileFor: func(model string) Profile { p, _ := ProfileByName("audio-end-only"); return p },
		AudioForm:  AudioJSON,
	})
	_, frames, code := ttsTurn(t, s, "deepgram/aura:2", `{"type":"init","config":{}}`, "x")
	if got := summary(frames, code); got != "segment_start audio segment_end audio_end sentinel" || frames[1].binary {
		t.Fatalf("frames = %q, binary=%v; want audio-end-only in audio_chunk JSON", got, frames[1].binary)
	}
	if info := s.Sessions()[0]; info.Profile != "audio-end-only" {
		t.Fatalf("SessionInfo.Profile = %q", info.Profile)
	}

	// With no profile at all, rime/ and cartesia/ close after each turn, as
	// they always did; CloseAfterAudioEnd decides when set.
	s = startSim(t, Options{})
	_, frames, code = ttsTurn(t, s, "rime/arcana:v2", `{"type":"init","config":{}}`, "x")
	if got := summary(frames, code); got != "segment_start audio segment_end flushed audio_end close:1000" {
		t.Fatalf("rime, no profile: %q", got)
	}
	s = startSim(t, Options{Profile: &flushedOnly, CloseAfterAudioEnd: func(m string) bool { return m == "x/y" }})
	_, frames, code = ttsTurn(t, s, "x/y", `{"type":"init","config":{}}`, "x")
	if got := summary(frames, code); got != "segment_start audio segment_end flushed close:1000" {
		t.Fatalf("CloseAfterAudioEnd: %q", got)
	}

	bad := ProfileRich()
	bad.ReapCode = 1005
	if _, err := New(Options{Profile: &bad}); err == nil {
		t.Error("New accepted ReapCode 1005")
	}
	s = startSim(t, Options{ProfileFor: func(string) Profile { return Profile{AudioShape: 99} }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, s.URL()+"/v1/bridges/unmute/tts/x/y", nil); err == nil || resp.StatusCode != 500 {
		t.Errorf("invalid ProfileFor result: %v", err)
	}
	if _, err := ProfileByName("kindest"); err == nil {
		t.Error("ProfileByName accepted an unknown name")
	}
	if f, err := ProfileFunc("realistic"); err != nil || f("cartesia/sonic:3").TurnEnd != TurnEndClose {
		t.Errorf("ProfileFunc(realistic) is not Realistic: %v", err)
	}
	for _, name := range ProfileNames() {
		p, err := ProfileByName(name)
		if err != nil || p.withDefaults().validate() != nil {
			t.Errorf("profile %q: %v", name, err)
		}
	}
}

// TestProducesOneFormat: a route with Produces set sends that format
// whatever init asks for, and init's own format otherwise.
func TestProducesOneFormat(t *testing.T) {
	t.Parallel()
	p, err := ProfileByName("pcm24k-only")
	if err != nil {
		t.Fatal(err)
	}
	s := startSim(t, Options{ProfileFor: func(model string) Profile {
		if model == "acme/fixed:1" {
			return p
		}
		return ProfileRich()
	}})
	const text = "One format."
	init := `{"type":"init","config":{"encoding":"mulaw","sample_rate":8000}}`
	_, frames, _ := ttsTurn(t, s, "acme/fixed:1", init, text)
	if got, want := audioIn(t, frames), Synthesize(text, "linear16", 24000); !bytes.Equal(got, want) {
		t.Errorf("pcm24k-only asked for 8 kHz mu-law: %d bytes, want the %d bytes of 24 kHz linear16", len(got), len(want))
	}
	_, frames, _ = ttsTurn(t, s, "acme/asked:1", init, text)
	if got, want := audioIn(t, frames), Synthesize(text, "mulaw", 8000); !bytes.Equal(got, want) {
		t.Errorf("rich asked for 8 kHz mu-law: %d bytes, want the %d bytes of mu-law", len(got), len(want))
	}
	bad := p
	bad.Produces.SampleRate = 96000
	if bad.withDefaults().validate() == nil {
		t.Error("a profile producing 96 kHz is valid")
	}
}

// TestErrorShapeObjectMessage: the error-object-message profile's frames,
// the reap's as well as the protocol's, carry a message and no code.
func TestErrorShapeObjectMessage(t *testing.T) {
	t.Parallel()
	p, err := ProfileByName("error-object-message")
	if err != nil {
		t.Fatal(err)
	}
	p.ReapAfter = 200 * time.Millisecond
	s := startSim(t, Options{Profile: &p})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3", `{"type":"init","config":{}}`)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"sim_sentinel"}`)); err != nil {
		t.Fatal(err)
	}
	frames, code := readFrames(ctx, t, c, nil)
	want := []string{`{"error":{"message":"unknown message type"},"type":"error"}`,
		`{"error":{"message":"maximum connection duration reached"},"type":"error"}`}
	if len(frames) != 3 || string(frames[1].raw) != want[0] || string(frames[2].raw) != want[1] || code != 1008 {
		t.Fatalf("frames %q, close %d; want ready, %s, %s, close 1008", summary(frames, code), code, want[0], want[1])
	}
}
