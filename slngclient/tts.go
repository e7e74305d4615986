package slngclient

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// TTSConfig is the init configuration of a TTS session.
type TTSConfig struct {
	// Voice is the model's voice id; empty lets the model choose.
	Voice string
	// Encoding ("linear16", "mp3", "opus", "mulaw", "alaw") and SampleRate
	// are always sent: some models default to MP3 otherwise. Defaults
	// "linear16" and 24000.
	Encoding   string
	SampleRate int
	Language   string  // optional
	Speed      float64 // optional; 0 = the model's default
	// Extra holds model-specific init config keys, passed through; it
	// cannot override the fields above.
	Extra map[string]any
}

// TTSEventKind names a TTS event.
type TTSEventKind int

// TTS events. SLNG documents a turn as segment_start, audio...,
// segment_end, flushed, audio_end; real routes differ
// (slng-real-clients.md): some send only flushed, some only audio_end,
// some neither and close the socket with 1000 after the audio, some end
// each text's audio before the flush; segment events may be missing. A
// session hides that: it yields exactly one TTSTurnEnd per flushed turn,
// whatever the route sends, and never ends a turn before its flush.
const (
	// TTSAudio is audio: a binary frame, or JSON audio in any of the
	// shapes decodeFrame reads (audio_chunk, audio, chunk, no type, or
	// the last audio an end of a turn carries).
	TTSAudio TTSEventKind = iota + 1
	TTSSegmentStart
	TTSSegmentEnd
	// TTSTurnEnd ends the oldest flushed turn: its end signal (`flushed`,
	// `audio_end`, `done` or `end` in any letter case, an `event` frame
	// naming the end, or an untyped isFinal frame), or a normal close
	// after its audio (ByClose). A second signal for the same turn is
	// dropped; on a route that ends each text's audio, so are the signals
	// of the turn's texts before the one that answers its flush.
	TTSTurnEnd
	// TTSCleared acknowledges a Clear: `cleared` (any letter case) or,
	// as LiveKit takes it, an end of a turn (ByEnd); every frame of the
	// discarded turns came before it and was dropped.
	TTSCleared
	// TTSWarning is an error frame. If the socket closes right after it,
	// Recv's terminal error carries the same code. A route may also send
	// one mid-turn and keep the socket open without finishing the turn.
	TTSWarning
	// TTSUndecodableAudio is a JSON audio message whose payload is not
	// base64 in any form decodeBase64 reads: audio SLNG sent and the
	// caller will not get. It is no error frame and ends nothing; the
	// turn goes on without that audio.
	TTSUndecodableAudio
	// TTSTextSpoken says that the route ended the audio of the text sent
	// so far before any flush asked for it (an end signal, or a normal
	// close after the audio: ByClose), as routes that speak each text at
	// once do. The turn is not over: its flush ends it.
	TTSTextSpoken
	// TTSAlignment is the route's timing of the characters spoken in a
	// frame's audio (Alignment), yielded right after that audio's
	// TTSAudio, or alone for a frame that carried no audio; only when the
	// consumer asked for it (SetAlignment), and never for the frames of a
	// discarded turn or audio that could not be decoded.
	TTSAlignment
)

// TTSEvent is one event of a TTS session.
type TTSEvent struct {
	Kind TTSEventKind
	// Audio is valid until the next event is received: copy it to keep
	// it.
	Audio []byte
	// Sequence is SLNG's audio_chunk sequence, 0 for binary frames and
	// when not reported.
	Sequence  int64
	SegmentID string
	// Duration is the end-of-turn message's duration, 0 when not
	// reported (TTSTurnEnd).
	Duration time.Duration
	// ByClose: the socket's normal close after audio ended the turn
	// (TTSTurnEnd) or the text's audio (TTSTextSpoken); the session's end
	// follows.
	ByClose bool
	// ByEnd: an end of a turn, not `cleared`, acknowledged the clear
	// (TTSCleared).
	ByEnd bool
	// Unflushed: the route ended a turn when none was in flight, with no
	// text sent since the last one (TTSTurnEnd): it broke its own
	// protocol.
	Unflushed bool
	Err       *UpstreamError // TTSWarning
	// Alignment is the event's own (TTSAlignment).
	Alignment *Alignment
	// FrameGoesOn: more events of the same SLNG frame follow at once (an
	// audio's alignment, the end of the turn it carried). A consumer that
	// must see a frame whole, as a clear's count of the characters spoken
	// must, takes them before anything else.
	FrameGoesOn bool
}

// TTSSession is an open TTS session. Receive its events with Recv, or from
// Events, in one goroutine at a time; the other methods may be called
// concurrently with that and with each other, but Text, Flush and Clear
// keep their order only when one goroutine calls them. The caller must
// Close or CloseNow it.
type TTSSession struct {
	session
	turns  *ttsTurns
	events chan TTSEvent
	// alignment: the consumer wants TTSAlignment events (SetAlignment).
	alignment atomic.Bool
}

// DialTTS opens a TTS session: handshake, init, and the wait for ready. ctx
// bounds the dial only. Errors are *UpstreamError, ErrInvalidModel, or the
// ctx's error.
func (c *Client) DialTTS(ctx context.Context, ep Endpoint, cfg TTSConfig) (*TTSSession, error) {
	config := initConfig(cfg.Extra, cfg.Encoding, cfg.SampleRate, 24000, cfg.Language)
	if cfg.Speed != 0 {
		config["speed"] = cfg.Speed
	}
	init := map[string]any{"type": "init", "model": ep.Model, "config": config}
	if cfg.Voice != "" {
		init["voice"] = cfg.Voice
	}
	s := &TTSSession{events: make(chan TTSEvent)}
	_, err := c.dial(ctx, "tts", ep, init, c.opts.TTSKeepalive, func(cn *conn) sink {
		s.session = session{cn}
		s.turns = newTTSTurns(&c.styles, ep.Model, &cn.unknown)
		return s
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

type textMsg struct {
	Type  string `json:"type"`
	Text  string `json:"text"`
	Flush bool   `json:"flush,omitempty"`
}

// Text sends text for the current turn; with flush, it also ends the turn.
func (s *TTSSession) Text(ctx context.Context, text string, flush bool) error {
	// Set before the write: a flush after a failed write reports the
	// session's failure, not ErrNothingToFlush.
	s.turns.sentText()
	if err := s.cn.writeJSON(ctx, textMsg{Type: "text", Text: text}); err != nil {
		return err
	}
	if flush {
		return s.flushNow(ctx)
	}
	return nil
}

// Flush ends the turn: SLNG speaks the text sent since the last turn. It
// returns ErrNothingToFlush, sending nothing, when there is no such text.
func (s *TTSSession) Flush(ctx context.Context) error {
	return s.flushNow(ctx)
}

// flushNow sends a separate flush message rather than text's flag: per
// SLNG's own clients, a model only sees the flag if it declares one. The
// turn is counted before the write, so that the reader always finds the
// turn SLNG's answer ends.
func (s *TTSSession) flushNow(ctx context.Context) error {
	if !s.turns.flush() {
		return ErrNothingToFlush
	}
	return s.cn.write(ctx, websocket.MessageText, msgFlush)
}

// Clear discards the current turn and every flushed one not yet ended;
// SLNG answers with `cleared` (some routes with an end of a turn instead)
// after the last frame of the discarded turns, which the session drops,
// and Recv yields TTSCleared. Some routes do not answer at all: the
// caller decides how long to wait (LiveKit waits 1 s, then discards the
// session).
func (s *TTSSession) Clear(ctx context.Context) error {
	s.turns.clear()
	return s.cn.write(ctx, websocket.MessageText, msgClear)
}

// SetAlignment says whether the session reads the alignment routes send
// with their audio and yields it as TTSAlignment events. Off by default,
// when the alignment is skipped unread, at no cost. It takes effect from
// the next frame read, and may be called at any time, concurrently with
// anything: a consumer that takes a session someone else used says what
// it wants.
func (s *TTSSession) SetAlignment(on bool) { s.alignment.Store(on) }

// Reusable reports whether the session may serve another caller as it is:
// open, every flushed turn ended, no text waiting for a flush, no clear
// waiting for `cleared`, and no error frame seen. A route's second
// end-of-turn signal for the last turn may still come: the session drops
// it whoever uses it next.
func (s *TTSSession) Reusable() bool {
	if s.Err() != nil || s.cn.closedBy.Load() {
		return false
	}
	return s.turns.quiescent()
}

// Recv returns the next event. It blocks until one arrives, the session
// ends, or ctx ends (which leaves the session open). When the session ends
// it returns io.EOF for a normal close by SLNG, ErrSessionClosed after
// Close or CloseNow, or another error (an *UpstreamError, or a
// *HeldBackError when the consumer had held the reader back).
func (s *TTSSession) Recv(ctx context.Context) (TTSEvent, error) {
	select {
	case ev, ok := <-s.events:
		if ok {
			return ev, nil
		}
		return TTSEvent{}, s.cn.termErr // closed after termErr is set
	case <-ctx.Done():
		return TTSEvent{}, ctx.Err()
	}
}

// Events is the channel Recv reads, for a consumer that waits on several
// things at once. It is closed when the session has ended and every event
// before the end was received; Err then says why it ended. An event's
// audio is valid until the next receive.
func (s *TTSSession) Events() <-chan TTSEvent { return s.events }

// endsTurn reports a message type, as normalizeType leaves it, that ends
// a TTS turn (or, cleared, its discarding): after it, no audio of the turn
// is in flight.
func endsTurn(typ string) bool {
	switch typ {
	case "flushed", "cleared", "audio_end", "done", "end":
		return true
	}
	return false
}

// maxSeconds bounds the times SLNG reports (about 11.5 days); larger ones
// are nonsense, and far larger ones would overflow a time.Duration.
const maxSeconds = 1e6

// seconds converts SLNG's seconds to a duration, 0 when absent, negative
// or beyond maxSeconds.
func seconds(f *float64) time.Duration {
	if f == nil || *f <= 0 || *f > maxSeconds {
		return 0
	}
	return time.Duration(*f * float64(time.Second))
}
