package slngsim

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"testing"

	"github.com/coder/websocket"
)

// TestAsyncAPIWords: a route that puts words in AsyncAPI finals sends
// them unasked, and they are the only times such a final has.
func TestAsyncAPIWords(t *testing.T) {
	t.Parallel()
	p, _ := ProfileByName("asyncapi-finals-words")
	s := startSim(t, Options{Profile: &p})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3", `{"type":"init","config":{"sample_rate":16000}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", m, err)
	}
	// 100 ms of silence, then two words: 10 bytes, 20 symbols, 120 ms.
	audio := append(make([]byte, 3200), Synthesize("Two words.", "linear16", 16000)...)
	if err := c.Write(ctx, websocket.MessageBinary, audio); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"close"}`)); err != nil {
		t.Fatal(err)
	}
	frames, _ := readFrames(ctx, t, c, nil)
	var final map[string]any
	for _, f := range frames {
		if f.msg["type"] == "final_transcript" && f.msg["transcript"] != "" {
			final = f.msg
		}
	}
	if final == nil || keysOf(final) != asyncFinalWords {
		t.Fatalf("final %v, want keys %s", final, asyncFinalWords)
	}
	words, _ := final["words"].([]any)
	if len(words) != 2 {
		t.Fatalf("words %v, want two", final["words"])
	}
	first, last := words[0].(map[string]any), words[1].(map[string]any)
	near := func(got any, want float64) bool { f, ok := got.(float64); return ok && math.Abs(f-want) < 0.002 }
	if first["word"] != "two" || first["punctuated_word"] != "Two" || !near(first["start"], 0.1) || !near(last["end"], 0.22) {
		t.Fatalf("words %v, want two from 0.1 s and words. to 0.22 s", words)
	}
}

// TestAppendAudioFrameReusesItsBuffer: framing a chunk into a buffer that
// is large enough allocates nothing, and the frame is valid JSON.
func TestAppendAudioFrameReusesItsBuffer(t *testing.T) {
	chunk := Synthesize("A chunk.", "linear16", 24000)[:960]
	buf := make([]byte, 0, 2048)
	for _, shape := range AudioShapes()[1:] {
		if n := testing.AllocsPerRun(100, func() { buf = appendAudioFrame(buf[:0], shape, chunk, 7) }); n != 0 {
			t.Errorf("%s: %v allocations per frame, want 0", shape, n)
		}
		var v map[string]any
		if err := json.Unmarshal(buf, &v); err != nil {
			t.Fatalf("%s: %s is not JSON: %v", shape, buf, err)
		}
		f := wsFrame{raw: buf, msg: v}
		if got, ok := audioOf(t, f); !ok || base64.StdEncoding.EncodeToString(got) != base64.StdEncoding.EncodeToString(chunk) {
			t.Errorf("%s: frame %s does not carry the chunk", shape, buf)
		}
	}
}

// BenchmarkAudioFrame measures framing one 20 ms chunk of 24 kHz linear16
// audio in each JSON shape, into a reused buffer as the speaker does.
func BenchmarkAudioFrame(b *testing.B) {
	chunk := Synthesize("A benchmark chunk of speech.", "linear16", 24000)[:960]
	for _, shape := range AudioShapes()[1:] {
		b.Run(shape.String(), func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for i := 0; b.Loop(); i++ {
				buf = appendAudioFrame(buf[:0], shape, chunk, i)
			}
		})
	}
}
