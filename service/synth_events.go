package service

import (
	"errors"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// What SLNG and the clock do to a Synthesize stream: synthCore's other
// half.

// onUpstream handles one event of the session being read. Audio in it is
// valid until the loop takes the next event: the loop copies what out
// holds before that.
func (c *synthCore) onUpstream(ev slngclient.TTSEvent, now time.Time) {
	c.frameFrom = nil
	if ev.FrameGoesOn {
		c.frameFrom = c.session()
	}
	if !c.quietUntil.IsZero() && c.strayAfterClear(ev, now) {
		return
	}
	if c.conv != nil {
		c.convertEvent(ev, now) // convert.go: relay, in the caller's format
		return
	}
	c.relay(ev, now)
}

// relay handles one event whose audio is in the caller's format.
func (c *synthCore) relay(ev slngclient.TTSEvent, now time.Time) {
	if ev.Kind == slngclient.TTSWarning && ev.Err == nil {
		// Never a nil *UpstreamError inside an error interface.
		ev.Err = slngclient.NewErrorFrame("unknown", "")
	}
	clears := len(c.book.clears)
	out, res := c.book.event(ev)
	if ev.Kind == slngclient.TTSCleared && len(c.book.clears) < clears && c.lease != nil {
		// SLNG answered a clear: the session must now be quiet.
		c.quietUntil = now.Add(clearQuiet)
	}
	if ev.Kind == slngclient.TTSAlignment && !c.sawTimings {
		c.sawTimings = true // once a stream: the record is the server's, behind a lock
		c.srv.timedRoutes.saw(c.cfg.Model)
	}
	if res.warning {
		c.state.markDirty()
	}
	c.delivered += int64(res.audio)
	if res.audio > 0 || res.ended != nil {
		c.failures = 0
	}
	c.progress = now
	failed := res.failed != nil
	m := c.srv.metrics
	switch {
	case res.audio > 0:
		m.synthesizedBytes.Add(float64(res.audio))
	case res.warning && !failed:
		m.warnings.WithLabelValues("tts").Inc()
		if res.replace {
			c.log.Info("upstream error before the turn's audio; replacing the session", zap.Error(ev.Err))
		}
	case res.violation != "":
		m.protocolViolation("tts", res.violation)
	}
	if t := res.firstAudio; t != nil && !t.flushedAt.IsZero() {
		m.firstAudio.Observe(now.Sub(t.flushedAt).Seconds())
	}
	if failed {
		m.turnFailed(turnOutcome(ev.Err).reason)
		if c.failFast {
			c.fail(c.turnError(res.failed, ev.Err))
			return
		}
	}
	c.out = append(c.out, out...)
	if ev.Kind == slngclient.TTSCleared {
		c.unpark(now)
	}
	c.noteIdle(now)
	switch {
	case res.replace:
		c.replace(ev.Err, now)
	case res.ended != nil && c.rolloverDue(now):
		c.rollover(now)
	case c.state.ended():
		c.settle(now)
	}
}

// noteIdle starts the idle clock when nothing is in progress any more.
func (c *synthCore) noteIdle(now time.Time) {
	if c.book.idle() && c.idleSince.IsZero() {
		c.idleSince = now
	}
}

// replace gives up a session that cannot finish the turn in progress: SLNG
// answered it with an error frame (cause; the turn already ended with
// turn_failed, or waits to be spoken again), or the turn made no progress
// for the turn timeout (cause is errTurnTimeout; the turn ends with
// turn_failed here). The turns queued behind go to a new session.
func (c *synthCore) replace(cause error, now time.Time) {
	end := cause
	if errors.Is(cause, errTurnTimeout) {
		out, t := c.book.failInProgress(cause)
		c.srv.metrics.turnFailed(ReasonUpstreamTurnTimeout)
		c.log.Info("turn timed out", zap.Duration("turn_timeout", c.srv.cfg.TurnTimeout),
			zap.String("upstream_session_id", c.lease.Session.ID()))
		if t != nil && c.failFast {
			c.fail(c.turnError(t, cause))
			return
		}
		c.out = append(c.out, out...)
		// For the pool: a session stuck in a turn is SLNG failing.
		end = slngclient.NewTimeout("no progress on the turn", errTurnTimeout)
	}
	c.state.markDirty()
	c.dropSession(end)
	// The session is given up, not the stream: what it failed on is
	// already reported in turn_failed, or the turn is spoken again.
	c.afterLoss(cause, false, true, now)
}

// dropSession closes the session at once and gives it back with err, why
// it ended.
func (c *synthCore) dropSession(err error) {
	dropLease(c.lease, err)
	c.lease = nil
	c.parkedAt = time.Time{} // what waited goes to the next session
	c.quietUntil = time.Time{}
}

// strayAfterClear handles an event of the session that answered a clear
// while the turns behind it wait for it to be quiet (clearQuiet), and
// reports whether it was handled. Nothing went to the session since its
// answer, so audio is the discarded turn's, sent after the answer: it is
// dropped, and the session, which cannot be trusted to have stopped the
// turn, is retired; the turns that waited go to a new one. Audio that comes
// once the quiet is over but before the loop's timer said so is the
// discarded turn's all the same. Other events (an end of the discarded
// turn, a warning) go on as usual.
func (c *synthCore) strayAfterClear(ev slngclient.TTSEvent, now time.Time) bool {
	switch {
	case c.lease == nil:
		c.endQuiet(now)
		return false
	case ev.Kind != slngclient.TTSAudio && ev.Kind != slngclient.TTSUndecodableAudio && ev.Kind != slngclient.TTSAlignment:
		if !now.Before(c.quietUntil) {
			c.endQuiet(now)
		}
		return false
	}
	c.srv.metrics.protocolViolation("tts", "audio_after_cleared")
	c.log.Info("upstream sent audio of a cleared turn after answering the clear; the session is retired",
		zap.String("upstream_session_id", c.lease.Session.ID()))
	c.state.markDirty()
	c.retire(nil, now)
	return true
}

// endQuiet ends the wait for quiet after a clear's answer: the turns that
// waited go to the session.
func (c *synthCore) endQuiet(now time.Time) {
	c.quietUntil = time.Time{}
	c.unpark(now)
}

// retire gives up on a session that a clear's answer, or its absence,
// showed cannot be trusted to have stopped the discarded turns: the caller
// hears of every clear still waiting (this session will answer none), the
// session is dropped, and the turns sent since go to a new one, none of
// whose audio has come. cause is the replacement's, nil for none.
func (c *synthCore) retire(cause error, now time.Time) {
	c.out = append(c.out, c.book.upstreamClosed()...)
	c.dropSession(nil)
	if c.book.idle() && !c.book.openText() {
		c.state.upstream = upGone
		c.settle(now)
		return
	}
	c.replacing = &replacement{cause: cause, prevID: c.meta.upstreamSessionID, failedAt: now}
	c.dial(slngpool.PurposeRollover)
}

// onUpstreamEnd handles the end of the session being read: err is its
// Err.
func (c *synthCore) onUpstreamEnd(err error, now time.Time) {
	// io.EOF is SLNG's normal close; ErrSessionClosed our own. A failure
	// SLNG may recover from is treated like a close, except that a turn
	// must not have started reaching the caller. A session that ended
	// while the caller held its reading back is the caller's doing: the
	// same, and never SLNG's fault.
	normal := err == io.EOF || errors.Is(err, slngclient.ErrSessionClosed)
	var held *slngclient.HeldBackError
	ue, isUpstream := slngclient.AsUpstreamError(err)
	recoverable := normal || errors.As(err, &held) || (isUpstream && ue.Class().Retryable)
	relErr := err
	if normal {
		relErr = nil // the pool sees how SLNG closed it
	}
	c.dropSession(relErr)
	c.out = append(c.out, c.book.upstreamClosed()...)
	c.afterLoss(err, normal, recoverable, now)
}

// afterLoss decides what the loss of the session means, cause being why it
// ended (nil or io.EOF for a normal close): the end of the stream, its
// failure, a new session for the turns waiting, or a wait for the next
// text. A turn whose audio the loss cut fails alone (turn_failed, with what
// was delivered: replaying it would repeat audio); the turns behind it go
// on on a new session.
func (c *synthCore) afterLoss(cause error, normal, recoverable bool, now time.Time) {
	var held *slngclient.HeldBackError
	turnCause := cause
	switch {
	case errors.As(cause, &held):
		turnCause = errCallerTooSlow
	case normal:
		turnCause = errUpstreamClosedEarly
	}
	out, cut := c.book.cutTurns(turnCause)
	if len(cut) > 0 {
		for range cut {
			c.srv.metrics.turnFailed(turnOutcome(turnCause).reason)
		}
		if c.failFast {
			c.fail(c.turnError(cut[0], turnCause))
			return
		}
		c.log.Info("upstream session lost in the middle of a turn's audio; the turn failed", zap.NamedError("cause", cause))
		c.out = append(c.out, out...)
	}
	idle, openText := c.book.idle(), c.book.openText()
	if recoverable && (!idle || openText) {
		// A session that ends again before speaking, failing or closing
		// normally, counts: an upstream that keeps doing that must not be
		// redialled forever.
		c.failures++
	}
	switch {
	case idle && c.state.has(halfClosed):
		c.finish(nil, true)
	case idle && c.state.has(draining):
		c.fail(errDraining)
	case !recoverable || c.failures > maxReconnects:
		if normal {
			cause = errClosedBeforeSpeaking
		}
		c.fail(c.turnFailed(cause))
	case !idle || openText:
		// SLNG closed, or failed, with turns still to speak (models that
		// close after every audio_end drop the turns queued behind):
		// they go to a new session.
		r := &replacement{prevID: c.meta.upstreamSessionID, failedAt: now}
		if !normal {
			r.cause = cause
		}
		c.replacing = r
		c.dial(slngpool.PurposeRollover)
	default:
		// A close between turns: the next text dials again.
		c.state.upstream = upGone
	}
}

// rolloverDue reports whether the session should be replaced at this turn
// boundary, before SLNG's maximum connection duration (30 minutes on some
// plans) ends it in the middle of a turn: it is old enough, and no audio
// of a turn still to end has come (at the end of a turn, the next one's
// has not).
func (c *synthCore) rolloverDue(now time.Time) bool {
	age := c.srv.cfg.MaxUpstreamSessionAge
	if age <= 0 || c.lease == nil || now.Sub(c.lease.Session.Stats().ReadyAt) < age || c.state.upstream == upGone ||
		len(c.book.clears) > 0 {
		return false
	}
	if c.book.idle() && !c.book.openText() && c.state.ended() {
		return false // nothing more to speak: the stream ends
	}
	if len(c.book.pending) > 0 && c.book.pending[0].bytes > 0 {
		return false
	}
	o := c.book.open
	return o == nil || o.failed || o.bytes == o.spokenBytes
}

// rollover replaces an old session at a turn boundary: between turns it is
// closed and the next text dials a new one; with turns queued back to
// back, or text of the open turn not yet spoken, a new one is dialled now
// and hears them, none of whose audio has come.
func (c *synthCore) rollover(now time.Time) {
	l := c.lease
	c.lease = nil
	c.srv.metrics.reconnect("tts", "rollover")
	c.log.Info("upstream session rolled over at a turn boundary", zap.String("upstream_session_id", l.Session.ID()),
		zap.Int("turns_queued", len(c.book.pending)))
	c.cmds = append(c.cmds, ttsCmd{kind: cmdClose, lease: l})
	if c.book.idle() && !c.book.openText() {
		c.state.upstream = upGone
		return
	}
	c.replacing = &replacement{prevID: c.meta.upstreamSessionID, failedAt: now, rollover: true}
	c.dial(slngpool.PurposeRollover)
}

// clearTimedOut gives up waiting for SLNG to answer a clear: the caller
// gets `cleared` for every clear still waiting, the session is retired (a
// socket that does not answer clear cannot be trusted to have stopped the
// discarded turns), and turns sent since go to a new one, none of whose
// audio has come.
func (c *synthCore) clearTimedOut(now time.Time) {
	c.srv.metrics.unanswered.WithLabelValues("tts", "clear").Inc()
	c.log.Info("upstream did not answer a clear in time; the session is retired",
		zap.Duration("clear_timeout", c.srv.cfg.ClearTimeout), zap.String("upstream_session_id", c.lease.Session.ID()))
	c.retire(errClearUnanswered, now)
}

// onTick checks the stream's timers at now.
func (c *synthCore) onTick(now time.Time) {
	switch {
	case c.timedOut(now):
	case c.idleAt().Before(now) || c.idleAt().Equal(now):
		c.finish(errCallerIdle, false)
	case !c.clearAt().After(now):
		c.clearTimedOut(now)
	case !c.quietUntil.IsZero() && !c.quietUntil.After(now):
		c.endQuiet(now)
	case c.stuckAt().Before(now) || c.stuckAt().Equal(now):
		c.replace(errTurnTimeout, now)
	}
}

// clearAt is when the wait for SLNG's answer to the oldest clear ends:
// ClearTimeout after it was sent, or sooner, bargeInWait after a turn
// began to wait for it.
func (c *synthCore) clearAt() time.Time {
	d := c.srv.cfg.ClearTimeout
	if d <= 0 || c.phase != phaseRunning || c.lease == nil || c.dialling || c.paused {
		return never
	}
	sent := c.book.clearDue()
	if sent.IsZero() {
		return never
	}
	at := sent.Add(d)
	if !c.parkedAt.IsZero() {
		at = minTime(at, c.parkedAt.Add(min(bargeInWait, d)))
	}
	return at
}

// never is a check time that never comes.
var never = time.Unix(1<<62, 0)

// idleAt is when the caller counts as idle: it has sent nothing and
// nothing was in progress for CallerIdleTimeout.
func (c *synthCore) idleAt() time.Time {
	idle := c.srv.cfg.CallerIdleTimeout
	if idle <= 0 || c.phase != phaseRunning || c.dialling || !c.book.idle() || c.idleSince.IsZero() {
		return never
	}
	return maxTime(c.lastCaller, c.idleSince).Add(idle)
}

// stuckAt is when the turn being spoken times out: no progress for
// TurnTimeout while SLNG is read.
func (c *synthCore) stuckAt() time.Time {
	d := c.srv.cfg.TurnTimeout
	if d <= 0 || c.phase != phaseRunning || c.paused || c.dialling || c.lease == nil || len(c.book.pending) == 0 {
		return never
	}
	return c.progress.Add(d)
}

// nextCheck is the earliest time a timer may fire; a check finding nothing
// due just schedules the next.
func (c *synthCore) nextCheck() time.Time {
	at := c.baseCheck()
	if c.done {
		return at
	}
	if !c.quietUntil.IsZero() {
		at = minTime(at, c.quietUntil)
	}
	return minTime(at, minTime(c.idleAt(), minTime(c.stuckAt(), c.clearAt())))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// reusable reports, once the stream is done, whether its session may serve
// another stream: the caller half-closed, every turn finished cleanly,
// nothing spoiled it, and the session itself says so.
func (c *synthCore) reusable() bool {
	return c.err == nil && c.lease != nil && c.state.keepable() && c.book.idle() && c.lease.Session.Reusable()
}

// turnFailed is the error that ends the stream when its upstream failed
// for good: metadata names the turn in progress and how much of its audio
// the caller got, so that the caller can resume from there.
func (c *synthCore) turnFailed(cause error) error {
	t := c.book.inProgress()
	if t == nil {
		return cause
	}
	return c.turnError(t, cause)
}

// turnError attaches to cause where turn t stood: how much of its audio
// the caller got.
func (c *synthCore) turnError(t *turn, cause error) error {
	d := c.book.delivery(t)
	return withMetadata(cause, map[string]string{
		"turn_id":            strconv.FormatUint(t.id, 10),
		"delivered_bytes":    strconv.FormatUint(d.GetAudioBytes(), 10),
		"delivered_audio_ms": strconv.FormatInt(d.GetAudioDuration().AsDuration().Milliseconds(), 10),
		"last_sequence":      strconv.FormatUint(d.GetLastSequence(), 10),
	})
}

func warningResponse(ue *slngclient.UpstreamError) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{Warning: warningOf(ue)}}
}
