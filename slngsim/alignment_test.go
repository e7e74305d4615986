package slngsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/coder/websocket"
)

// wireAlignment is an ElevenLabs alignment object as the simulator sends
// it.
type wireAlignment struct {
	Chars  []string `json:"chars"`
	Starts []int64  `json:"charStartTimesMs"`
	Durs   []int64  `json:"charsDurationsMs"`
}

// TestAlignmentMatchesAudio: on routes that send alignment, each frame
// lists the characters whose audio starts in it, relative to its own
// audio, in ElevenLabs' spelling; over a turn the characters are the text
// and their times are where the modem put each character, tiling the
// turn's audio exactly (the last character holds the closing silence).
// normalizedAlignment is the same (the simulator normalizes nothing).
func TestAlignmentMatchesAudio(t *testing.T) {
	t.Parallel()
	const text = `Say "hi", café \ 42 — ok.`
	realistic := Realistic("elevenlabs/eleven-flash:2.5")
	for _, tc := range []struct {
		profile  string
		p        *Profile
		enc      string
		rate     int
		inTheEnd bool // the last audio comes in the end-of-turn frame
	}{
		{profile: "realistic", p: &realistic, enc: "linear16", rate: 24000},
		{profile: "json-elevenlabs", enc: "mulaw", rate: 8000},
		{profile: "json-elevenlabs-final", enc: "linear16", rate: 16000},
		{profile: "isfinal-with-audio", enc: "linear16", rate: 48000, inTheEnd: true},
	} {
		t.Run(fmt.Sprintf("%s-%s-%d", tc.profile, tc.enc, tc.rate), func(t *testing.T) {
			t.Parallel()
			p := tc.p
			if p == nil {
				named, err := ProfileByName(tc.profile)
				if err != nil {
					t.Fatal(err)
				}
				p = &named
			}
			if !p.SendsAlignment() {
				t.Fatalf("%s does not send alignment", tc.profile)
			}
			s := startSim(t, Options{Profile: p})
			ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/elevenlabs/eleven-flash:2.5",
				fmt.Sprintf(`{"type":"init","config":{"encoding":%q,"sample_rate":%d}}`, tc.enc, tc.rate))
			if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
				t.Fatalf("first message %v, %v; want ready", m, err)
			}
			msg, _ := json.Marshal(map[string]any{"type": "text", "text": text})
			for _, m := range [][]byte{msg, []byte(`{"type":"flush"}`)} {
				if err := c.Write(ctx, websocket.MessageText, m); err != nil {
					t.Fatal(err)
				}
			}
			frames, _ := readFrames(ctx, t, c, func(f wsFrame) bool { return f.msg["isFinal"] == true || f.msg["type"] == "flushed" })
			bps := bytesPerSample(tc.enc)
			var audio []byte
			var chars string
			var prevEnd int64
			msOf := func(samples int) int64 { return (int64(samples)*1000 + int64(tc.rate)/2) / int64(tc.rate) }
			for i, f := range frames {
				chunk, ok := audioOf(t, f)
				if !ok {
					continue
				}
				if tc.inTheEnd && i == len(frames)-1 && f.msg["isFinal"] != true {
					t.Fatalf("the last audio did not come in the end frame: %s", f.raw)
				}
				var w struct {
					Alignment, NormalizedAlignment json.RawMessage
				}
				if err := json.Unmarshal(f.raw, &w); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(w.Alignment, w.NormalizedAlignment) || len(w.Alignment) == 0 {
					t.Fatalf("frame %s: alignment %s, normalizedAlignment %s; want both, equal", f.raw, w.Alignment, w.NormalizedAlignment)
				}
				base := msOf(len(audio) / bps) // the frame's audio starts here
				audio = append(audio, chunk...)
				if string(w.Alignment) == "null" {
					continue
				}
				var a wireAlignment
				if err := json.Unmarshal(w.Alignment, &a); err != nil {
					t.Fatal(err)
				}
				if len(a.Chars) == 0 || len(a.Starts) != len(a.Chars) || len(a.Durs) != len(a.Chars) {
					t.Fatalf("frame %s: arrays of different lengths", f.raw)
				}
				for j, ch := range a.Chars {
					start := base + a.Starts[j]
					if start != prevEnd || a.Starts[j] < 0 || base+a.Starts[j] >= msOf(len(audio)/bps)+1 {
						t.Fatalf("character %q at %d ms (frame at %d ms, %d ms long); want it at %d ms, starting in its frame",
							ch, start, base, msOf(len(chunk)/bps), prevEnd)
					}
					prevEnd = start + a.Durs[j]
					chars += ch
				}
			}
			if chars != text {
				t.Fatalf("aligned characters %q, want %q", chars, text)
			}
			if got, err := Decode(audio, tc.enc, tc.rate); err != nil || got != text {
				t.Fatalf("audio decodes to %q, %v", got, err)
			}
			if want := msOf(len(audio) / bps); prevEnd != want {
				t.Fatalf("the characters end at %d ms, the audio at %d ms", prevEnd, want)
			}
		})
	}
}

// TestAlignmentNotOnOtherShapes: routes other than ElevenLabs' send no
// alignment.
func TestAlignmentNotOnOtherShapes(t *testing.T) {
	t.Parallel()
	for _, shape := range AudioShapes() {
		if got, want := (Profile{AudioShape: shape}).SendsAlignment(), shape == AudioShapeElevenLabs; got != want {
			t.Errorf("%s: SendsAlignment() = %v, want %v", shape, got, want)
		}
		buf := appendAudioFrame(nil, shape, []byte{1, 2, 3, 4}, 1)
		if bytes.Contains(buf, []byte("lignment")) {
			t.Errorf("%s: frame %s carries alignment", shape, buf)
		}
	}
	if Realistic("deepgram/aura:2").SendsAlignment() || !Realistic("elevenlabs/eleven:3").SendsAlignment() {
		t.Error("the realistic rule: alignment should come from elevenlabs routes alone")
	}
}

// TestAppendAlignmentReusesItsBuffer: a frame's alignment is written into
// the speaker's buffer without allocating.
func TestAppendAlignmentReusesItsBuffer(t *testing.T) {
	a := newAligner("Hello, world. Hello, world.", "linear16", 24000)
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(10, func() {
		a.next = 0
		buf = a.appendFields(buf[:0], 0, 960)
	}); n != 0 {
		t.Errorf("%v allocations per frame, want 0", n)
	}
	want := `,"normalizedAlignment":{"chars":["H","e","l"],"charStartTimesMs":[0,8,16],"charsDurationsMs":[8,8,8]},` +
		`"alignment":{"chars":["H","e","l"],"charStartTimesMs":[0,8,16],"charsDurationsMs":[8,8,8]}`
	if string(buf) != want {
		t.Errorf("fields %s, want %s", buf, want)
	}
}
