package slngsim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// session is one simulated SLNG WebSocket session.
type session struct {
	// initAt is when the client's init arrived.
	initAt    time.Time
	srv       *Server
	fault     Fault
	profile   Profile // resolved at the handshake, with defaults
	requestID string
	// reaps carries Server.Reap's requests to the watchdog, which closes
	// the session; one pending request is enough.
	reaps chan reapRequest

	ctx    context.Context
	cancel context.CancelFunc
	ws     *websocket.Conn

	// lastFrame is when the client last sent a text or binary frame (Unix
	// nanoseconds); the idle timer runs from it.
	lastFrame atomic.Int64
	fired     atomic.Bool // the fault has fired
	closing   atomic.Bool // a close has been started; stop writing

	mu   sync.Mutex
	info SessionInfo
}

// reapRequest asks the watchdog to reap the session.
type reapRequest struct {
	code             websocket.StatusCode
	frame            bool // send an error frame first
	errCode, message string
}

// clientMsg is any message a client sends.
type clientMsg struct {
	Type          string          `json:"type"`
	Text          string          `json:"text"`
	Flush         bool            `json:"flush"`
	Data          string          `json:"data"`
	Voice         string          `json:"voice"`
	Config        json.RawMessage `json:"config"`
	Pronunciation json.RawMessage `json:"pronunciation"`
}

// initConfig is the part of `init.config` the simulator acts on.
type initConfig struct {
	SampleRate              int     `json:"sample_rate"`
	Encoding                string  `json:"encoding"`
	Language                string  `json:"language"`
	EnablePartials          *bool   `json:"enable_partials"`
	EnablePartialTranscript *bool   `json:"enable_partial_transcripts"`
	EnableVAD               bool    `json:"enable_vad"`
	EnableDiarization       bool    `json:"enable_diarization"`
	EnableWordTimestamps    bool    `json:"enable_word_timestamps"`
	MaxSpeakers             int     `json:"max_speakers"`
	Speed                   float64 `json:"speed"`
	// Pronunciation names a pronunciation dictionary (some TTS routes);
	// its shape is not published, so any JSON value is taken.
	Pronunciation json.RawMessage `json:"pronunciation"`

	// voice is the init message's voice (not part of its config).
	voice string
}

func (ss *session) snapshot() SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	info := ss.info
	info.Received = make(map[string]int, len(ss.info.Received))
	for k, v := range ss.info.Received {
		info.Received[k] = v
	}
	return info
}

func (ss *session) record(f func(*SessionInfo)) {
	ss.mu.Lock()
	f(&ss.info)
	ss.mu.Unlock()
}

func (ss *session) violation() {
	ss.srv.stats.violations.Add(1)
	ss.record(func(i *SessionInfo) { i.ProtocolErrors++ })
}

// run serves the session until it ends. The watchdog (idle timer and
// maximum duration) runs beside it and is joined before run returns.
func (ss *session) run() {
	defer func() {
		ss.cancel()
		ss.ws.CloseNow()
		ss.record(func(i *SessionInfo) { i.Open = false })
	}()
	ss.ws.SetReadLimit(1 << 20)
	ss.lastFrame.Store(time.Now().UnixNano())
	watchdogDone := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		ss.watchdog()
	}()
	defer func() { <-watchdogDone }()
	defer ss.cancel() // stops the watchdog first

	cfg, ok := ss.awaitInit()
	ss.initAt = time.Now()
	if !ok {
		return
	}
	if ss.srv.opts.ReadyLatency > 0 && !sleepCtx(ss.ctx, ss.srv.opts.ReadyLatency) {
		return
	}
	if ss.fault.Kind != "" && ss.fault.Point == PointInit {
		// A fault that answers init replaces ready. After a non-fatal one
		// the socket stays open, but the session never becomes ready.
		if !ss.maybeFault(PointInit, 0) {
			for {
				if _, _, err := ss.read(); err != nil {
					return
				}
			}
		}
		return
	}
	if v := ss.profile.RefusedVoice; v != "" && ss.info.Kind == "tts" && cfg.voice == v {
		// The provider refuses the voice: SLNG answers init with its
		// error, and no ready.
		ss.fatal("provider_error", "voice "+v+" not found", websocket.StatusInternalError)
		return
	}
	ready := map[string]any{"type": "ready", "session_id": ss.info.ID, "slng_request_id": ss.requestID}
	if ss.info.Kind == "tts" && ss.profile.PartialText {
		ready["accepts_partial_text"] = true
	}
	if ss.fault.Kind == FaultUnknown {
		// A correct client ignores unknown types even before `ready`.
		ss.writeJSON(map[string]any{"type": "sim_unknown_event", "detail": "before ready"})
	}
	if !ss.writeJSON(ready) {
		return
	}
	if ss.maybeFault(PointReady, 0) {
		return
	}
	if ss.info.Kind == "tts" {
		ss.serveTTS(cfg)
	} else {
		ss.serveSTT(cfg)
	}
}

// awaitInit reads until a valid `init`. TTS tolerates other messages before
// it (answering config_error); STT closes 1008 on audio before init, as SLNG
// does.
func (ss *session) awaitInit() (initConfig, bool) {
	for {
		typ, data, err := ss.read()
		if err != nil {
			return initConfig{}, false
		}
		if typ == websocket.MessageBinary {
			ss.violation()
			ss.closeWith(websocket.StatusPolicyViolation, "audio before init")
			return initConfig{}, false
		}
		m, ok := ss.parseMessage(data)
		if !ok {
			ss.sendError("invalid_request", "invalid JSON")
			continue
		}
		if m.Type != "init" {
			ss.violation()
			if ss.info.Kind == "stt" && m.Type == "audio" {
				ss.closeWith(websocket.StatusPolicyViolation, "audio before init")
				return initConfig{}, false
			}
			ss.sendError("config_error", "init must be the first message")
			continue
		}
		ss.record(func(i *SessionInfo) { i.Init = append(json.RawMessage(nil), data...) })
		var cfg initConfig
		if len(m.Config) > 0 {
			if err := json.Unmarshal(m.Config, &cfg); err != nil {
				ss.fatal("config_error", "config is not an object", websocket.StatusPolicyViolation)
				return initConfig{}, false
			}
		}
		cfg.voice = m.Voice
		if msg := checkConfig(ss.info.Kind, &cfg); msg != "" {
			ss.fatal("config_error", msg, websocket.StatusPolicyViolation)
			return initConfig{}, false
		}
		return cfg, true
	}
}

// parseMessage decodes a client's text frame and counts it by type in
// SessionInfo; ok is false, and a protocol violation counted, when the
// frame is not JSON. The caller answers that in its own order.
func (ss *session) parseMessage(data []byte) (m clientMsg, ok bool) {
	if err := json.Unmarshal(data, &m); err != nil {
		ss.violation()
		return clientMsg{}, false
	}
	ss.record(func(i *SessionInfo) {
		i.Received[m.Type]++
		if m.Type == "keepalive" {
			i.KeepalivesHeard++
		}
	})
	return m, true
}

// sttEncodings are the encodings SLNG's STT bridge accepts.
var sttEncodings = map[string]bool{"linear16": true, "mp3": true, "opus": true}

// checkConfig validates and defaults an init config; it returns a problem
// or "".
func checkConfig(kind string, cfg *initConfig) string {
	if cfg.Encoding == "" {
		// Some SLNG models default to MP3; the simulator defaults to PCM but
		// real clients must always say.
		cfg.Encoding = "linear16"
	}
	if cfg.Encoding == "pcm" {
		cfg.Encoding = "linear16"
	}
	if bytesPerSample(cfg.Encoding) == 0 {
		return "unsupported encoding " + cfg.Encoding
	}
	if kind == "stt" && !sttEncodings[cfg.Encoding] {
		// The STT bridge takes these three only, telephony audio not
		// among them (pipecat-slng 0.5.0; SLNG's STT bridge reference).
		return "unsupported encoding " + cfg.Encoding + ": use linear16, mp3 or opus"
	}
	if cfg.SampleRate == 0 {
		cfg.SampleRate = 24000
		if kind == "stt" {
			cfg.SampleRate = 16000
		}
	}
	if cfg.SampleRate < 8000 || cfg.SampleRate > 48000 {
		return "sample_rate must be 8000-48000"
	}
	return ""
}

// read reads one client message and restarts the idle timer.
func (ss *session) read() (websocket.MessageType, []byte, error) {
	typ, data, err := ss.ws.Read(ss.ctx)
	if err != nil {
		return typ, nil, err
	}
	now := time.Now()
	ss.lastFrame.Store(now.UnixNano())
	ss.record(func(i *SessionInfo) { i.LastClientFrame = now })
	return typ, data, nil
}

// watchdog reaps the session: on the idle timeout, at the maximum
// connection duration (the shorter of Options.MaxConnectionDuration and
// Profile.ReapAfter), and when Server.Reap asks. Every reap follows the
// profile's ReapCode and ReapErrorFrame, except Server.Reap's own.
func (ss *session) watchdog() {
	opts := ss.srv.opts
	maxDur := opts.MaxConnectionDuration
	if after := ss.profile.ReapAfter; after > 0 && (maxDur <= 0 || after < maxDur) {
		maxDur = after
	}
	var maxAge <-chan time.Time
	if maxDur > 0 {
		t := time.NewTimer(maxDur)
		defer t.Stop()
		maxAge = t.C
	}
	reap := func(errCode, msg string) {
		ss.reap(reapRequest{code: websocket.StatusCode(ss.profile.ReapCode), frame: ss.profile.ReapErrorFrame,
			errCode: errCode, message: msg})
	}
	var idle *time.Timer
	var idleC <-chan time.Time
	if opts.IdleTimeout > 0 {
		idle = time.NewTimer(opts.IdleTimeout)
		defer idle.Stop()
		idleC = idle.C
	}
	for {
		select {
		case <-ss.ctx.Done():
			return
		case r := <-ss.reaps:
			ss.reap(r)
			return
		case <-maxAge:
			reap("max_connection_duration_exceeded", "maximum connection duration reached")
			return
		case <-idleC:
			last := time.Unix(0, ss.lastFrame.Load())
			if left := opts.IdleTimeout - time.Since(last); left > 0 {
				idle.Reset(left)
				continue
			}
			reap("idle_timeout_exceeded", "no data received within the idle timeout")
			return
		}
	}
}

// writeJSON sends one JSON message; false means the session is over.
func (ss *session) writeJSON(v any) bool {
	if ss.closing.Load() {
		return false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return ss.ws.Write(ss.ctx, websocket.MessageText, b) == nil
}

// sendError sends an error frame in the profile's ErrorShape.
func (ss *session) sendError(code, msg string) bool {
	return ss.writeJSON(errorFrame(ss.profile.ErrorShape, code, msg))
}

// reap ends the session as SLNG's housekeeping does: an optional error
// frame, then a close frame.
func (ss *session) reap(r reapRequest) {
	ss.srv.log.Debug("reaping session", zap.String("session_id", ss.info.ID), zap.String("reason", r.errCode),
		zap.Int("close_code", int(r.code)), zap.Bool("error_frame", r.frame))
	if r.frame {
		ss.sendError(r.errCode, r.message)
	}
	ss.closeWith(r.code, r.errCode)
}

// fatal sends an error frame and closes with code.
func (ss *session) fatal(code, msg string, closeCode websocket.StatusCode) {
	ss.sendError(code, msg)
	ss.closeWith(closeCode, code)
}

// closeWith closes the socket with a close frame. It does not wait for the
// client's answer beyond coder/websocket's own bound.
func (ss *session) closeWith(code websocket.StatusCode, reason string) {
	if !ss.closing.CompareAndSwap(false, true) {
		return
	}
	ss.record(func(i *SessionInfo) { i.CloseCode = int(code) })
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = ss.ws.Close(code, reason)
	ss.cancel()
}

// drop cuts the connection without a close frame.
func (ss *session) drop() {
	ss.closing.Store(true)
	ss.ws.CloseNow()
	ss.cancel()
}

// maybeFault fires the session's fault if it is due at point (n counts
// chunks for PointChunks). It reports whether the session must end.
func (ss *session) maybeFault(point FaultPoint, n int) bool {
	f := ss.fault
	if f.Kind == "" || f.Kind == FaultHandshake || f.Point != point || ss.fired.Load() {
		return false
	}
	if point == PointChunks && n != f.After {
		return false
	}
	ss.fired.Store(true)
	ss.srv.log.Debug("injecting fault", zap.String("session_id", ss.info.ID), zap.String("kind", string(f.Kind)),
		zap.String("code", f.Code), zap.String("point", string(point)))
	switch f.Kind {
	case FaultError:
		msg := f.Message
		if msg == "" {
			msg = "injected " + f.Code
		}
		ss.sendError(f.Code, msg)
		if f.Fatal {
			code := websocket.StatusCode(f.CloseCode)
			if code == 0 {
				code = websocket.StatusInternalError
			}
			ss.closeWith(code, f.Code)
			return true
		}
	case FaultDrop:
		ss.drop()
		return true
	case FaultClose:
		ss.closeWith(websocket.StatusCode(f.CloseCode), "injected close")
		return true
	case FaultStall:
		<-ss.ctx.Done()
		return true
	case FaultMalformed:
		_ = ss.ws.Write(ss.ctx, websocket.MessageText, []byte(`{"type":"audio_chunk","data":`))
	case FaultOversized:
		size := f.Size
		if size == 0 {
			size = 8 << 20
		}
		big := make([]byte, size)
		copy(big, `{"type":"audio_chunk","data":"`)
		for i := 30; i < size-2; i++ {
			big[i] = 'A'
		}
		copy(big[size-2:], `"}`)
		_ = ss.ws.Write(ss.ctx, websocket.MessageText, big)
	case FaultUnknown:
		ss.writeJSON(map[string]any{"type": "sim_unknown_event", "detail": "ignore me"})
		ss.record(func(i *SessionInfo) { i.UnknownTypesSent++ })
	}
	return false
}

// decodeAudioMessage accepts the documented JSON audio envelope.
func decodeAudioMessage(m clientMsg) ([]byte, error) {
	if m.Data == "" {
		return nil, errors.New("audio message without data")
	}
	return base64.StdEncoding.DecodeString(strings.TrimSpace(m.Data))
}

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
