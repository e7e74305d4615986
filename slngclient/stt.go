package slngclient

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// STTConfig is the init configuration of an STT session.
type STTConfig struct {
	Language string
	// Encoding ("linear16", "mp3", "opus", ...) and SampleRate of the audio
	// sent. Defaults "linear16" and 16000.
	Encoding                                     string
	SampleRate                                   int
	EnablePartials, EnableVAD, EnableDiarization bool
	MinSpeakers, MaxSpeakers                     int
	EnableWordTimestamps                         bool
	// Extra holds model-specific init config keys, passed through; it
	// cannot override the fields above.
	Extra map[string]any
}

// STTEventKind names an STT event.
type STTEventKind int

// STT events.
const (
	STTPartial STTEventKind = iota + 1
	STTFinal
	STTUtteranceEnd
	// STTWarning is an error frame; see TTSWarning.
	STTWarning
)

// STTEvent is one event of an STT session.
type STTEvent struct {
	Kind        STTEventKind
	Transcript  Transcript
	LastWordEnd time.Duration // STTUtteranceEnd; 0 when not reported
	Err         *UpstreamError
}

// Transcript is a partial or final transcript. Times count from the start
// of this session's audio.
type Transcript struct {
	Text       string
	Confidence float64
	Language   string
	// Start is where the transcript starts; HasStart is false when SLNG did
	// not say. The bridge's AsyncAPI shape has no start: when Words are
	// present, their own times still say where the speech was
	// (Words[0].Start, as LiveKit reads them).
	Start    time.Duration
	HasStart bool
	// Duration is the transcript's length; HasDuration is false when SLNG
	// did not say (duration is optional in the AsyncAPI shape). A final
	// with neither start nor duration is still a final.
	Duration    time.Duration
	HasDuration bool
	Words       []Word
	// FromFinalize is true when the final answers a `finalize`.
	// HasFromFinalize is false when the frame had no from_finalize field
	// at all, as on the bridge, which has no finalize correlation: then
	// any final answers an outstanding finalize.
	FromFinalize, HasFromFinalize bool
}

// Word is one recognized word.
type Word struct {
	Word, PunctuatedWord string
	Start, End           time.Duration
	Confidence           float64
	// Speaker is the diarization label; HasSpeaker is false when absent.
	Speaker    int
	HasSpeaker bool
}

// STTSession is an open STT session, with the same concurrency rules as
// TTSSession. The caller must Close or CloseNow it.
type STTSession struct {
	session
	events chan STTEvent
}

// DialSTT opens an STT session: handshake, init, and the wait for ready.
func (c *Client) DialSTT(ctx context.Context, ep Endpoint, cfg STTConfig) (*STTSession, error) {
	config := initConfig(cfg.Extra, cfg.Encoding, cfg.SampleRate, 16000, cfg.Language)
	// SLNG's clients send both spellings of the partials switch.
	config["enable_partials"] = cfg.EnablePartials
	config["enable_partial_transcripts"] = cfg.EnablePartials
	config["enable_vad"] = cfg.EnableVAD
	config["enable_diarization"] = cfg.EnableDiarization
	config["enable_word_timestamps"] = cfg.EnableWordTimestamps
	if cfg.MinSpeakers > 0 {
		config["min_speakers"] = cfg.MinSpeakers
	}
	if cfg.MaxSpeakers > 0 {
		config["max_speakers"] = cfg.MaxSpeakers
	}
	s := &STTSession{events: make(chan STTEvent)}
	_, err := c.dial(ctx, "stt", ep, map[string]any{"type": "init", "config": config}, c.opts.STTKeepalive, func(cn *conn) sink {
		s.session = session{cn}
		return s
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SendAudio sends one chunk of audio as a binary frame (SLNG's bridge
// rejects the JSON audio envelope). It returns ErrEmptyAudio for an empty
// chunk.
func (s *STTSession) SendAudio(ctx context.Context, audio []byte) error {
	if len(audio) == 0 {
		return ErrEmptyAudio
	}
	if err := s.cn.writeTurn(ctx, websocket.MessageBinary, audio); err != nil {
		return err
	}
	s.cn.audioBytes.Add(int64(len(audio)))
	return nil
}

// Finalize asks for the pending speech as a final transcript now.
func (s *STTSession) Finalize(ctx context.Context) error {
	return s.cn.writeTurn(ctx, websocket.MessageText, msgFinalize)
}

// CloseSend tells SLNG no more audio comes. Keep calling Recv: SLNG sends
// the remaining finals, then closes, and Recv returns io.EOF.
func (s *STTSession) CloseSend(ctx context.Context) error {
	return s.cn.writeTurn(ctx, websocket.MessageText, msgClose)
}

// Recv returns the next event, like TTSSession.Recv.
func (s *STTSession) Recv(ctx context.Context) (STTEvent, error) {
	select {
	case ev, ok := <-s.events:
		if ok {
			return ev, nil
		}
		return STTEvent{}, s.cn.termErr // closed after termErr is set
	case <-ctx.Done():
		return STTEvent{}, ctx.Err()
	}
}

// Events is the channel Recv reads; see TTSSession.Events.
func (s *STTSession) Events() <-chan STTEvent { return s.events }

// deliver is the STT session's sink: see sink. A transcript owns its
// memory, so no STT event holds the reader's buffer.
func (s *STTSession) deliver(f frame) (handed, ok bool) {
	ev, yield := s.eventOf(f)
	if !yield {
		return false, true
	}
	return false, give(s.cn, s.events, ev) || s.cn.ctx.Err() == nil
}

func (s *STTSession) finish(error) { close(s.events) }

// eventOf is the event f makes, if any.
func (s *STTSession) eventOf(f frame) (STTEvent, bool) {
	if f.msg == nil {
		s.cn.unknown.Add(1) // audio on an STT session: not ours to use
		return STTEvent{}, false
	}
	m := f.msg
	switch m.Type {
	case "partial_transcript":
		return STTEvent{Kind: STTPartial, Transcript: transcriptOf(m)}, true
	case "final_transcript":
		return STTEvent{Kind: STTFinal, Transcript: transcriptOf(m)}, true
	case "utterance_end":
		return STTEvent{Kind: STTUtteranceEnd, LastWordEnd: seconds(m.LastWordEnd)}, true
	case "error":
		return STTEvent{Kind: STTWarning, Err: f.err}, true
	}
	s.cn.unknown.Add(1)
	return STTEvent{}, false
}

func transcriptOf(m *serverMsg) Transcript {
	t := Transcript{
		Text:       m.Transcript,
		Confidence: m.Confidence,
		Language:   m.Language,
	}
	if m.Start != nil && *m.Start >= 0 && *m.Start <= maxSeconds {
		t.Start, t.HasStart = time.Duration(*m.Start*float64(time.Second)), true
	}
	if m.Duration != nil && *m.Duration >= 0 && *m.Duration <= maxSeconds {
		t.Duration, t.HasDuration = seconds(m.Duration), true
	}
	// A from_finalize of another kind (null, a string) counts as absent.
	switch string(bytes.TrimSpace(m.FromFinalize)) {
	case "true":
		t.FromFinalize, t.HasFromFinalize = true, true
	case "false":
		t.HasFromFinalize = true
	}
	for _, w := range m.Words {
		word := Word{
			Word:           w.Word,
			PunctuatedWord: w.PunctuatedWord,
			Start:          time.Duration(w.Start * float64(time.Second)),
			End:            time.Duration(w.End * float64(time.Second)),
			Confidence:     w.Confidence,
		}
		if sp := rawString(w.Speaker); sp != "" {
			if n, err := strconv.Atoi(sp); err == nil {
				word.Speaker, word.HasSpeaker = n, true
			}
		}
		t.Words = append(t.Words, word)
	}
	return t
}
