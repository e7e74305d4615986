package service

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// pcm24k is the clock of 24 kHz LINEAR16: 48 bytes a millisecond.
var pcm24k = clockOf(&speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 24000})

// timedBook is a turn book with timings on (speed 0: the default) and one
// flushed turn of text.
func timedBook(t *testing.T, clock pcmClock, text string) *turnBook {
	t.Helper()
	b := newTurnBook(clock)
	b.tm = streamTimings{on: true}
	if _, err := b.addText(text, maxTurnText); err != nil {
		t.Fatal(err)
	}
	b.flush(time.Now())
	return b
}

// alignedFrame is an upstream frame of ms milliseconds of 24 kHz audio
// with the alignment of chars, each lasting dur ms, the first starting at
// start ms: the events a session yields for it.
func alignedFrame(ms int, chars string, start, dur int) []slngclient.TTSEvent {
	evs := []slngclient.TTSEvent{{Kind: slngclient.TTSAudio, Audio: make([]byte, 48*ms)}}
	if chars == "" {
		return evs
	}
	al := &slngclient.Alignment{AfterAudio: true}
	for i, r := range []rune(chars) {
		al.Chars = append(al.Chars, slngclient.AlignedChar{Text: string(r),
			Start: time.Duration(start+i*dur) * time.Millisecond, Duration: time.Duration(dur) * time.Millisecond})
	}
	return append(evs, slngclient.TTSEvent{Kind: slngclient.TTSAlignment, Alignment: al})
}

// feed passes events to b and returns the Timings it sent, checking that
// each follows the audio it describes.
func feed(t *testing.T, b *turnBook, evs ...slngclient.TTSEvent) []*speechv1.Timings {
	t.Helper()
	var got []*speechv1.Timings
	for _, ev := range evs {
		out, _ := b.event(ev)
		for _, o := range out {
			if tm := o.resp.GetTimings(); tm != nil {
				if tm.GetLastSequence() > b.seq {
					t.Fatalf("timings up to chunk %d before the chunk came (last %d)", tm.GetLastSequence(), b.seq)
				}
				got = append(got, tm)
			}
		}
	}
	return got
}

func tt(text string, startMs, durMs int) *speechv1.TimedText {
	return &speechv1.TimedText{Text: text, Start: durationpb.New(time.Duration(startMs) * time.Millisecond),
		Duration: durationpb.New(time.Duration(durMs) * time.Millisecond)}
}

// TestTimingsAcrossFrames: characters are placed from the turn's first
// audio, each frame's times counting from the frame's own audio (the
// bytes before it, not where its characters ended); a word split between
// frames comes whole, with the message that completes it; the last word
// comes at the turn's end, just before `flushed`; sequences name the
// chunks described.
func TestTimingsAcrossFrames(t *testing.T) {
	t.Parallel()
	b := timedBook(t, pcm24k, "Hi you")
	var got []*speechv1.Timings
	// Frame 1: 20 ms, "Hi" at 0 and 5 ms (5 ms each), then silence.
	got = append(got, feed(t, b, alignedFrame(20, "Hi", 0, 5)...)...)
	// Frame 2: 20 ms, " yo" from 2 ms of it (22 ms in the turn).
	got = append(got, feed(t, b, alignedFrame(20, " yo", 2, 5)...)...)
	// Frame 3: 10 ms, "u" at 0 ms of it (40 ms).
	got = append(got, feed(t, b, alignedFrame(10, "u", 0, 5)...)...)
	got = append(got, feed(t, b, slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})...)
	want := []*speechv1.Timings{
		{TurnId: 1, FirstSequence: 1, LastSequence: 1, Characters: []*speechv1.TimedText{tt("H", 0, 5), tt("i", 5, 5)}},
		{TurnId: 1, FirstSequence: 1, LastSequence: 2, Characters: []*speechv1.TimedText{tt(" ", 22, 5), tt("y", 27, 5), tt("o", 32, 5)},
			Words: []*speechv1.TimedText{tt("Hi", 0, 10)}},
		{TurnId: 1, FirstSequence: 3, LastSequence: 3, Characters: []*speechv1.TimedText{tt("u", 40, 5)}},
		{TurnId: 1, FirstSequence: 2, LastSequence: 3, Words: []*speechv1.TimedText{tt("you", 27, 18)}},
	}
	if !equalProtos(want, got) {
		t.Errorf("timings:\n%s\nwant:\n%s", texts(got), texts(want))
	}
	if b.tm.base != baseFrame {
		t.Errorf("time base %v, want frame", b.tm.base)
	}
}

// TestTimingsFromTheReply: a route whose times run on from the start of
// the reply is told at its second alignment, and its times are taken as
// they come, for the rest of the stream.
func TestTimingsFromTheReply(t *testing.T) {
	t.Parallel()
	b := timedBook(t, pcm24k, "abcd")
	feed(t, b, alignedFrame(20, "ab", 0, 8)...)
	got := feed(t, b, alignedFrame(20, "cd", 16, 8)...)
	if len(got) != 1 || b.tm.base != baseReply {
		t.Fatalf("got %v, base %v; want one message and the reply's base", got, b.tm.base)
	}
	if want := []*speechv1.TimedText{tt("c", 16, 8), tt("d", 24, 8)}; !equalProtos(want, got[0].GetCharacters()) {
		t.Errorf("characters:\n%s\nwant:\n%s", texts(got[0].GetCharacters()), texts(want))
	}
}

// TestTimingsWithoutAudioDuration: for MP3 and Opus, whose duration the
// gateway cannot count, each frame's times start where the last aligned
// character ended.
func TestTimingsWithoutAudioDuration(t *testing.T) {
	t.Parallel()
	b := timedBook(t, pcmClock{}, "abcd")
	feed(t, b, alignedFrame(20, "ab", 0, 8)...)
	got := feed(t, b, alignedFrame(20, "cd", 0, 8)...)
	if len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	if want := []*speechv1.TimedText{tt("c", 16, 8), tt("d", 24, 8)}; !equalProtos(want, got[0].GetCharacters()) {
		t.Errorf("characters:\n%s\nwant:\n%s", texts(got[0].GetCharacters()), texts(want))
	}
}

// TestTimingsOff: without enable_timings nothing is relayed, whatever
// comes.
func TestTimingsOff(t *testing.T) {
	t.Parallel()
	b := timedBook(t, pcm24k, "ab")
	b.tm.on = false
	if got := feed(t, b, append(alignedFrame(20, "ab", 0, 8), slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})...); len(got) != 0 {
		t.Fatalf("timings %v without enable_timings", got)
	}
}

// TestSpokenFromTimings: a clear, a cancel or a failure reports the
// characters heard in full in the audio delivered, from the timings; a
// character whose audio goes on past it is not counted.
func TestSpokenFromTimings(t *testing.T) {
	t.Parallel()
	for _, cut := range []string{"clear", "cancel", "fail"} {
		t.Run(cut, func(t *testing.T) {
			t.Parallel()
			b := timedBook(t, pcm24k, "Hello there")
			// 30 ms of audio: "Hello" in 5 ms each, then " " to 35 ms.
			feed(t, b, alignedFrame(30, "Hello ", 0, 5)[:1]...)
			al := alignedFrame(30, "Hello ", 0, 5)[1]
			al.Alignment.Chars[5].Duration = 10 * time.Millisecond // the space ends at 35 ms
			feed(t, b, al)
			var d *speechv1.TurnDelivery
			switch cut {
			case "fail":
				out := b.fail(b.pending[0], errTurnTimeout) // after what the last event made
				d = out[len(out)-1].resp.GetTurnFailed().GetDelivered()
			case "cancel":
				out := b.clear(true, true, time.Now())
				d = out[0].resp.GetCancelled().GetDelivered()
			case "clear":
				b.clear(false, true, time.Now())
				out, _ := b.event(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
				d = out[0].resp.GetCleared().GetDelivered()
			}
			want := &speechv1.TurnDelivery{AudioDuration: durationpb.New(30 * time.Millisecond), AudioBytes: 1440, LastSequence: 1,
				SpokenCharacters: 5, SpokenText: "Hello", SpokenSource: speechv1.SpokenSource_SPOKEN_SOURCE_TIMINGS}
			if !proto.Equal(want, d) {
				t.Errorf("delivered %s, want %s", prototext.Format(d), prototext.Format(want))
			}
		})
	}
}

// TestSpokenEstimated: without timings, the spoken part is the delivered
// audio's duration at 15 characters a second times the speed, in whole
// code points, never more than the text; for MP3 or Opus nothing is
// known.
func TestSpokenEstimated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		clock   pcmClock
		speed   float64
		audioMs int
		text    string
		want    string
		source  speechv1.SpokenSource
	}{
		{"one second", pcm24k, 0, 1000, strings.Repeat("abcde", 10), "abcdeabcdeabcde", speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		{"faster", pcm24k, 2, 1000, strings.Repeat("abcde", 10), strings.Repeat("abcde", 6), speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		{"code points", pcm24k, 1, 200, "ééé ééé", "ééé", speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		{"capped at the text", pcm24k, 1, 5000, "Short.", "Short.", speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		{"nothing delivered", pcm24k, 1, 0, "Short.", "", speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		{"mp3", pcmClock{}, 1, 1000, "Short.", "", speechv1.SpokenSource_SPOKEN_SOURCE_UNSPECIFIED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := timedBook(t, tc.clock, tc.text)
			b.tm = streamTimings{speed: tc.speed}
			if tc.audioMs > 0 {
				feed(t, b, slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: make([]byte, 48*tc.audioMs)})
			}
			out := b.clear(true, true, time.Now())
			d := out[0].resp.GetCancelled().GetDelivered()
			if d.GetSpokenText() != tc.want || int(d.GetSpokenCharacters()) != len([]rune(tc.want)) || d.GetSpokenSource() != tc.source {
				t.Errorf("spoken %q (%d characters, %v), want %q (%v)", d.GetSpokenText(), d.GetSpokenCharacters(), d.GetSpokenSource(), tc.want, tc.source)
			}
		})
	}
}

// TestMatchChar: aligned characters find their place in the caller's
// text, whatever spaces the route adds or leaves out; one the route spoke
// otherwise moves on by one code point.
func TestMatchChar(t *testing.T) {
	t.Parallel()
	const text = "Hi  café, 42"
	for _, tc := range []struct {
		name   string
		cursor int
		c      string
		want   int
	}{
		{"the character", 0, "H", 1},
		{"a space the route added", 0, " ", 0},
		{"spaces the route left out", 2, "c", 5},
		{"a multibyte character", 7, "é", 9},
		{"spoken otherwise", 11, "f", 12},
		{"past the end", 13, "x", 13},
		{"nothing", 3, "", 3},
	} {
		if got := matchChar(text, tc.cursor, tc.c); got != tc.want {
			t.Errorf("%s: matchChar(%d, %q) = %d, want %d", tc.name, tc.cursor, tc.c, got, tc.want)
		}
	}
}

// TestTimedRoutesBounded: the models seen sending alignment are
// remembered, at most maxTimedRoutes of them.
func TestTimedRoutesBounded(t *testing.T) {
	t.Parallel()
	var r timedRoutes
	for i := range maxTimedRoutes + 10 {
		r.saw(strings.Repeat("m", i+1))
	}
	if !r.has("m") || r.has(strings.Repeat("m", maxTimedRoutes+1)) || len(r.m) != maxTimedRoutes {
		t.Errorf("%d models remembered, want the first %d", len(r.m), maxTimedRoutes)
	}
}

// equalProtos compares two lists of messages.
func equalProtos[M proto.Message](want, got []M) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			return false
		}
	}
	return true
}

// texts renders messages one a line.
func texts[M proto.Message](ms []M) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(prototext.Format(m))
		b.WriteString("\n")
	}
	return b.String()
}
