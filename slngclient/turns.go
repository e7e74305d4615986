package slngclient

import (
	"io"
	"sync"
	"sync/atomic"
)

// SLNG's routes end a TTS turn in different ways (slng-real-clients.md,
// "TTS: how a turn ends" and "Second reading"): some send `flushed` and
// `audio_end`, some one of them (in several spellings, or as an `event`
// or an ElevenLabs isFinal frame), some close the socket after the audio,
// and some speak each text at once and end each text's audio with an end
// signal of its own, before the caller's flush. A TTS session turns all of
// them into exactly one TTSTurnEnd per flushed turn: the caller's flush
// ends the caller's turn. End signals that come before the flush are
// absorbed (TTSTextSpoken says what they mean), a second signal for a turn
// already ended (an echo) is dropped, and the frames of turns a Clear
// discarded are dropped until SLNG acknowledges the clear. The code here
// runs on the reader goroutine, apart from what Text, Flush and Clear
// record under mu.

// endStyle is what a route was seen to send at the end of a turn.
type endStyle uint8

const (
	styleUnknown endStyle = iota
	// styleSingle: one end signal per turn (or a close), so an end signal
	// right after another ends the next turn (one without audio).
	styleSingle
	// styleBoth: more than one end signal per turn (`flushed` and
	// `audio_end`, in either order, or an isFinal frame first): an end
	// signal right after the one that ended a turn is its echo.
	styleBoth
	// stylePerText: the route speaks each text as it comes and ends each
	// text's audio with an end signal, then answers the flush with one
	// more (pipecat-slng 0.5.2: "segment terminals before the input flush
	// do not end the utterance"). A turn of n texts ends at its n+1st end
	// signal.
	stylePerText
)

// lastSignal is what the last end signal did.
type lastSignal uint8

const (
	sigNone    lastSignal = iota // none yet on this session
	sigTurn                      // it ended a flushed turn
	sigText                      // it was absorbed: text not yet flushed was spoken
	sigCleared                   // it acknowledged a clear
)

// turnRec is one turn as the session counts it: the text messages sent
// for it, and the end signals already seen for it.
type turnRec struct{ texts, ends int }

// ttsTurns is one TTS session's account of its turns.
type ttsTurns struct {
	// mu guards everything: the writing side records under it what the
	// reader reads. It is never held across I/O.
	mu sync.Mutex
	// open is the turn receiving text, not yet flushed; queue the flushed
	// turns not yet ended, oldest first. flushed counts every flush sent,
	// ended the turns ended (with a TTSTurnEnd, or discarded by a clear
	// SLNG acknowledged): len(queue) == flushed-ended.
	open           turnRec
	queue          []turnRec
	flushed, ended uint64
	// clears holds, for each Clear not yet acknowledged, the flushes sent
	// before it: every turn up to there is discarded.
	clears []uint64
	// failed: an error frame arrived; the session must not serve another
	// caller.
	failed bool

	// last is what the last end signal did, and audio whether audio came
	// after it: an end signal with no audio since the last one (a bare
	// one) is, unless the route ends each turn with one signal, the same
	// end again. echoed: the turn last ended had its echo.
	last   lastSignal
	audio  bool
	echoed bool
	style  endStyle

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

// sentText records a text message sent for the open turn.
func (t *ttsTurns) sentText() {
	t.mu.Lock()
	t.open.texts++
	t.mu.Unlock()
}

// flush records a flush about to be sent, or reports that there is no text
// to flush (false).
func (t *ttsTurns) flush() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open.texts == 0 {
		return false
	}
	t.queue = append(t.queue, t.open)
	t.open = turnRec{}
	t.flushed++
	return true
}

// clear records a clear about to be sent.
func (t *ttsTurns) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open = turnRec{}
	t.clears = append(t.clears, t.flushed)
}

// quiescent reports that no turn is in flight and nothing waits for an
// answer, as Reusable defines it.
func (t *ttsTurns) quiescent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue) == 0 && len(t.clears) == 0 && t.open.texts == 0 && !t.failed
}

// next decides what f means: up to three events to yield (a frame may
// carry a turn's last audio, its alignment al, nil when not asked for, and
// the turn's end), in evs[:n].
func (t *ttsTurns) next(f frame, al *Alignment) (evs [3]TTSEvent, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.audio != nil && len(t.clears) == 0 {
		// Audio right after the end of a turn, with no echo between: the
		// route ends a turn with one signal.
		if t.last == sigTurn && !t.audio && !t.echoed && t.style != stylePerText {
			t.learn(styleSingle)
		}
		t.audio = true
		evs[n] = TTSEvent{Kind: TTSAudio, Audio: f.audio, Sequence: f.sequence}
		n++
	}
	if al != nil && len(t.clears) == 0 && (f.msg == nil || !f.msg.undecodable) {
		al.AfterAudio = f.audio != nil
		evs[n] = TTSEvent{Kind: TTSAlignment, Alignment: al}
		n++
	}
	if f.msg == nil {
		return evs, n
	}
	if ev, ok := t.message(f); ok {
		evs[n] = ev
		n++
	}
	return evs, n
}

// ignoredTypes are messages LiveKit's SLNG plugin ignores on a TTS socket;
// they are not counted as unknown.
var ignoredTypes = map[string]bool{"metadata": true, "open": true, "control_ack": true, "ready": true}

// message decides what a message means; ok is false to yield nothing.
func (t *ttsTurns) message(f frame) (ev TTSEvent, ok bool) {
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
		t.acknowledge()
		return TTSEvent{Kind: TTSCleared}, true
	}
	if endsTurn(m.Type) {
		if len(t.clears) > 0 {
			// LiveKit takes any end of a turn for the answer to a clear:
			// a route may end the discarded turn instead of sending
			// `cleared`. A `cleared` after it answers nothing.
			t.acknowledge()
			return TTSEvent{Kind: TTSCleared, ByEnd: true}, true
		}
		return t.end(TTSEvent{Kind: TTSTurnEnd, Duration: seconds(m.Duration)})
	}
	switch {
	case len(t.clears) > 0:
		return ev, false // a frame of a discarded turn
	case m.Type == "segment_start":
		return TTSEvent{Kind: TTSSegmentStart, SegmentID: m.SegmentID}, true
	case m.Type == "segment_end":
		return TTSEvent{Kind: TTSSegmentEnd, SegmentID: m.SegmentID}, true
	case !ignoredTypes[m.Type]:
		t.unknown.Add(1)
	}
	return ev, false
}

// acknowledge ends the oldest pending clear: every turn flushed before it
// is over.
func (t *ttsTurns) acknowledge() {
	upTo := t.clears[0]
	t.clears = t.clears[1:]
	if n := upTo - t.ended; upTo > t.ended {
		t.queue = t.queue[min(n, uint64(len(t.queue))):]
		t.ended = upTo
	}
	t.last, t.audio = sigCleared, false
}

// end decides what an end signal means: the end of the oldest flushed
// turn, text spoken before its flush, an echo, or a route's stray end.
// ev is the end as a TTSTurnEnd.
func (t *ttsTurns) end(ev TTSEvent) (TTSEvent, bool) {
	bare := t.last != sigNone && !t.audio
	// The same end again: an echo of the end of a turn or of a clear's
	// answer, or a text's end signal twice. A route that ends each turn
	// with one signal sends none: its bare signal ends a turn without
	// audio.
	repeat := bare && (t.last == sigText || t.style != styleSingle && t.style != stylePerText)
	switch {
	case len(t.queue) > 0 && t.style == stylePerText:
		head := &t.queue[0]
		head.ends++
		if head.ends <= head.texts {
			t.last, t.audio = sigText, false // one text of the turn spoken
			return ev, false
		}
	case repeat:
		if t.last == sigTurn {
			t.echoed = true
			t.learn(styleBoth)
		}
		return ev, false
	case len(t.queue) == 0 && t.open.texts > 0:
		// Text not yet flushed was spoken, and its audio ended: the route
		// speaks each text at once. The caller's flush, not SLNG, ends
		// the caller's turn.
		t.open.ends++
		if !bare {
			t.learn(stylePerText)
		}
		t.last, t.audio = sigText, false
		return TTSEvent{Kind: TTSTextSpoken}, true
	case len(t.queue) == 0:
		// An end with no turn at all: the route broke its own protocol.
		// Passed on, for the consumer to count.
		ev.Unflushed = true
		t.last, t.audio = sigTurn, false
		return ev, true
	}
	t.queue = t.queue[1:]
	t.ended++
	t.last, t.audio, t.echoed = sigTurn, false, false
	return ev, true
}

// atClose is what a normal close means: routes that close after every
// turn (Rime, Cartesia) send no end signal, so a close after audio ends
// the flushed turn, or says that the text not yet flushed was spoken.
func (t *ttsTurns) atClose(termErr error) (TTSEvent, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if termErr != io.EOF || !t.audio || len(t.clears) > 0 {
		return TTSEvent{}, false
	}
	t.audio = false
	switch {
	case len(t.queue) > 0:
		t.queue = t.queue[1:]
		t.ended++
		return TTSEvent{Kind: TTSTurnEnd, ByClose: true}, true
	case t.open.texts > 0:
		return TTSEvent{Kind: TTSTextSpoken, ByClose: true}, true
	}
	return TTSEvent{Kind: TTSTurnEnd, ByClose: true, Unflushed: true}, true
}

// learn records the route's style for this session and the model's later
// sessions. A route seen to speak text before its flush keeps that style.
func (t *ttsTurns) learn(s endStyle) {
	if t.style == s || t.style == stylePerText {
		return
	}
	t.style = s
	t.styles.set(t.model, s)
}

// deliver is the TTS session's sink: see sink.
func (s *TTSSession) deliver(f frame) (handed, ok bool) {
	var al *Alignment
	if (f.align.text != nil || f.align.normalized != nil) && s.alignment.Load() {
		al = readAlignment(f.align)
	}
	evs, n := s.turns.next(f, al)
	for i, ev := range evs[:n] {
		ev.FrameGoesOn = i < n-1
		if !give(s.cn, s.events, ev) {
			// Being closed: what was handed before still holds the
			// frame's slot.
			return handed, s.cn.ctx.Err() == nil
		}
		handed = true
	}
	return handed, true
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
