package slngclient

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
)

// TestTTSTurns feeds the turn account what the writing side did (t: text,
// f: a flush, c: a clear) and what routes send (a: audio, F: flushed, E:
// audio_end, B: audio_end carrying audio, C: cleared, x: an error frame,
// s: segment_start, ?: an unknown type, m: a type LiveKit ignores, and Z:
// a normal close), and checks the events it yields (A: audio, T: a turn's
// end, U: an end with no turn, K: the end of a turn by the close, P: text
// spoken before its flush, Q: the same by the close, L: cleared, M:
// cleared by an end of a turn, W: a warning, S: segment start) and whether
// the session is left reusable.
func TestTTSTurns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		style    endStyle // learnt from earlier sessions of the model
		in, want string
		reusable bool
	}{
		{name: "flushed and audio_end: one end", in: "tf aaFE", want: "AAT", reusable: true},
		{name: "audio_end and flushed: one end", in: "tf aEF", want: "AT", reusable: true},
		{name: "only audio_end", in: "tf aE tf aE", want: "ATAT", reusable: true},
		{name: "only flushed, turns back to back", in: "tf tf aF aF", want: "ATAT", reusable: true},
		{name: "echo after the next flush", in: "tf aF tf E aE", want: "ATAT", reusable: true},
		{name: "echo after the next text", in: "tf aF t E f aF", want: "ATAT", reusable: true},
		{name: "two turns, both signals", in: "tf tf aFE aEF", want: "ATAT", reusable: true},
		{name: "an end carrying the last audio", in: "tf aB", want: "AAT", reusable: true},
		{name: "close ends the turn", in: "tf aaZ", want: "AAK", reusable: true},
		{name: "close with no audio ends nothing", in: "tf Z", want: "", reusable: false},
		{name: "close after the end adds nothing", in: "tf aFZ", want: "AT", reusable: true},
		{name: "close before the flush: the text was spoken", in: "t aZ", want: "AQ", reusable: false},
		{name: "an end before the flush is absorbed", in: "t aE", want: "AP", reusable: false},
		{name: "the flush ends the turn", in: "t aE f E", want: "APT", reusable: true},
		{name: "several texts with pauses", in: "t aE t aE t aE f E", want: "APAPAPT", reusable: true},
		{name: "each text's end, flushed before the audio", in: "tf aE E tf aE E", want: "ATAT", reusable: true},
		{name: "learnt per text: texts sent together", style: stylePerText, in: "t t f aE aE E", want: "AAT", reusable: true},
		{name: "learnt per text: turns back to back", style: stylePerText, in: "tf tf aE E aE E", want: "ATAT", reusable: true},
		{name: "end with no turn", in: "E", want: "U", reusable: true},
		{name: "text waiting for a flush", in: "tf aF t", want: "AT", reusable: false},
		{name: "turn in flight", in: "tf a", want: "A", reusable: false},
		{name: "clear drops the turn's frames", in: "tf a c aas C", want: "AL", reusable: true},
		{name: "clear answered by an end", in: "tf a c aa E C", want: "AM", reusable: true},
		{name: "clear answered by both ends", in: "tf a c aa FE", want: "AM", reusable: true},
		{name: "clear waits for an answer", in: "tf a c aa", want: "A", reusable: false},
		{name: "next turn after a clear", in: "tf a c aF C tf aF", want: "AMAT", reusable: true},
		{name: "cleared answering nothing", in: "tf aF C", want: "AT", reusable: true},
		{name: "close during a clear ends nothing", in: "tf a c aZ", want: "A", reusable: false},
		{name: "error frame", in: "tf a x", want: "AW", reusable: false},
		{name: "segments and unknown types", in: "tf s?ma?mF", want: "SAT", reusable: true},
		{name: "learnt single: same signals end turns", style: styleSingle, in: "tf tf aF F", want: "ATT", reusable: true},
		{name: "learnt single: other signal ends the next", style: styleSingle, in: "tf tf aF E", want: "ATT", reusable: true},
		{name: "learnt both: the other half is an echo", style: styleBoth, in: "tf tf aF E aE", want: "ATAT", reusable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			styles := &endStyles{}
			if tc.style != styleUnknown {
				styles.set("m", tc.style)
			}
			var unknown atomic.Int64
			tr := newTTSTurns(styles, "m", &unknown)
			var got strings.Builder
			closed := false
			for _, c := range strings.ReplaceAll(tc.in, " ", "") {
				var f frame
				switch c {
				case 't':
					tr.sentText()
					continue
				case 'f':
					if !tr.flush() {
						t.Fatalf("flush refused")
					}
					continue
				case 'c':
					tr.clear()
					continue
				case 'Z':
					if ev, ok := tr.atClose(io.EOF); ok {
						got.WriteString(code(ev))
					}
					closed = true
					continue
				case 'a':
					f.audio = []byte{1}
				case 'B':
					f.audio, f.msg = []byte{1}, &serverMsg{Type: "audio_end"}
				default:
					typ := map[rune]string{'F': "flushed", 'E': "audio_end", 'C': "cleared", 'x': "error",
						's': "segment_start", '?': "sim_unknown", 'm': "metadata"}[c]
					f.msg = &serverMsg{Type: typ}
					if c == 'x' {
						f.err = NewErrorFrame("provider_error", "")
					}
				}
				evs, n := tr.next(f, nil)
				for _, ev := range evs[:n] {
					got.WriteString(code(ev))
				}
			}
			if got.String() != tc.want {
				t.Errorf("events %q, want %q", got.String(), tc.want)
			}
			if r := tr.quiescent(); !closed && r != tc.reusable {
				t.Errorf("reusable = %v, want %v", r, tc.reusable)
			}
			if want := int64(strings.Count(tc.in, "?")); unknown.Load() != want {
				t.Errorf("unknown = %d, want %d", unknown.Load(), want)
			}
		})
	}
}

// code is an event's letter in TestTTSTurns.
func code(ev TTSEvent) string {
	switch {
	case ev.Kind == TTSTurnEnd && ev.Unflushed:
		return "U"
	case ev.Kind == TTSTurnEnd && ev.ByClose:
		return "K"
	case ev.Kind == TTSTextSpoken && ev.ByClose:
		return "Q"
	case ev.Kind == TTSCleared && ev.ByEnd:
		return "M"
	}
	switch ev.Kind {
	case TTSAudio:
		return "A"
	case TTSTurnEnd:
		return "T"
	case TTSTextSpoken:
		return "P"
	case TTSCleared:
		return "L"
	case TTSWarning:
		return "W"
	case TTSSegmentStart:
		return "S"
	}
	return fmt.Sprint(ev.Kind)
}

// TestEndStylesLearnt: a model's style, learnt by one session, is where
// the next session of the model starts; the table stays bounded.
func TestEndStylesLearnt(t *testing.T) {
	t.Parallel()
	styles := &endStyles{}
	var unknown atomic.Int64
	first := newTTSTurns(styles, "m", &unknown)
	first.flush() // nothing to flush: no text
	first.sentText()
	first.flush()
	first.next(frame{audio: []byte{1}}, nil)
	first.next(frame{msg: &serverMsg{Type: "flushed"}}, nil)
	first.next(frame{msg: &serverMsg{Type: "audio_end"}}, nil)
	if got := newTTSTurns(styles, "m", &unknown).style; got != styleBoth {
		t.Fatalf("next session's style = %v, want styleBoth", got)
	}
	for i := range 2 * maxEndStyles {
		styles.set(fmt.Sprint("model-", i), styleSingle)
	}
	if n := len(styles.m); n != maxEndStyles {
		t.Fatalf("%d styles kept, want at most %d", n, maxEndStyles)
	}
}
