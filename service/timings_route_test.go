package service

import (
	"strings"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// The timings against the simulator's routes, through the real gateway.
// The simulator's ElevenLabs route (realistic rule) sends alignment with
// its audio; at 24 kHz each ASCII character of its modem is 8 ms of audio
// and the closing silence 4 ms more, so the tests know where every
// character is.

const elevenModel = "elevenlabs/eleven-flash:2.5"

// oneSample is the time of one sample at 24 kHz.
const oneSample = time.Second / 24000

func timedConfig(model string, timings bool) *speechv1.SynthesisConfig {
	return &speechv1.SynthesisConfig{Model: model, EnableTimings: timings,
		Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 24000}}
}

// turnTimes is what a turn's responses say of it.
type turnTimes struct {
	audio []byte
	chars []*speechv1.TimedText
	words []*speechv1.TimedText
	ended bool // flushed came
}

// collectTimings splits responses by turn, checking that each Timings
// message follows the audio it describes and times nothing beyond the
// audio delivered so far, and that none follows its turn's `flushed`.
func collectTimings(t *testing.T, resps []*speechv1.SynthesizeResponse) map[uint64]*turnTimes {
	t.Helper()
	turns := map[uint64]*turnTimes{}
	get := func(id uint64) *turnTimes {
		if turns[id] == nil {
			turns[id] = &turnTimes{}
		}
		return turns[id]
	}
	var lastSeq uint64
	for _, r := range resps {
		switch {
		case r.GetAudio() != nil:
			a := r.GetAudio()
			get(a.GetTurnId()).audio = append(get(a.GetTurnId()).audio, a.GetData()...)
			lastSeq = a.GetSequence()
		case r.GetFlushed() != nil:
			get(r.GetFlushed().GetTurnId()).ended = true
		case r.GetTimings() != nil:
			tm := r.GetTimings()
			tt := get(tm.GetTurnId())
			if tt.ended {
				t.Fatalf("timings after the turn's flushed: %v", tm)
			}
			if tm.GetFirstSequence() == 0 || tm.GetFirstSequence() > tm.GetLastSequence() || tm.GetLastSequence() > lastSeq ||
				(len(tm.GetCharacters()) > 0 && tm.GetLastSequence() != lastSeq) {
				t.Fatalf("timings of chunks %d-%d right after chunk %d", tm.GetFirstSequence(), tm.GetLastSequence(), lastSeq)
			}
			heard := time.Duration(len(tt.audio)/2) * oneSample
			for _, c := range tm.GetCharacters() {
				if c.GetStart().AsDuration() >= heard {
					t.Fatalf("%q at %v, after the %v of audio delivered", c.GetText(), c.GetStart().AsDuration(), heard)
				}
			}
			tt.chars = append(tt.chars, tm.GetCharacters()...)
			tt.words = append(tt.words, tm.GetWords()...)
		}
	}
	return turns
}

// wantTimings checks a turn's timings against its text and audio: the
// characters are the text, each following the last, from 0 to the end
// of the audio (their durations add up to it within one sample: at 24 kHz
// the simulator's characters and frames fall on whole milliseconds, so the
// route's millisecond times are exact and the gateway, which places each
// frame by its exact byte count, must add no error; a drift of even one
// sample per frame would show), and the
// words are the text's words, each from its first character's start to
// its last one's end.
func wantTimings(t *testing.T, tt *turnTimes, text string) {
	t.Helper()
	if tt == nil {
		t.Fatalf("no turn for %q", text)
	}
	if got, err := slngsim.Decode(tt.audio, "linear16", 24000); err != nil || got != text {
		t.Fatalf("audio decodes to %q, %v; want %q", got, err, text)
	}
	var chars strings.Builder
	var next, sum time.Duration
	for _, c := range tt.chars {
		if start := c.GetStart().AsDuration(); start != next {
			t.Fatalf("%q starts at %v, want %v, where the one before ends", c.GetText(), start, next)
		}
		next = c.GetStart().AsDuration() + c.GetDuration().AsDuration()
		sum += c.GetDuration().AsDuration()
		chars.WriteString(c.GetText())
	}
	if chars.String() != text {
		t.Fatalf("timed characters %q, want %q", chars.String(), text)
	}
	audio := time.Duration(len(tt.audio)/2) * time.Second / 24000
	t.Logf("%q: character durations add up to %v, the audio lasts %v", text, sum, audio)
	if d := sum - audio; d > oneSample || d < -oneSample || next != sum {
		t.Fatalf("character durations add up to %v, end at %v; the audio lasts %v", sum, next, audio)
	}
	fields := strings.Fields(text)
	if len(tt.words) != len(fields) {
		t.Fatalf("%d words timed, want %d (%q)", len(tt.words), len(fields), fields)
	}
	i := 0 // the characters of the word
	for w, word := range tt.words {
		for isSpace(tt.chars[i].GetText()) {
			i++
		}
		first, last := tt.chars[i], tt.chars[i+len([]rune(fields[w]))-1]
		i += len([]rune(fields[w]))
		end := last.GetStart().AsDuration() + last.GetDuration().AsDuration()
		if word.GetText() != fields[w] || word.GetStart().AsDuration() != first.GetStart().AsDuration() ||
			word.GetStart().AsDuration()+word.GetDuration().AsDuration() != end {
			t.Fatalf("word %d: %q from %v for %v; want %q from %v to %v", w, word.GetText(), word.GetStart().AsDuration(),
				word.GetDuration().AsDuration(), fields[w], first.GetStart().AsDuration(), end)
		}
	}
}

func startedOf(t *testing.T, resps []*speechv1.SynthesizeResponse) *speechv1.SynthesisStarted {
	t.Helper()
	if len(resps) == 0 || resps[0].GetStarted() == nil {
		t.Fatalf("the stream did not start with started: %s", kinds(resps))
	}
	return resps[0].GetStarted()
}

// TestTimingsOnElevenLabsRoute: turns on the simulator's ElevenLabs route
// with enable_timings get character and word timings, in order with their
// audio, that add up to each turn's audio; each turn counts from its own
// first audio; `started` says the route sends timings.
func TestTimingsOnElevenLabsRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{ProfileFor: slngsim.Realistic}, Config{Catalog: builtinCatalog(t)})
	b := h.synthesize(t, testContext(t), timedConfig(elevenModel, true))
	texts := []string{"Timings, for every character of this turn.", "A second turn: café!"}
	for _, text := range texts {
		b.send(ttsText(text, true))
	}
	resps := closeAndRecv(t, b)
	if got := startedOf(t, resps).GetRouteTimings(); got != speechv1.Sent_SENT_YES {
		t.Errorf("started.route_timings = %v, want SENT_YES", got)
	}
	turns := collectTimings(t, resps)
	for i, text := range texts {
		wantTimings(t, turns[uint64(i+1)], text)
	}
}

// TestTimingsNotSent: without enable_timings, the ElevenLabs route's
// streams get no timings, and nothing else changes; a route that sends no
// alignment gets none with it, and `started` says so (SENT_NO from the
// catalog; SENT_UNSPECIFIED for a model the catalog does not know).
func TestTimingsNotSent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{ProfileFor: slngsim.Realistic}, Config{Catalog: builtinCatalog(t)})
	for _, tc := range []struct {
		model   string
		timings bool
		want    speechv1.Sent
	}{
		{elevenModel, false, speechv1.Sent_SENT_YES},
		{"deepgram/aura:2", true, speechv1.Sent_SENT_NO},
		{"acme/voice:1", true, speechv1.Sent_SENT_UNSPECIFIED},
	} {
		b := h.synthesize(t, testContext(t), timedConfig(tc.model, tc.timings))
		const text = "No timings here."
		b.send(ttsText(text, true))
		resps := closeAndRecv(t, b)
		if got := startedOf(t, resps).GetRouteTimings(); got != tc.want {
			t.Errorf("%s: started.route_timings = %v, want %v", tc.model, got, tc.want)
		}
		turns := collectTimings(t, resps)
		if tt := turns[1]; tt == nil || len(tt.chars)+len(tt.words) > 0 {
			t.Fatalf("%s (enable_timings %v): timings %v", tc.model, tc.timings, tt)
		}
		if got, err := slngsim.Decode(turns[1].audio, "linear16", 24000); err != nil || got != text {
			t.Errorf("%s: audio decodes to %q, %v", tc.model, got, err)
		}
	}
}

// TestTimingsLearntFromTheRoute: a model the catalog does not know starts
// with SENT_UNSPECIFIED; once the gateway has seen its route send
// alignment, later streams' `started` says SENT_YES.
func TestTimingsLearntFromTheRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{ProfileFor: slngsim.Realistic}, Config{})
	for i, want := range []speechv1.Sent{speechv1.Sent_SENT_UNSPECIFIED, speechv1.Sent_SENT_YES} {
		b := h.synthesize(t, testContext(t), timedConfig(elevenModel, true))
		b.send(ttsText("Learnt.", true))
		resps := closeAndRecv(t, b)
		if got := startedOf(t, resps).GetRouteTimings(); got != want {
			t.Errorf("stream %d: started.route_timings = %v, want %v", i+1, got, want)
		}
		wantTimings(t, collectTimings(t, resps)[1], "Learnt.")
	}
}

// TestClearedSaysWhatWasSpoken: a turn cleared in the middle of its audio
// says how much of its text had been spoken: on the ElevenLabs route with
// timings, exactly the characters whose audio was delivered in full (8 ms
// each: the simulator's modem), measured; on another route, the
// delivered audio at 15 characters a second times the speed, estimated.
func TestClearedSaysWhatWasSpoken(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("Spoken words. ", 20)
	for _, tc := range []struct {
		name   string
		cfg    *speechv1.SynthesisConfig
		source speechv1.SpokenSource
		want   func(delivered time.Duration) int
	}{
		{"timings", timedConfig(elevenModel, true), speechv1.SpokenSource_SPOKEN_SOURCE_TIMINGS,
			func(d time.Duration) int { return int((d + time.Millisecond) / (8 * time.Millisecond)) }},
		{"estimate", func() *speechv1.SynthesisConfig {
			c := timedConfig("deepgram/aura:2", true)
			c.Speed = 1.5
			return c
		}(), speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED,
			func(d time.Duration) int { return int(d.Seconds() * 15 * 1.5) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{ProfileFor: slngsim.Realistic, Realtime: true}, Config{Catalog: builtinCatalog(t)})
			b := h.synthesize(t, testContext(t), tc.cfg)
			b.send(ttsText(text, true))
			chunks := 0
			before := b.until(func(r *speechv1.SynthesizeResponse) bool {
				if r.GetAudio() != nil {
					chunks++
				}
				return chunks == 10
			})
			b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
			rest := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetCleared() != nil })
			d := rest[len(rest)-1].GetCleared().GetDelivered()
			delivered := d.GetAudioDuration().AsDuration()
			n := tc.want(delivered)
			if d.GetSpokenSource() != tc.source || int(d.GetSpokenCharacters()) != n || d.GetSpokenText() != text[:n] || n == 0 || n >= len(text) {
				t.Fatalf("after %v of audio: spoken %d characters %q (%v); want %d (%v), part of the text",
					delivered, d.GetSpokenCharacters(), d.GetSpokenText(), d.GetSpokenSource(), n, tc.source)
			}
			if tc.source != speechv1.SpokenSource_SPOKEN_SOURCE_TIMINGS {
				return
			}
			// The caller can tell the same from the timings it got.
			heard := 0
			for _, c := range collectTimings(t, append(before, rest...))[1].chars {
				if c.GetStart().AsDuration()+c.GetDuration().AsDuration() <= delivered {
					heard++
				}
			}
			if heard != n {
				t.Errorf("%d characters of the timings end within the delivered audio, %d said spoken", heard, n)
			}
		})
	}
}
