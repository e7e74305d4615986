package service

import (
	"math"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Timings: with SynthesisConfig.enable_timings, the route's alignment of
// the spoken text with the audio (slngclient's TTSAlignment events) goes
// to the caller as Timings messages, each right after the audio it times,
// its characters and the words they complete placed from the start of the
// turn's first audio. A turn cut short (cleared, cancelled, failed) says
// how much of its text had been spoken: from the timings of the audio
// delivered, or else estimated from that audio's duration. The turn book
// calls what is here; the state is the book's and its turns'
// (streamTimings, turnTimings), owned by the stream's loop like the rest.

// spokenRate is the speaking rate the estimate of the spoken text assumes
// at speed 1.0: 15 characters a second, about 150 words a minute of
// English (five letters and a space a word). Voices and languages differ
// from it both ways; an estimate is marked so.
const spokenRate = 15.0

// alignSlack is how much a route's millisecond times may overshoot the
// gateway's exact count of the audio: a character counts as heard in full
// when it ends no later than the delivered audio plus this.
const alignSlack = time.Millisecond

// timeBase says what a route's alignment times count from.
type timeBase uint8

const (
	// baseUnknown: not yet told; read as baseFrame.
	baseUnknown timeBase = iota
	// baseFrame: from the start of the audio of the frame that carried
	// them, as ElevenLabs documents ("relative to the returned chunk from
	// the model, and not the full audio response") and pipecat reads them.
	baseFrame
	// baseReply: from the start of the reply, as LiveKit's ElevenLabs
	// plugin reads them (it adds no offset per frame).
	baseReply
)

// streamTimings is a stream's part of the timings, in its turn book.
type streamTimings struct {
	// on: the caller asked for timings (enable_timings).
	on bool
	// speed is the config's speed, 0 for the model's default (1.0).
	speed float64
	// base is what the route's times count from, learnt at the first
	// alignment that tells (see place), then kept for the stream.
	base timeBase
}

// turnTimings is a turn's part of the timings.
type turnTimings struct {
	// The turn's latest audio frame: the turn's audio bytes before it,
	// and the sequences of the AudioChunks it became.
	frameStart            uint64
	frameFirst, frameLast uint64
	// aligned: an alignment of the turn came; end is where its last
	// aligned character ends, from the turn's first audio.
	aligned bool
	end     time.Duration
	// The word being built: its text, where it starts and ends, and the
	// sequences of the frames its first and last characters came with.
	word                strings.Builder
	wordStart, wordEnd  time.Duration
	wordFirst, wordLast uint64
	// cursor is how far in the turn's text the aligned characters reach;
	// spoken how far those heard in full do; waiting the characters not
	// yet heard in full, oldest first (usually none or one: a character
	// whose audio goes on in the next frame).
	cursor, spoken int
	waiting        []spokenMark
}

// spokenMark is where an aligned character ends, in the turn's audio and
// in its text.
type spokenMark struct {
	end    time.Duration
	cursor int
}

// noteAudio records the turn's latest audio frame: the turn's audio bytes
// before it and the sequences of its chunks.
func (tt *turnTimings) noteAudio(before, first, last uint64) {
	tt.frameStart, tt.frameFirst, tt.frameLast = before, first, last
}

// timings relays one alignment of turn t as a Timings message, when the
// caller asked for timings, and keeps what the spoken part of the turn
// needs.
func (b *turnBook) timings(t *turn, al *slngclient.Alignment) {
	if !b.tm.on || t == nil || t.failed || al == nil || len(al.Chars) == 0 {
		return
	}
	tt := &t.tm
	msg := &speechv1.Timings{TurnId: t.id, Normalized: al.Normalized, Characters: make([]*speechv1.TimedText, 0, len(al.Chars))}
	var first, last uint64 // the frame's chunks; 0 for an alignment alone
	if al.AfterAudio {
		first, last = tt.frameFirst, tt.frameLast
	}
	msg.FirstSequence, msg.LastSequence = first, last
	base := b.place(t, al)
	text := t.text.String()
	for _, c := range al.Chars {
		start := base + c.Start
		end := start + c.Duration
		msg.Characters = append(msg.Characters, timedText(c.Text, start, c.Duration))
		tt.cursor = matchChar(text, tt.cursor, c.Text)
		tt.waiting = append(tt.waiting, spokenMark{end: end, cursor: tt.cursor})
		tt.end = end
		if isSpace(c.Text) {
			if len(msg.Words) == 0 && tt.word.Len() > 0 && tt.wordFirst != 0 {
				msg.FirstSequence = min(msg.FirstSequence, tt.wordFirst)
			}
			msg.Words = tt.endWord(msg.Words)
			continue
		}
		if tt.word.Len() == 0 {
			tt.wordStart, tt.wordFirst = start, first
		}
		tt.word.WriteString(c.Text)
		tt.wordEnd, tt.wordLast = end, last
	}
	tt.aligned = true
	b.settleSpoken(t)
	b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Timings{Timings: msg}})
}

// place returns where the times of al count from, in turn t's audio.
// ElevenLabs times each frame from its own audio: the turn's audio before
// the frame, which the gateway counts exactly for PCM and G.711; for MP3
// and Opus, whose duration it cannot count, where the turn's last aligned
// character ended, as pipecat reads them. A route that times from the
// start of the reply instead shows it at its second alignment of a turn:
// that one starts where the first ended, not near 0.
func (b *turnBook) place(t *turn, al *slngclient.Alignment) time.Duration {
	tt := &t.tm
	if b.tm.base == baseUnknown && tt.aligned && tt.end > alignSlack {
		if al.Chars[0].Start+alignSlack >= tt.end {
			b.tm.base = baseReply
		} else {
			b.tm.base = baseFrame
		}
	}
	switch {
	case b.tm.base == baseReply:
		return 0
	case !b.clock.ok():
		return tt.end
	case al.AfterAudio:
		return b.clock.duration(int64(tt.frameStart))
	}
	// An alignment that came alone times the audio that follows.
	return b.clock.duration(int64(t.bytes))
}

// endWord ends the word being built, if any, and adds it to words.
func (tt *turnTimings) endWord(words []*speechv1.TimedText) []*speechv1.TimedText {
	if tt.word.Len() == 0 {
		return words
	}
	words = append(words, timedText(tt.word.String(), tt.wordStart, tt.wordEnd-tt.wordStart))
	tt.word.Reset()
	return words
}

// lastWord relays turn t's last word, which only the turn's end
// completes, just before the turn ends.
func (b *turnBook) lastWord(t *turn) {
	tt := &t.tm
	if !b.tm.on || tt.word.Len() == 0 {
		return
	}
	first, last := tt.wordFirst, tt.wordLast
	b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Timings{Timings: &speechv1.Timings{
		TurnId: t.id, Words: tt.endWord(nil), FirstSequence: first, LastSequence: last}}})
}

// settleSpoken moves the spoken part of t's text past the aligned
// characters now heard in full.
func (b *turnBook) settleSpoken(t *turn) {
	tt := &t.tm
	heard := time.Duration(math.MaxInt64) // MP3, Opus: what came, came with delivered audio
	if b.clock.ok() {
		heard = b.clock.duration(int64(t.bytes)) + alignSlack
	}
	i := 0
	for ; i < len(tt.waiting) && tt.waiting[i].end <= heard; i++ {
		tt.spoken = tt.waiting[i].cursor
	}
	tt.waiting = append(tt.waiting[:0], tt.waiting[i:]...)
}

// cutDelivery is what was delivered of turn t, which a clear, a cancel or
// a failure cut short: delivery, and how much of its text had been
// spoken, from its timings when the caller asked for them and the route
// sent them, else estimated from the delivered audio's duration (nothing
// for MP3 and Opus, whose duration is unknown).
func (b *turnBook) cutDelivery(t *turn) *speechv1.TurnDelivery {
	d := b.delivery(t)
	text := t.text.String()
	var n int // bytes of the text spoken
	switch {
	case b.tm.on && t.tm.aligned:
		b.settleSpoken(t)
		n, d.SpokenSource = t.tm.spoken, speechv1.SpokenSource_SPOKEN_SOURCE_TIMINGS
	case b.clock.ok():
		n = estimateSpoken(text, b.clock.duration(int64(t.bytes)), b.tm.speed)
		d.SpokenSource = speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED
	default:
		return d
	}
	n = min(n, len(text))
	d.SpokenText = text[:n]
	d.SpokenCharacters = uint32(utf8.RuneCountInString(d.SpokenText))
	return d
}

// estimateSpoken is how much of text, in bytes, is spoken in audio of
// duration d at speed (0 for 1.0): spokenRate characters a second, whole
// code points, never more than the text.
func estimateSpoken(text string, d time.Duration, speed float64) int {
	if speed <= 0 {
		speed = 1
	}
	n := int(d.Seconds() * spokenRate * speed)
	i := 0
	for ; n > 0 && i < len(text); n-- {
		_, size := utf8.DecodeRuneInString(text[i:])
		i += size
	}
	return i
}

// matchChar moves cursor in text past the aligned character c: past c
// itself; for white space text does not have there, nowhere (a space the
// route added); past white space the route left out, then c; else past
// one code point (a character the route spoke otherwise, as normalized
// text does: then the spoken part is only approximate).
func matchChar(text string, cursor int, c string) int {
	switch rest := text[cursor:]; {
	case c == "" || rest == "":
		return cursor
	case strings.HasPrefix(rest, c):
		return cursor + len(c)
	case isSpace(c):
		return cursor
	}
	skipped := strings.TrimLeftFunc(text[cursor:], unicode.IsSpace)
	if strings.HasPrefix(skipped, c) {
		return len(text) - len(skipped) + len(c)
	}
	_, size := utf8.DecodeRuneInString(text[cursor:])
	return cursor + size
}

// isSpace reports text made of white space only (and not empty).
func isSpace(s string) bool {
	return s != "" && strings.TrimLeftFunc(s, unicode.IsSpace) == ""
}

func timedText(text string, start, d time.Duration) *speechv1.TimedText {
	return &speechv1.TimedText{Text: text, Start: durationpb.New(start), Duration: durationpb.New(d)}
}

// routeTimings is what the stream's `started` says of the route's
// alignment: sent when the gateway saw the model's route send it or the
// catalog says so, not sent when the catalog says that, else not known.
func (c *synthCore) routeTimings() speechv1.Sent {
	if c.srv.timedRoutes.has(c.cfg.Model) {
		return speechv1.Sent_SENT_YES
	}
	if m := c.srv.catalog().Lookup(c.cfg.Model); m != nil {
		return sent(m.Sends.Timings)
	}
	return speechv1.Sent_SENT_UNSPECIFIED
}

// maxTimedRoutes bounds timedRoutes: callers may name any valid model.
const maxTimedRoutes = 1024

// timedRoutes remembers the models whose routes were seen sending
// alignment, so that later streams' `started` says so even where the
// catalog does not. Its zero value is empty; it may be used concurrently.
type timedRoutes struct {
	mu sync.RWMutex
	m  map[string]bool
}

// saw records that model's route sent alignment.
func (r *timedRoutes) saw(model string) {
	if r.has(model) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]bool{}
	}
	if len(r.m) < maxTimedRoutes {
		r.m[model] = true
	}
}

func (r *timedRoutes) has(model string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[model]
}
