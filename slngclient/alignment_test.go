package slngclient

import (
	"encoding/base64"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// ms is a number of milliseconds as a duration.
func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// chars builds aligned characters from text (one per rune) and their
// starts and durations in milliseconds.
func chars(text string, starts, durs []float64) []AlignedChar {
	var out []AlignedChar
	i := 0
	for _, r := range text {
		out = append(out, AlignedChar{Text: string(r), Start: ms(starts[i]), Duration: ms(durs[i])})
		i++
	}
	return out
}

// TestAlignmentFrameShapes: the alignment of every shape ElevenLabs routes
// are recorded sending, through the fast path and the full decode alike:
// the AsyncAPI's example (both objects, charsDurationsMs), pipecat's and
// LiveKit's spellings, null objects, escapes and fractional milliseconds.
// The alignment of the text sent wins over the normalized one; a broken
// object is ignored, and the other one used. Times are passed on as sent:
// the consumer decides what they are relative to.
func TestAlignmentFrameShapes(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4})
	// ElevenLabs' stream-input AsyncAPI, AudioOutput example.
	hello := `{"charStartTimesMs":[0,3,7,9,11,12,13,15,17,19,21],"charsDurationsMs":[3,4,2,2,1,1,2,2,2,2,3],` +
		`"chars":["H","e","l","l","o"," ","w","o","r","l","d"]}`
	helloChars := chars("Hello world", []float64{0, 3, 7, 9, 11, 12, 13, 15, 17, 19, 21}, []float64{3, 4, 2, 2, 1, 1, 2, 2, 2, 2, 3})
	for _, tc := range []struct {
		name, in string
		fast     bool // the scanner reads it
		want     *Alignment
	}{
		{"asyncapi example", `{"audio":"` + b64 + `","isFinal":false,"normalizedAlignment":` + hello + `,"alignment":` + hello + `}`,
			true, &Alignment{Chars: helloChars, AfterAudio: true}},
		{"pipecat's spelling", `{"audio":"` + b64 + `","alignment":{"chars":["o","k"],"charStartTimesMs":[0,40],"charDurationsMs":[40,60]}}`,
			true, &Alignment{Chars: chars("ok", []float64{0, 40}, []float64{40, 60}), AfterAudio: true}},
		{"livekit's snake case", `{"audio":"` + b64 + `","normalized_alignment":{"chars":["h","i"],"char_start_times_ms":[0,100],"char_durations_ms":[100,100]}}`,
			true, &Alignment{Chars: chars("hi", []float64{0, 100}, []float64{100, 100}), Normalized: true, AfterAudio: true}},
		{"charsStartTimesMs", `{"audio":"` + b64 + `","alignment":{"chars":["a"],"charsStartTimesMs":[5],"charsDurationsMs":[6]}}`,
			true, &Alignment{Chars: chars("a", []float64{5}, []float64{6}), AfterAudio: true}},
		{"only normalized", `{"audio":"` + b64 + `","alignment":null,"normalizedAlignment":{"chars":[" ","4","2"],"charStartTimesMs":[0,0,30],"charsDurationsMs":[0,30,30]}}`,
			true, &Alignment{Chars: chars(" 42", []float64{0, 0, 30}, []float64{0, 30, 30}), Normalized: true, AfterAudio: true}},
		{"broken alignment, good normalized", `{"audio":"` + b64 + `","alignment":{"chars":["a","b"],"charStartTimesMs":[0],"charsDurationsMs":[1,1]},` +
			`"normalizedAlignment":{"chars":["a"],"charStartTimesMs":[0],"charsDurationsMs":[2]}}`,
			true, &Alignment{Chars: chars("a", []float64{0}, []float64{2}), Normalized: true, AfterAudio: true}},
		{"escapes and fractions", `{"audio":"` + b64 + `","alignment":{"chars":["\"","\u00e9","\\"],"charStartTimesMs":[0,2.5,5],"charsDurationsMs":[2.5,2.5,1e1]}}`,
			true, &Alignment{Chars: chars(`"é\`, []float64{0, 2.5, 5}, []float64{2.5, 2.5, 10}), AfterAudio: true}},
		{"both null", `{"audio":"` + b64 + `","isFinal":false,"normalizedAlignment":null,"alignment":null}`, true, nil},
		{"negative time", `{"audio":"` + b64 + `","alignment":{"chars":["a"],"charStartTimesMs":[-1],"charsDurationsMs":[1]}}`, true, nil},
		{"no characters", `{"audio":"` + b64 + `","alignment":{"chars":[],"charStartTimesMs":[],"charsDurationsMs":[]}}`, true, nil},
		{"not an object", `{"audio":"` + b64 + `","alignment":[1,2]}`, true, nil},
		{"a string time", `{"audio":"` + b64 + `","alignment":{"chars":["a"],"charStartTimesMs":["0"],"charsDurationsMs":[1]}}`, true, nil},
		// The full decode: an end of a generation with its last audio, a
		// key in another letter case, a key twice.
		{"isFinal with audio", `{"audio":"` + b64 + `","isFinal":true,"alignment":{"chars":["z"],"charStartTimesMs":[1],"charsDurationsMs":[9]}}`,
			false, &Alignment{Chars: chars("z", []float64{1}, []float64{9}), AfterAudio: true}},
		{"another letter case", `{"audio":"` + b64 + `","Alignment":{"chars":["y"],"charStartTimesMs":[0],"charsDurationsMs":[9]}}`,
			false, &Alignment{Chars: chars("y", []float64{0}, []float64{9}), AfterAudio: true}},
		{"twice: the last wins", `{"audio":"` + b64 + `","alignment":{"chars":["x"],"charStartTimesMs":[0],"charsDurationsMs":[9]},` +
			`"alignment":{"chars":["w"],"charStartTimesMs":[0],"charsDurationsMs":[8]}}`,
			false, &Alignment{Chars: chars("w", []float64{0}, []float64{8}), AfterAudio: true}},
		{"no audio", `{"audio":null,"alignment":{"chars":["v"],"charStartTimesMs":[0],"charsDurationsMs":[7]}}`,
			false, &Alignment{Chars: chars("v", []float64{0}, []float64{7})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, fast := scanAudio([]byte(tc.in))
			if fast != tc.fast {
				t.Errorf("scanAudio fast = %v, want %v", fast, tc.fast)
			}
			f, err := decodeFrame([]byte(tc.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			tr := newTTSTurns(nil, "elevenlabs/eleven-flash:2.5", new(atomic.Int64))
			tr.sentText()
			tr.flush()
			var got *Alignment
			evs, n := tr.next(f, readAlignment(f.align))
			for i, ev := range evs[:n] {
				if ev.Kind == TTSAlignment {
					got = ev.Alignment
					if i > 0 && evs[i-1].Kind != TTSAudio {
						t.Errorf("alignment after %v, want right after its audio", evs[i-1].Kind)
					}
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("alignment = %+v, want %+v", got, tc.want)
			}
			full, err := decodeJSON([]byte(tc.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := readAlignment(full.align), readAlignment(f.align); !reflect.DeepEqual(a, b) {
				t.Errorf("full decode read %+v, the scanner %+v", a, b)
			}
		})
	}
}

// TestAlignmentOfDiscardedTurnDropped: after a clear, the alignment of the
// discarded turn's frames is dropped with their audio.
func TestAlignmentOfDiscardedTurnDropped(t *testing.T) {
	t.Parallel()
	tr := newTTSTurns(nil, "m", new(atomic.Int64))
	tr.sentText()
	tr.flush()
	tr.clear()
	f, err := decodeFrame([]byte(`{"audio":"AQID","alignment":{"chars":["a"],"charStartTimesMs":[0],"charsDurationsMs":[1]}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, n := tr.next(f, readAlignment(f.align)); n != 0 {
		t.Errorf("%d events from a discarded turn's frame, want none", n)
	}
}
