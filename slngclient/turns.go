package slngclient

import (
	"io"
	"sync"
	"sync/atomic"
)

// SLNG's routes end a TTS turn in different ways (slng-real-clients.md,
// "TTS: how a turn ends"): some send `flushed` and `audio_end`, some only
// one of them, some close the socket after the audio. A TTS session turns
// all of them into exactly one TTSTurnEnd per flushed turn: it counts the
// flushes it sent and the turns that ended, drops the second signal of a
// route that sends both (an echo), and drops the frames of turns a Clear
// discarded. The code here runs on the reader goroutine, apart from what
// Text, Flush and Clear record under mu.

// endSignal is one of the messages with which a route ends a turn.
type endSignal uint8

const (
	endNone endSignal = iota
	endFlushed
	endAudioEnd
)

// endStyle is what a route was seen to send at the end of a turn.
type endStyle uint8

const (
	styleUnknown endStyle = iota
	// styleSingle: one end signal per turn (or a close).
	styleSingle
	// styleBoth: `flushed` and `audio_end`, in either order.
	styleBoth
)

// ttsTurns is one TTS session's account of its turns.
type ttsTurns struct {
	// mu guards what the writing side records, which the reader reads. It
	// is never held across I/O.
	mu sync.Mutex
	// flushed counts the flushes sent; ended the turns that ended (with a
	// TTSTurnEnd, or discarded by a clear that SLNG acknowledged).
	flushed, ended uint64
	// hasText: text was sent since the last flush.
	hasText bool
	// clears holds, for each Clear whose `cleared` has not arrived, the
	// flushes sent before it: every turn up to there is discarded.
	clears []uint64
	// failed: an error frame arrived; the session must not serve another
	// caller.
	failed bool

	// Reader goroutine only.
	//
	// last is the signal that ended the last turn, while no audio has come
	// since: the route's other signal then is an echo of the same turn.
	last  endSignal
	style endStyle
	// audio: audio has come since the last end of a turn.
	audio bool

	// styles is where the style is learnt across sessions, per model.
	styles *endStyles
	model  string
	// unknown counts messages of types a TTS session does not know
	// (Stats.UnknownTypes).
	unknown *atomic.Int64
}

func newTTSTurns(styles *endStyles, model string, unknown *atomic.Int64) *ttsTurns {
	return &ttsTurns{styles: styles, model: model, style: styles.get(model), unknown: unknown}
}

// sentText records text sent for the open turn.
func (t *ttsTurns) sentText() {
	t.mu.Lock()
	t.hasText = true
	t.mu.Unlock()
}

// flush records a flush about to be sent, or reports that there is no text
// to flush (false).
func (t *ttsTurns) flush() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.hasText {
		return false
	}
	t.flushed++
	t.hasText = false
	return true
}

// clear records a clear about to be sent.
func (t *ttsTurns) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hasText = false
	t.clears = append(t.clears, t.flushed)
}

// quiescent reports that no turn is in flight and nothing waits for an
// answer, as Reusable defines it.
func (t *ttsTurns) quiescent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushed == t.ended && len(t.clears) == 0 && !t.hasText && !t.failed
}

// next decides what f means: the event to yield, or nothing (ok false).
func (t *ttsTurns) next(f frame) (ev TTSEvent, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.audio != nil {
		if len(t.clears) > 0 {
			return ev, false // a frame of a discarded turn
		}
		if t.last != endNone {
			t.learn(styleSingle) // audio after one signal: the route sends one
		}
		t.last, t.audio = endNone, true
		return TTSEvent{Kind: TTSAudio, Audio: f.audio, Sequence: f.sequence}, true
	}
	m := f.msg
	if m.undecodable {
		if len(t.clears) > 0 {
			return ev, false // a frame of a discarded turn
		}
		return TTSEvent{Kind: TTSUndecodableAudio}, true
	}
	switch m.Type {
	case "error":
		t.failed = true
		return TTSEvent{Kind: TTSWarning, Err: f.err}, true
	case "cleared":
		if len(t.clears) == 0 {
			return ev, false // not an answer to any clear of ours
		}
		t.ended = max(t.ended, t.clears[0])
		t.clears = t.clears[1:]
		t.last, t.audio = endNone, false
		return TTSEvent{Kind: TTSCleared}, true
	}
	if len(t.clears) > 0 {
		return ev, false // a frame of a discarded turn
	}
	switch m.Type {
	case "segment_start":
		return TTSEvent{Kind: TTSSegmentStart, SegmentID: m.SegmentID}, true
	case "segment_end":
		return TTSEvent{Kind: TTSSegmentEnd, SegmentID: m.SegmentID}, true
	}
	sig := signalOf(m.Type)
	if sig == endNone {
		t.unknown.Add(1)
		return ev, false
	}
	if t.last != endNone && t.last != sig && t.style != styleSingle {
		// The other half of the last turn's end.
		t.last = endNone
		t.learn(styleBoth)
		return ev, false
	}
	if t.last == sig {
		t.learn(styleSingle)
	}
	ev = TTSEvent{Kind: TTSTurnEnd, Duration: seconds(m.Duration)}
	switch {
	case t.flushed > t.ended:
		t.ended++
	case t.audio:
		// The route ended a turn nobody flushed, after its audio.
		ev.Unflushed = true
	default:
		// An end with no turn at all: the route broke its own protocol.
		// Passed on, for the consumer to count.
		ev.Unflushed = true
	}
	t.last, t.audio = sig, false
	return ev, true
}

// atClose is the turn a normal close ends: routes that close after every
// turn (Rime, Cartesia) send no end signal.
func (t *ttsTurns) atClose(termErr error) (TTSEvent, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if termErr != io.EOF || !t.audio || len(t.clears) > 0 {
		return TTSEvent{}, false
	}
	ev := TTSEvent{Kind: TTSTurnEnd, ByClose: true}
	if t.flushed > t.ended {
		t.ended++
	} else {
		ev.Unflushed = true
	}
	t.audio = false
	return ev, true
}

// learn records the route's style for this session and the model's later
// sessions.
func (t *ttsTurns) learn(s endStyle) {
	if t.style == s {
		return
	}
	t.style = s
	t.styles.set(t.model, s)
}

func signalOf(typ string) endSignal {
	switch typ {
	case "flushed":
		return endFlushed
	case "audio_end", "done", "end": // see endsTurn
		return endAudioEnd
	}
	return endNone
}

// deliver is the TTS session's sink: see sink.
func (s *TTSSession) deliver(f frame) (handed, ok bool) {
	ev, yield := s.turns.next(f)
	if !yield {
		return false, true
	}
	if !give(s.cn, s.events, ev) {
		return false, s.cn.ctx.Err() == nil
	}
	return true, true
}

func (s *TTSSession) finish(termErr error) {
	if ev, ok := s.turns.atClose(termErr); ok {
		give(s.cn, s.events, ev)
	}
	close(s.events)
}

// maxEndStyles bounds endStyles: callers may name any valid model.
const maxEndStyles = 1024

// endStyles remembers, per model, how its route ends a turn, so that a new
// session knows whether to expect a second signal.
type endStyles struct {
	mu sync.Mutex
	m  map[string]endStyle
}

func (e *endStyles) get(model string) endStyle {
	if e == nil {
		return styleUnknown
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[model]
}

func (e *endStyles) set(model string, s endStyle) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]endStyle{}
	}
	if _, known := e.m[model]; !known && len(e.m) >= maxEndStyles {
		return
	}
	e.m[model] = s
}
