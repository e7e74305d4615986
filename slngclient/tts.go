package slngclient

import (
	"context"
	"sync"
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

// TTS events, in the order SLNG documents a turn: segment_start, audio...,
// segment_end, flushed, audio_end. Real routes differ (slng-real-clients.md):
// some send only flushed, some only audio_end, some neither and close the
// socket with 1000 after the audio; segment events may be missing. A caller
// should end a turn on the first TTSFlushed or TTSAudioEnd, or on io.EOF
// after the turn's audio, and ignore the other until the next text.
const (
	// TTSAudio is audio: a binary frame, or JSON audio in any of the
	// shapes decodeFrame reads (audio_chunk, audio, chunk, or no type).
	TTSAudio TTSEventKind = iota + 1
	TTSSegmentStart
	TTSSegmentEnd
	// TTSFlushed is `flushed` (any letter case).
	TTSFlushed
	// TTSCleared is `cleared` (any letter case).
	TTSCleared
	// TTSAudioEnd is `audio_end`, and also `done` and `end`, which
	// LiveKit's SLNG plugin treats as the end of a turn too.
	TTSAudioEnd
	// TTSWarning is an error frame. If the socket closes right after it,
	// Recv's terminal error carries the same code. A route may also send
	// one mid-turn and keep the socket open without finishing the turn.
	TTSWarning
	// TTSUndecodableAudio is a JSON audio message whose payload is not
	// base64 in any form decodeBase64 reads: audio SLNG sent and the
	// caller will not get. It is no error frame and ends nothing; the
	// turn goes on without that audio.
	TTSUndecodableAudio
)

// TTSEvent is one event of a TTS session.
type TTSEvent struct {
	Kind TTSEventKind
	// Audio is valid until the next call to Recv: copy it to keep it.
	Audio []byte
	// Sequence is SLNG's audio_chunk sequence, 0 for binary frames and
	// when not reported.
	Sequence  int64
	SegmentID string
	// Duration is the end-of-turn message's duration, 0 when not
	// reported.
	Duration time.Duration
	Err      *UpstreamError // TTSWarning
}

// TTSSession is an open TTS session. Recv must be called from one goroutine
// at a time; the other methods may be called concurrently with it and with
// each other. The caller must Close or CloseNow it.
type TTSSession struct {
	session

	mu      sync.Mutex
	hasText bool // text sent since the last turn ended
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
	cn, err := c.dial(ctx, "tts", ep, init, c.opts.TTSKeepalive)
	if err != nil {
		return nil, err
	}
	return &TTSSession{session: session{cn}}, nil
}

type textMsg struct {
	Type  string `json:"type"`
	Text  string `json:"text"`
	Flush bool   `json:"flush,omitempty"`
}

// Text sends text for the current turn; with flush, it also ends the turn.
func (s *TTSSession) Text(ctx context.Context, text string, flush bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Set before the write: a flush after a failed write reports the
	// session's failure, not ErrNothingToFlush.
	s.hasText = true
	if err := s.cn.writeJSON(ctx, textMsg{Type: "text", Text: text}); err != nil {
		return err
	}
	if flush {
		return s.flushLocked(ctx)
	}
	return nil
}

// Flush ends the turn: SLNG speaks the text sent since the last turn. It
// returns ErrNothingToFlush, sending nothing, when there is no such text.
func (s *TTSSession) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked(ctx)
}

// flushLocked sends a separate flush message rather than text's flag: per
// SLNG's own clients, a model only sees the flag if it declares one.
func (s *TTSSession) flushLocked(ctx context.Context) error {
	if !s.hasText {
		return ErrNothingToFlush
	}
	if err := s.cn.write(ctx, websocket.MessageText, msgFlush); err != nil {
		return err
	}
	s.hasText = false
	return nil
}

// Clear discards the current turn; SLNG answers with a TTSCleared event
// after the last frame of the discarded turn.
func (s *TTSSession) Clear(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasText = false
	return s.cn.write(ctx, websocket.MessageText, msgClear)
}

// Cancel discards the current turn; SLNG sends no acknowledgement.
func (s *TTSSession) Cancel(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasText = false
	return s.cn.write(ctx, websocket.MessageText, msgCancel)
}

// Recv returns the next event. It blocks until one arrives, the session
// ends, or ctx ends (which leaves the session open). When the session ends
// it returns io.EOF for a normal close by SLNG, ErrSessionClosed after
// Close or CloseNow, or an *UpstreamError.
func (s *TTSSession) Recv(ctx context.Context) (TTSEvent, error) {
	return s.recv(ctx, nil)
}

// RecvFast is Recv, except that while it waits, each audio event is first
// offered to fast, on the session's reader goroutine: an event fast takes
// (true) is done with, and RecvFast keeps waiting; one it leaves (false) is
// returned as Recv would. RecvFast returns only after any call of fast has
// returned, so the caller never runs alongside fast. The event's audio is
// valid during the call only. Audio then reaches its consumer without a
// handoff between goroutines, which costs CPU per frame and, on a busy CPU,
// a wait in the scheduler's queue. fast must not call the session's Recv.
func (s *TTSSession) RecvFast(ctx context.Context, fast func(TTSEvent) bool) (TTSEvent, error) {
	return s.recv(ctx, func(f frame) bool {
		return fast(TTSEvent{Kind: TTSAudio, Audio: f.audio, Sequence: f.sequence})
	})
}

func (s *TTSSession) recv(ctx context.Context, fast func(frame) bool) (TTSEvent, error) {
	for {
		f, err := s.cn.nextFast(ctx, fast)
		if err != nil {
			return TTSEvent{}, err
		}
		if f.audio != nil {
			return TTSEvent{Kind: TTSAudio, Audio: f.audio, Sequence: f.sequence}, nil
		}
		m := f.msg
		if m.undecodable {
			return TTSEvent{Kind: TTSUndecodableAudio}, nil
		}
		switch m.Type {
		case "segment_start":
			return TTSEvent{Kind: TTSSegmentStart, SegmentID: m.SegmentID}, nil
		case "segment_end":
			return TTSEvent{Kind: TTSSegmentEnd, SegmentID: m.SegmentID}, nil
		case "flushed":
			return TTSEvent{Kind: TTSFlushed}, nil
		case "cleared":
			return TTSEvent{Kind: TTSCleared}, nil
		case "audio_end", "done", "end": // see endsTurn
			return TTSEvent{Kind: TTSAudioEnd, Duration: seconds(m.Duration)}, nil
		case "error":
			return TTSEvent{Kind: TTSWarning, Err: f.err}, nil
		default:
			s.cn.unknown.Add(1)
		}
	}
}

// endsTurn reports a message type that ends a TTS turn (or, cleared, its
// discarding): after it, no audio of the turn is in flight.
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
