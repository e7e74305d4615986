package service

import (
	"errors"
	"io"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// synthCore is every decision of one Synthesize stream: its turns, its
// upstream session, its timers and how it ends. It does no I/O and starts
// no goroutine: the stream's loop (synth_loop.go) feeds it what the caller,
// SLNG, the upstream writer and the clock did, one call at a time, and
// carries out what it asks (out: responses for the caller; cmds: commands
// for the upstream writer; done: the end of the stream). Time is what the
// loop passes in, so that tests drive every timer with a fake clock.
//
// Everything here is owned by the loop goroutine.
type synthCore struct {
	coreBase
	// failFast ends the stream with the status of a failed turn instead of
	// sending turn_failed (SynthesizeText, which has one turn).
	failFast bool

	// Set by the config.
	cfg    *speechv1.SynthesisConfig
	ttsCfg slngclient.TTSConfig
	book   *turnBook
	// sawTimings: the route sent alignment on this stream, and the
	// server's record of timed routes has it.
	sawTimings bool
	// up is the format SLNG produces, and conv converts it into cfg's
	// (nil when they agree).
	up   *speechv1.AudioFormat
	conv *ttsConv

	state synthState
	// lease is the session in use, nil while there is none: a session
	// that ends or is given up is released at once, with why.
	lease *upstreamLease[TTSSession]
	// failures counts upstream failures since audio last arrived.
	failures  int
	delivered int64
	// paused: the loop stopped reading SLNG because the caller is behind
	// (the outbox is full); SLNG's silence meanwhile is not SLNG's fault.
	paused bool
	// held is the open turn's text, at the end of its book text, that has
	// no letter and waits for a neighbour before it goes upstream (see
	// text).
	held string
	// parkedAt is when the caller's text began to wait for SLNG to answer
	// a clear (see parks), zero while none waits.
	parkedAt time.Time
	// frameFrom is the session whose frame's first events the core was
	// just given, with more of that frame to come; nil otherwise.
	frameFrom TTSSession
	// quietUntil is when the session that answered a clear has been quiet
	// long enough to take the turns that waited (see clearQuiet); zero
	// when no answer is that recent.
	quietUntil time.Time

	// Timers, checked lazily (beside coreBase's): idleSince is when the
	// stream last had nothing in progress (zero while something is);
	// progress when the turn being spoken last made progress (its flush,
	// or an event from SLNG).
	idleSince, progress time.Time

	out  []synthOut
	cmds []ttsCmd
}

// ttsCmd is a command for the upstream writer (synth_writer.go).
type ttsCmd struct {
	kind ttsCmdKind
	sess TTSSession // the session to write to (not cmdAcquire, cmdCharge)
	text string     // cmdText, cmdCharge
	// charge: count text against the caller's quota before it goes up.
	charge  bool
	flush   bool // cmdText
	purpose slngpool.Purpose
	lease   *upstreamLease[TTSSession] // cmdClose
}

type ttsCmdKind uint8

const (
	cmdAcquire ttsCmdKind = iota
	cmdText
	cmdFlush
	cmdClear
	cmdCharge
	// cmdClose closes a session gracefully and gives it back: a rollover.
	cmdClose
)

// ttsResult is the upstream writer's report of a command that acquired a
// session or failed.
type ttsResult struct {
	lease *upstreamLease[TTSSession] // acquired
	sess  TTSSession                 // the session a write failed on
	err   error
	// charge: err is the caller's quota refusing a text.
	charge bool
}

// maxQueuedTurns bounds the flushed turns a stream keeps waiting to be
// spoken: beyond it, the loop stops reading the caller until one ends.
const maxQueuedTurns = 32

func newSynthCore(srv *Server, log *zap.Logger, meta streamMeta, usage *callerUsage, callerKey string, failFast bool, now time.Time) *synthCore {
	return &synthCore{coreBase: newCoreBase(srv, log, meta, usage, callerKey, now), failFast: failFast, idleSince: now}
}

// wantsCaller reports whether the loop should read the caller's next
// message now.
func (c *synthCore) wantsCaller() bool {
	switch c.phase {
	case phaseConfig:
		return true
	case phaseRunning:
		return !c.dialling && (c.book == nil || len(c.book.pending) < maxQueuedTurns)
	}
	return false
}

// session is the session whose events the loop should read, nil for none.
func (c *synthCore) session() TTSSession {
	if c.phase != phaseRunning || c.lease == nil || c.dialling || c.state.upstream == upGone {
		return nil
	}
	return c.lease.Session
}

// emit adds a response for the caller.
func (c *synthCore) emit(r *speechv1.SynthesizeResponse) { c.out = append(c.out, synthOut{resp: r}) }

// onFirst handles the caller's first message, which must be the config.
func (c *synthCore) onFirst(req *speechv1.SynthesizeRequest, now time.Time) {
	c.lastCaller = now
	cfg := req.GetConfig()
	if cfg == nil {
		c.fail(invalid("config", "the first message must be a config"))
		return
	}
	if err := c.configure(cfg); err != nil {
		c.fail(err)
		return
	}
	if err := c.admitModel(); err != nil {
		c.fail(err)
		return
	}
	c.book = newTurnBook(clockOf(c.cfg.Format))
	c.book.tm = streamTimings{on: c.cfg.GetEnableTimings(), speed: c.cfg.GetSpeed()}
	c.phase = phaseOpening
	c.dial(slngpool.PurposeCaller)
}

// dial asks the writer for a session.
func (c *synthCore) dial(p slngpool.Purpose) {
	c.dialling = true
	c.cmds = append(c.cmds, ttsCmd{kind: cmdAcquire, purpose: p})
}

// onCaller handles a caller's message after the config.
func (c *synthCore) onCaller(req *speechv1.SynthesizeRequest, now time.Time) {
	c.lastCaller = now
	switch r := req.GetRequest().(type) {
	case *speechv1.SynthesizeRequest_Config:
		c.fail(invalid("config", "config may be sent only once, as the first message"))
	case *speechv1.SynthesizeRequest_Text:
		if err := c.srv.checkText("text.text", r.Text.GetText()); err != nil {
			c.fail(err)
			return
		}
		c.text(r.Text.GetText(), r.Text.GetFlush(), now)
	case *speechv1.SynthesizeRequest_Flush:
		c.flush(now)
	case *speechv1.SynthesizeRequest_Clear:
		c.clear(false, now)
	case *speechv1.SynthesizeRequest_Cancel:
		c.clear(true, now)
	default:
		c.fail(invalid("request", "the request sets none of config, text, flush, clear, cancel"))
	}
}

// onCallerEnd handles the end of the caller's side: io.EOF is a half-close;
// anything else is the caller's stream breaking.
func (c *synthCore) onCallerEnd(err error, now time.Time) {
	if !errors.Is(err, io.EOF) {
		c.finish(err, false)
		return
	}
	if c.phase == phaseConfig {
		c.fail(invalid("config", "the stream ended before a config message"))
		return
	}
	c.state.ending |= halfClosed
	if c.book.openText() {
		// SLNG holds text that was never flushed: the session must not
		// serve another stream, whose first flush would speak it.
		c.state.markDirty()
	}
	c.book.open = nil
	c.held = ""
	c.settle(now)
}

// settle ends the stream once nothing is left to do after a half-close or a
// drain: every flushed turn spoken, and no session being acquired.
func (c *synthCore) settle(now time.Time) {
	if !c.book.idle() || c.dialling || c.phase != phaseRunning {
		return
	}
	switch {
	case c.state.has(halfClosed):
		c.finish(nil, true)
	case c.state.has(draining):
		c.fail(errDraining)
	}
}

// onAcquired takes the session the writer acquired.
func (c *synthCore) onAcquired(l *upstreamLease[TTSSession], now time.Time) {
	c.dialling = false
	sess := l.Session
	c.lease = l
	c.state.upstream = upClean
	c.meta.upstreamSessionID, c.meta.upstreamRequestID = sess.ID(), sess.RequestID()
	if c.phase == phaseOpening {
		c.phase = phaseRunning
		c.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Started{Started: &speechv1.SynthesisStarted{
			SessionId:         c.meta.sessionID,
			UpstreamSessionId: sess.ID(),
			UpstreamRequestId: sess.RequestID(),
			Config:            c.cfg,
			UpstreamFormat:    c.up,
			Conversions:       c.conv.conversions(),
			Limits:            c.srv.limits(),
			WarmSession:       l.Warm,
			CallerId:          c.usage.caller,
			RouteTimings:      c.routeTimings(),
		}}})
		return
	}
	flushed := c.replay(sess, now)
	r := c.replacing
	c.replacing = nil
	if r != nil && (r.cause != nil || r.rollover) {
		reason := reconnectReason(r.cause)
		c.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", r.cause),
			zap.String("previous_upstream_session_id", r.prevID), zap.String("upstream_session_id", sess.ID()),
			zap.Int("turns_replayed", len(flushed)))
		c.srv.metrics.reconnect("tts", reason)
		c.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Reconnected{
			Reconnected: &speechv1.UpstreamReconnected{
				Reason:                    reason,
				PreviousUpstreamSessionId: r.prevID,
				UpstreamSessionId:         sess.ID(),
				Gap:                       durationpb.New(now.Sub(r.failedAt)),
				WarmSession:               l.Warm,
				TurnsReplayed:             uint32(len(flushed)),
			}}})
	}
	c.settle(now)
}

// replay sends sess the turns waiting to be spoken, flushed ones first,
// then the open turn's text not yet spoken (a replacement, a redial, or a
// session that answered a clear), and returns the flushed ones.
func (c *synthCore) replay(sess TTSSession, now time.Time) []string {
	flushed, open := c.book.queued(len(c.held))
	for _, text := range flushed {
		c.cmds = append(c.cmds, ttsCmd{kind: cmdText, sess: sess, text: text, flush: true})
	}
	if open != "" {
		c.cmds = append(c.cmds, ttsCmd{kind: cmdText, sess: sess, text: open})
	}
	if len(flushed) > 0 {
		c.progress = now
	}
	return flushed
}

// onResult handles the writer's report of a failed command.
func (c *synthCore) onResult(r ttsResult, now time.Time) {
	switch {
	case r.lease != nil && c.done:
		r.lease.Session.CloseNow()
		r.lease.release(c.err, false)
	case r.lease != nil:
		c.onAcquired(r.lease, now)
	case r.charge:
		c.fail(r.err)
	case r.sess == nil:
		// The acquire failed.
		c.dialling = false
		err := r.err
		if c.replacing != nil && c.replacing.cause != nil {
			err = c.turnFailed(err)
		}
		c.fail(err)
	case c.lease == nil || r.sess != c.lease.Session || writeRecoverable(r.err):
		// A write to a session already replaced, or one that SLNG just
		// closed: the session's end, read from its events, decides.
	default:
		c.fail(r.err)
	}
}

// writeRecoverable reports a write that failed because SLNG had just closed
// the socket, normally (as models that close after audio_end do) or with a
// failure it may recover from, or because the stream closed the session
// itself. The text is already in its turn: the session's end, which the
// loop reads next, replays it on a new session or ends the stream.
func writeRecoverable(err error) bool {
	if errors.Is(err, slngclient.ErrSessionClosed) {
		return true
	}
	var held *slngclient.HeldBackError
	if errors.As(err, &held) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && ue.Class().Retryable
}

// setPaused records that the loop stopped (or resumed) reading SLNG because
// the caller is behind.
func (c *synthCore) setPaused(paused bool, now time.Time) {
	if c.paused && !paused && !c.progress.IsZero() {
		c.progress = now // the wait was the caller's, not SLNG's
	}
	c.paused = paused
}

// onDrain handles the server's drain: a stream without a config ends now,
// an idle one too, and a busy one after its flushed turns.
func (c *synthCore) onDrain(now time.Time) {
	if c.phase == phaseConfig {
		c.finish(errDraining, false)
		return
	}
	c.state.ending |= draining
	c.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Draining{
		Draining: &speechv1.ServerDraining{Grace: durationOrNil(c.srv.cfg.DrainGrace)}}})
	c.settle(now)
}

// configure validates cfg and fills in the effective configuration.
func (c *synthCore) configure(cfg *speechv1.SynthesisConfig) error {
	s := c.srv
	var v violations
	eff := proto.Clone(cfg).(*speechv1.SynthesisConfig)
	if eff.Model == "" {
		eff.Model = s.cfg.DefaultTTSModel
		if eff.Voice == "" {
			eff.Voice = s.cfg.DefaultVoice
		}
	}
	s.checkModel(&v, "config.model", eff.Model)
	checkFormat(&v, "config.format", eff.Format)
	if eff.Format.GetChannels() > 1 {
		v.add("config.format.channels", "synthesized audio is mono: channels must be 0 or 1")
	}
	if sp := eff.Speed; sp != 0 && (sp < minSpeed || sp > maxSpeed) {
		v.add("config.speed", "%g is outside %g-%g", sp, minSpeed, maxSpeed)
	}
	opts := eff.GetModelOptions().AsMap()
	checkOptions(&v, "config.model_options", opts, reservedTTSOptions)
	eff.Format = formatWithDefaults(eff.Format, defaultTTSSampleRate)
	up := s.checkCatalog(&v, eff.Model, eff.Voice, eff.Format, false)
	if err := v.err(); err != nil {
		return err
	}
	if err := c.convertFrom(up, eff.Format); err != nil {
		return err
	}
	c.cfg = eff
	c.ep = slngclient.Endpoint{Model: eff.Model}
	c.ttsCfg = slngclient.TTSConfig{
		Voice:      eff.Voice,
		Encoding:   encodingNames[up.Encoding],
		SampleRate: int(up.SampleRateHz),
		Language:   eff.Language,
		Speed:      eff.Speed,
		Extra:      opts,
	}
	return nil
}

// synthesizedAudio is the audio the stream delivered, for uncompressed
// encodings; 0 for compressed ones.
func (c *synthCore) synthesizedAudio() time.Duration {
	if c.book == nil || !c.book.clock.ok() {
		return 0
	}
	return c.book.clock.duration(c.delivered)
}
