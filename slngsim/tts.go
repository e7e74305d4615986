package slngsim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// ttsCmd is a client request queued for the speaker, in arrival order.
type ttsCmd struct {
	kind  string // "text", "flush", "clear", "cancel", "close", "error"
	text  string
	flush bool
	gen   int64 // the abort generation when it arrived
	code  string
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
	if d := ss.srv.opts.TTSTextTimeout; d > 0 {
		t := time.AfterFunc(d, func() {
			ss.closeWith(websocket.StatusCode(ss.srv.opts.TTSTextTimeoutClose), "no text received")
		})
		defer t.Stop()
		gotText = func() { t.Stop() }
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
		var m clientMsg
		if err := json.Unmarshal(data, &m); err != nil {
			ss.violation()
			if !enqueue(ttsCmd{kind: "error", code: "invalid_request", text: "invalid JSON", gen: gen.Load()}) {
				return
			}
			continue
		}
		ss.record(func(i *SessionInfo) {
			i.Received[m.Type]++
			if m.Type == "keepalive" {
				i.KeepalivesHeard++
			}
		})
		var c ttsCmd
		switch m.Type {
		case "text":
			gotText()
			c = ttsCmd{kind: "text", text: m.Text, flush: m.Flush}
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

// speak executes queued commands in order and synthesizes turns.
func (ss *session) speak(cfg initConfig, cmds <-chan ttsCmd, gen *atomic.Int64) {
	var pending strings.Builder
	seq := 0 // audio_chunk sequence, per session
	chunks := 0
	turns := 0
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
			pending.WriteString(c.text)
			if !c.flush {
				continue
			}
			fallthrough
		case "flush":
			if stale {
				continue
			}
			if pending.Len() == 0 {
				// LK: "without preceding text there is no turn to
				// terminate, and saying so is a protocol violation".
				ss.violation()
				if !ss.sendError("invalid_request", "flush without text") {
					return
				}
				continue
			}
			text := pending.String()
			pending.Reset()
			turns++
			if !ss.turn(cfg, text, turns, c.gen, gen, &seq, &chunks) {
				return
			}
		case "clear":
			pending.Reset()
			if !ss.writeJSON(map[string]any{"type": "cleared"}) {
				return
			}
			ss.record(func(i *SessionInfo) { i.ClearsAnswered++ })
		case "cancel":
			pending.Reset()
		case "close":
			ss.closeWith(websocket.StatusNormalClosure, "")
			return
		}
	}
}

// turn speaks one turn; false means the session is over. It stops early,
// silently, when gen moves past turnGen (clear, cancel or close arrived).
func (ss *session) turn(cfg initConfig, text string, n int, turnGen int64, gen *atomic.Int64, seq, chunks *int) bool {
	opts := ss.srv.opts
	segID := fmt.Sprintf("seg_%03d", n)
	if !ss.writeJSON(map[string]any{"type": "segment_start", "segment_id": segID}) {
		return false
	}
	if opts.FirstAudioLatency > 0 && !sleepCtx(ss.ctx, opts.FirstAudioLatency) {
		return false
	}
	if n == 1 && ss.maybeFault(PointFirstAudio, 0) {
		return false
	}
	audio := Synthesize(text, cfg.Encoding, cfg.SampleRate)
	bps := bytesPerSample(cfg.Encoding)
	chunkBytes := int(opts.ChunkDuration.Seconds()*float64(cfg.SampleRate)) * bps
	chunkBytes = max(chunkBytes, 16)
	start := time.Now()
	var pace *time.Timer
	if opts.Realtime {
		pace = time.NewTimer(time.Hour)
		defer pace.Stop()
	}
	var frame []byte
	for off := 0; off < len(audio); off += chunkBytes {
		if gen.Load() != turnGen {
			return true // aborted: no segment_end, flushed or audio_end
		}
		chunk := audio[off:min(off+chunkBytes, len(audio))]
		if opts.BenchStamp && len(chunk) >= 8 {
			frame = append(frame[:0], chunk...)
			binary.BigEndian.PutUint64(frame, uint64(time.Now().UnixNano()))
			chunk = frame
		}
		*seq++
		var err error
		if opts.AudioForm == AudioJSON {
			b, _ := json.Marshal(map[string]any{"type": "audio_chunk", "data": base64.StdEncoding.EncodeToString(chunk), "sequence": *seq})
			err = ss.ws.Write(ss.ctx, websocket.MessageText, b)
		} else {
			err = ss.ws.Write(ss.ctx, websocket.MessageBinary, chunk)
		}
		if err != nil || ss.closing.Load() {
			return false
		}
		ss.record(func(i *SessionInfo) { i.AudioBytesSent += int64(len(chunk)) })
		*chunks++
		if ss.maybeFault(PointChunks, *chunks) {
			return false
		}
		if pace != nil {
			sent := time.Duration(AudioDuration(off+len(chunk), cfg.Encoding, cfg.SampleRate) * float64(time.Second))
			if wait := time.Until(start.Add(sent)); wait > 0 {
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
	dur := AudioDuration(len(audio), cfg.Encoding, cfg.SampleRate)
	for i, m := range []map[string]any{
		{"type": "segment_end", "segment_id": segID},
		{"type": "flushed"},
		{"type": "audio_end", "duration": dur},
	} {
		if i == 2 {
			// Counted before audio_end goes out, so that a client that has
			// seen audio_end finds the turn counted.
			ss.srv.stats.turns.Add(1)
			ss.record(func(i *SessionInfo) { i.TurnsCompleted++ })
		}
		if !ss.writeJSON(m) {
			return false
		}
	}
	if opts.CloseAfterAudioEnd(ss.info.Model) {
		ss.closeWith(websocket.StatusNormalClosure, "turn complete")
		return false
	}
	return true
}
