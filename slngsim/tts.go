package slngsim

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// ttsCmd is a client request queued for the speaker, in arrival order.
type ttsCmd struct {
	kind  string // "text", "flush", "clear", "cancel", "close", "error"
	text  string
	flush bool
	gen   int64 // the abort generation when it arrived
	code  string
	// pronunciation is the dictionary a text message names, "" for none.
	pronunciation string
}

// ttsQueue bounds what a client may queue ahead of the speaker; beyond it
// the reader stops reading, and TCP pushes back on the client.
const ttsQueue = 64

// serveTTS runs a TTS session: this goroutine reads, the speaker goroutine
// synthesizes turns, so that clear, cancel and close take effect while audio
// streams.
func (ss *session) serveTTS(cfg initConfig) {
	cmds := make(chan ttsCmd, ttsQueue)
	var gen atomic.Int64
	speakerDone := make(chan struct{})
	go func() {
		defer close(speakerDone)
		ss.speak(cfg, cmds, &gen)
	}()
	defer func() { <-speakerDone }()
	defer ss.cancel()

	// gotText stops the text timeout, when there is one.
	gotText := func() {}
	if d := ss.profile.TextTimeout; d > 0 {
		// Counted from init, as pipecat-slng measured it, not from ready.
		fired := make(chan struct{})
		t := time.AfterFunc(max(d-time.Since(ss.initAt), 0), func() {
			defer close(fired)
			ss.closeWith(websocket.StatusCode(ss.profile.TextTimeoutClose), "no text received")
		})
		// stop reports whether the timer will never fire; it is asked at
		// the first text and, failing that, when the session ends.
		asked, stopped := false, false
		stop := func() bool {
			if !asked {
				asked, stopped = true, t.Stop()
			}
			return stopped
		}
		defer func() {
			// Joined before the session ends, as every goroutine of the
			// simulator is (Close waits for them).
			if !stop() {
				ss.cancel()
				<-fired
			}
		}()
		gotText = func() { stop() }
	}

	enqueue := func(c ttsCmd) bool {
		select {
		case cmds <- c:
			return true
		case <-ss.ctx.Done():
			return false
		}
	}
	for {
		typ, data, err := ss.read()
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			ss.violation()
			ss.record(func(i *SessionInfo) { i.Received["binary"]++ })
			if !enqueue(ttsCmd{kind: "error", code: "invalid_request", text: "binary frames are not accepted on TTS", gen: gen.Load()}) {
				return
			}
			continue
		}
		m, ok := ss.parseMessage(data)
		if !ok {
			if !enqueue(ttsCmd{kind: "error", code: "invalid_request", text: "invalid JSON", gen: gen.Load()}) {
				return
			}
			continue
		}
		var c ttsCmd
		switch m.Type {
		case "text":
			gotText()
			c = ttsCmd{kind: "text", text: m.Text, flush: m.Flush, pronunciation: dictionaryName(m.Pronunciation)}
		case "flush":
			c = ttsCmd{kind: "flush"}
		case "clear", "cancel", "close":
			// Abort the turn in progress now; the command itself is handled
			// in order, after everything queued before it.
			gen.Add(1)
			c = ttsCmd{kind: m.Type}
		case "keepalive":
			continue
		case "init":
			ss.violation()
			c = ttsCmd{kind: "error", code: "invalid_request", text: "already initialized"}
		default:
			ss.violation()
			c = ttsCmd{kind: "error", code: "invalid_request", text: "unknown message type"}
		}
		c.gen = gen.Load()
		if !enqueue(c) {
			return
		}
		if m.Type == "close" {
			<-speakerDone // the speaker closes the socket
			return
		}
	}
}

// speaker is the state of the goroutine that speaks a TTS session's turns;
// only that goroutine touches it.
type speaker struct {
	cfg     initConfig
	pending strings.Builder
	// pendingFail is a failure a text message of the pending turn caused.
	pendingFail *turnFailure
	// failed is the error of the session's first failed turn: the socket
	// answers every later turn with it.
	failed *turnFailure
	// chunks counts the session's audio chunks: the audio_chunk sequence
	// and the count a chunks fault waits for.
	chunks int
	// frame is the buffer JSON audio frames are built in, reused for every
	// chunk (coder/websocket's Write is done with it when it returns).
	frame      []byte
	turns      int
	dictionary string // the init config's pronunciation dictionary, "" for none
	// sinceFlush counts the texts spoken since the last flush
	// (Profile.SpeakOnText).
	sinceFlush int
	// abandoned is the audio the turn a clear cut had yet to send, for
	// Profile.AudioAfterCleared; nil for none.
	abandoned *abandoned
	// lastAlign is the alignment of the audio LastAudioInEnd holds back
	// for the end of the turn, on routes that send alignment; nil for
	// none.
	lastAlign *alignedEnd
}

// speak executes queued commands in order and synthesizes turns.
func (ss *session) speak(cfg initConfig, cmds <-chan ttsCmd, gen *atomic.Int64) {
	if f := ss.profile.Produces; f.Encoding != "" {
		// The route's one format, whatever init asked for.
		cfg.Encoding, cfg.SampleRate = f.Encoding, f.SampleRate
	}
	sp := &speaker{cfg: cfg, dictionary: dictionaryName(cfg.Pronunciation)}
	rules := ss.profile.MidTurnError
	for {
		var c ttsCmd
		select {
		case c = <-cmds:
		case <-ss.ctx.Done():
			return
		}
		stale := c.gen != gen.Load()
		switch c.kind {
		case "error":
			if !ss.sendError(c.code, c.text) {
				return
			}
		case "text":
			if stale {
				continue // text that a later clear, cancel or close discarded
			}
			sp.pending.WriteString(c.text)
			if sp.pendingFail == nil {
				sp.pendingFail = rules.textFailure(c.text, c.pronunciation)
			}
			if ss.profile.SpeakOnText {
				// Spoken at once, as a turn of its own; the flush gets
				// the end messages alone.
				sp.sinceFlush++
				fail := sp.pendingFail
				if fail == nil {
					fail = rules.turnFailure(c.text, sp.dictionary)
				}
				sp.pending.Reset()
				sp.pendingFail = nil
				if !ss.turn(sp, c.text, fail, c.gen, gen, false) {
					return
				}
			}
			if !c.flush {
				continue
			}
			fallthrough
		case "flush":
			if stale {
				continue
			}
			if ss.profile.SpeakOnText && sp.sinceFlush > 0 {
				sp.sinceFlush = 0
				if sp.failed != nil {
					continue // the text's error frame was the answer
				}
				if !ss.endTurn(sp, "", 0, nil, true) {
					return
				}
				continue
			}
			if sp.pending.Len() == 0 {
				// LK: "without preceding text there is no turn to
				// terminate, and saying so is a protocol violation".
				ss.violation()
				if !ss.sendError("invalid_request", "flush without text") {
					return
				}
				continue
			}
			text := sp.pending.String()
			fail := sp.pendingFail
			if fail == nil {
				fail = rules.turnFailure(text, sp.dictionary)
			}
			sp.pending.Reset()
			sp.pendingFail = nil
			if !ss.turn(sp, text, fail, c.gen, gen, true) {
				return
			}
		case "clear":
			sp.pending.Reset()
			sp.pendingFail = nil
			sp.sinceFlush = 0
			if !ss.answerClear(sp) {
				return
			}
		case "cancel":
			sp.abandoned = nil
			sp.pending.Reset()
			sp.pendingFail = nil
			sp.sinceFlush = 0
		case "close":
			ss.closeWith(websocket.StatusNormalClosure, "")
			return
		}
	}
}

// textFailure is the failure one text message causes, or nil.
func (m MidTurnError) textFailure(text, dictionary string) *turnFailure {
	switch {
	case m.NoLetters && !strings.ContainsFunc(text, unicode.IsLetter):
		return m.failure("provider_error", "Text must contain at least one letter")
	case m.Pronunciation && dictionary != "":
		return m.failure("pronunciation_not_found", "Pronunciation dictionary not found: "+dictionary)
	}
	return nil
}

// turnFailure is the failure a whole turn's text causes in a session whose
// init config names dictionary ("" for none), or nil.
func (m MidTurnError) turnFailure(text, dictionary string) *turnFailure {
	switch {
	case m.Pronunciation && dictionary != "":
		return m.failure("pronunciation_not_found", "Pronunciation dictionary not found: "+dictionary)
	case m.Marker != "" && strings.Contains(text, m.Marker):
		return m.failure("provider_error", "Synthesis failed for this text")
	case m.MaxChars > 0 && utf8.RuneCountInString(text) > m.MaxChars:
		return m.failure("provider_error", fmt.Sprintf("Text is too long. Maximum %d characters per request.", m.MaxChars))
	}
	return nil
}

func (m MidTurnError) failure(code, message string) *turnFailure {
	if m.Code != "" {
		code = m.Code
	}
	if m.Message != "" {
		message = m.Message
	}
	return &turnFailure{code: code, message: message}
}

// dictionaryName names the pronunciation dictionary a `pronunciation`
// value refers to, "" for none. Its shape is not published: a string is
// the name; anything else is named by its JSON, cut short.
func dictionaryName(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var name string
	if json.Unmarshal(raw, &name) == nil {
		return name
	}
	if len(raw) > 64 {
		return string(raw[:64])
	}
	return string(raw)
}

// turn speaks one turn in the session's profile; false means the session
// is over. It stops early, silently, when gen moves past turnGen (clear,
// cancel or close arrived). A turn with a failure stops at its error frame
// and never ends. final says that the turn is the caller's (a flush), not
// one text of it (Profile.SpeakOnText): only those are counted.
func (ss *session) turn(sp *speaker, text string, fail *turnFailure, turnGen int64, gen *atomic.Int64, final bool) bool {
	opts, p := ss.srv.opts, ss.profile
	sp.turns++
	sp.abandoned = nil
	if sp.failed != nil {
		// pipecat-slng: after a mid-turn error the same socket keeps
		// answering with the same error.
		return ss.failTurn(sp, sp.failed)
	}
	segID := fmt.Sprintf("seg_%03d", sp.turns)
	if p.Segments && !ss.writeJSON(map[string]any{"type": "segment_start", "segment_id": segID}) {
		return false
	}
	if opts.FirstAudioLatency > 0 && !sleepCtx(ss.ctx, opts.FirstAudioLatency) {
		return false
	}
	if sp.turns == 1 && ss.maybeFault(PointFirstAudio, 0) {
		return false
	}
	audio := Synthesize(text, sp.cfg.Encoding, sp.cfg.SampleRate)
	bps := bytesPerSample(sp.cfg.Encoding)
	chunkBytes := int(opts.ChunkDuration.Seconds()*float64(sp.cfg.SampleRate)) * bps
	chunkBytes = max(chunkBytes, 16)
	failAt := -1 // the offset of the turn's error frame, after its first chunks
	if fail != nil {
		failAt = p.MidTurnError.AfterChunks * chunkBytes
	}
	dropAt := -1 // the offset at which the connection is lost
	if d := p.MidTurnDrop; d.Marker != "" && strings.Contains(text, d.Marker) {
		dropAt = max(d.AfterChunks, 1) * chunkBytes
	}
	// Audio sent as audio; with LastAudioInEnd, the last chunk goes in the
	// end-of-turn message.
	body, last := audio, []byte(nil)
	if p.LastAudioInEnd && p.TurnEnd != TurnEndClose && fail == nil && len(audio) > 0 {
		cut := (len(audio) - 1) / chunkBytes * chunkBytes
		body, last = audio[:cut], audio[cut:]
	}
	var align *aligner // ElevenLabs' frames tell when each character is heard
	if p.SendsAlignment() {
		align = newAligner(text, sp.cfg.Encoding, sp.cfg.SampleRate)
	}
	start := time.Now()
	var pace *time.Timer
	if opts.Realtime {
		pace = time.NewTimer(time.Hour)
		defer pace.Stop()
	}
	var stamped []byte
	for off := 0; off < len(body); off += chunkBytes {
		if gen.Load() != turnGen {
			if p.AudioAfterCleared > 0 {
				sp.abandoned = &abandoned{audio: body[off:], chunkBytes: chunkBytes}
			}
			return true // aborted: no segment_end, flushed or audio_end
		}
		if off == failAt {
			return ss.failTurn(sp, fail)
		}
		if off == dropAt {
			ss.drop()
			return false
		}
		chunk := body[off:min(off+chunkBytes, len(body))]
		if opts.BenchStamp && len(chunk) >= 8 {
			stamped = append(stamped[:0], chunk...)
			binary.BigEndian.PutUint64(stamped, uint64(time.Now().UnixNano()))
			chunk = stamped
		}
		if !ss.writeAudio(sp, chunk, align, off) {
			return false
		}
		if ss.maybeFault(PointChunks, sp.chunks) {
			return false
		}
		if pace != nil {
			played := time.Duration(AudioDuration(off+len(chunk), sp.cfg.Encoding, sp.cfg.SampleRate) * float64(time.Second))
			if wait := time.Until(start.Add(played)); wait > 0 {
				pace.Reset(wait)
				select {
				case <-pace.C:
				case <-ss.ctx.Done():
					return false
				}
			}
		}
	}
	if gen.Load() != turnGen {
		return true
	}
	if fail != nil {
		return ss.failTurn(sp, fail)
	}
	if last != nil {
		ss.record(func(i *SessionInfo) { i.AudioBytesSent += int64(len(last)) })
		if align != nil {
			sp.lastAlign = align.end(len(body), len(last))
		}
	}
	return ss.endTurn(sp, segID, AudioDuration(len(audio), sp.cfg.Encoding, sp.cfg.SampleRate), last, final)
}
