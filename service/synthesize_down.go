package service

import (
	"context"
	"errors"
	"io"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// dial opens a new upstream session and makes it the current one. The
// session it replaces, if any, has ended; prevErr is why (nil for a normal
// close or a rollover), for the pool's breaker.
func (st *synthesis) dial(ctx context.Context, prevErr error) (TTSSession, error) {
	lease, err := acquireLease(ctx, st.srv, "tts", st.ep, func(ctx context.Context) (Lease[TTSSession], error) {
		return st.srv.upstream.AcquireTTS(ctx, st.ep, st.ttsCfg)
	})
	if err != nil {
		return nil, err
	}
	sess := lease.Session
	st.mu.Lock()
	if st.state.has(handlerDone) {
		st.mu.Unlock()
		lease.release(nil, false)
		return nil, context.Canceled
	}
	old := st.lease
	st.lease = lease
	st.state.upstream = upClean
	st.sess = sess
	st.meta.upstreamSessionID = sess.ID()
	st.meta.upstreamRequestID = sess.RequestID()
	st.mu.Unlock()
	if old != nil {
		// Never under mu: closing a session waits for its reader, which
		// may be delivering audio and waiting for mu (deliverFast).
		old.Session.CloseNow()
		old.release(prevErr, false)
	}
	return sess, nil
}

// redial replaces a session that ended between turns and hands the new one
// to the down pump, which waits for it. The owner runs it.
func (st *synthesis) redial(ctx context.Context) error {
	sess, err := st.dial(slngpool.WithRollover(ctx), nil)
	if err != nil {
		return err
	}
	select {
	case st.next <- sess:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// resume replaces a session that ended while turns were waiting to be
// spoken: it dials again and replays them, flushed turns first, then the
// open turn's text. cause is why the old session ended, nil for a model's
// normal close after a turn (nothing to report then). The owner runs it.
func (st *synthesis) resume(ctx context.Context, cause error) (TTSSession, error) {
	failedAt := time.Now()
	prevID := st.snapshotMeta().upstreamSessionID
	sess, err := st.dial(slngpool.WithRollover(ctx), cause)
	if err != nil {
		if cause != nil {
			st.mu.Lock()
			err = st.turnFailedLocked(err)
			st.mu.Unlock()
		}
		return nil, err
	}
	st.mu.Lock()
	flushed, open := st.book.queued()
	st.mu.Unlock()
	for _, text := range flushed {
		if err := sess.Text(ctx, text, true); err != nil {
			return nil, err
		}
	}
	if open != "" {
		if err := sess.Text(ctx, open, false); err != nil {
			return nil, err
		}
	}
	if cause == nil {
		return sess, nil
	}
	reason := reconnectReason(cause)
	st.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", cause),
		zap.String("previous_upstream_session_id", prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Int("turns_replayed", len(flushed)))
	st.srv.metrics.reconnect("tts", reason)
	return sess, st.emit(func() []*speechv1.SynthesizeResponse {
		return []*speechv1.SynthesizeResponse{{Response: &speechv1.SynthesizeResponse_Reconnected{
			Reconnected: &speechv1.UpstreamReconnected{
				Reason:                    reason,
				PreviousUpstreamSessionId: prevID,
				UpstreamSessionId:         sess.ID(),
				Gap:                       durationpb.New(time.Since(failedAt)),
				WarmSession:               st.lease.Warm,
				TurnsReplayed:             uint32(len(flushed)),
			}}}}
	})
}

// pumpDown relays SLNG's events to the caller. Each pass of the loop reads
// with a context of its own, which the turn watchdog may cancel.
func (st *synthesis) pumpDown(ctx context.Context) error {
	sess := st.session()
	for {
		rctx, cancel := context.WithCancelCause(ctx)
		stop := context.AfterFunc(st.quiet, func() { cancel(nil) })
		st.mu.Lock()
		st.recvCancel = cancel
		st.mu.Unlock()
		next, err := st.relay(ctx, rctx, sess)
		stop()
		cancel(nil)
		if err != nil || next == nil {
			return err
		}
		sess = next
	}
}

// relay reads sess until the stream ends (nil, err) or the watchdog ends
// the read (the session to read next).
func (st *synthesis) relay(ctx, rctx context.Context, sess TTSSession) (TTSSession, error) {
	fast := st.deliverFast
	for {
		ev, err := sess.RecvFast(rctx, fast)
		if err != nil && errors.Is(context.Cause(rctx), errFastOutcome) {
			st.mu.Lock()
			d := st.fastOut
			st.fastOut = delivered{}
			st.mu.Unlock()
			// Audio never asks for a replacement (only an error frame
			// does), so there is no cause to give.
			next, _, err := st.act(ctx, sess, d, nil)
			return next, err // reading goes on with a new read context
		}
		if err != nil && ctx.Err() == nil && st.quiet.Err() != nil {
			return nil, nil // the session goes back to the pool
		}
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), errEchoGrace) {
			// No second signal: the route sends one. Later streams of the
			// model need not wait (see Server.learnEndStyle).
			st.mu.Lock()
			st.book.style, st.book.echo = styleSingle, endNone
			st.mu.Unlock()
			return nil, nil
		}
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), errTurnTimeout) {
			if st.turnStale() > 0 {
				return sess, nil // progress since the watchdog fired
			}
			return st.replace(ctx, sess, errTurnTimeout)
		}
		if err != nil {
			next, err := st.upstreamEnded(ctx, err)
			if err != nil || next == nil {
				return nil, err
			}
			sess = next
			continue
		}
		if ev.Kind == slngclient.TTSWarning && ev.Err == nil {
			// Never a nil *UpstreamError inside an error interface.
			ev.Err = slngclient.NewErrorFrame("unknown", "")
		}
		_, d := st.deliver(ev, false)
		if next, stop, err := st.act(ctx, sess, d, ev.Err); stop {
			return next, err
		}
	}
}

// delivered is what delivering an event asks of the down pump. done
// reports the end of the stream (with err, how it ended); replace that an
// error frame arrived during a turn, so the session must be replaced;
// boundary that a turn ended and none is in progress, the only moment a
// rollover may happen.
type delivered struct {
	done, replace, boundary bool
	err                     error
}

// asks reports that d asks the down pump for anything.
func (d delivered) asks() bool { return d.done || d.replace || d.boundary || d.err != nil }

// act does what d asks: it ends the stream (nil, true, err), replaces or
// rolls over sess (the session to read next, true), or nothing (sess,
// false). cause is the error frame behind a replacement.
func (st *synthesis) act(ctx context.Context, sess TTSSession, d delivered, cause error) (TTSSession, bool, error) {
	switch {
	case d.err != nil || d.done:
		return nil, true, d.err
	case d.replace:
		next, err := st.replace(ctx, sess, cause)
		return next, true, err
	case d.boundary && st.rolloverDue(sess):
		next, err := st.rollover(ctx, sess)
		return next, true, err
	}
	return sess, false, nil
}

// deliver translates one upstream event and says what it asks of the down
// pump.
//
// This is the per-chunk path: one lock of the state, and the responses are
// sent after it is released. Progress for the turn watchdog is the sending
// itself (lastSent).
//
// With midTurn, it is the fast path (see deliverFast): it handles only an
// event that comes while a turn is in progress, and leaves anything else
// (handled false) having done nothing.
func (st *synthesis) deliver(ev slngclient.TTSEvent, midTurn bool) (handled bool, d delivered) {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	st.mu.Lock()
	if midTurn && st.book.idle() {
		st.mu.Unlock()
		return false, d
	}
	out, res := st.book.event(ev)
	if res.warning {
		st.state.markDirty()
	}
	st.delivered += int64(res.audio)
	if res.audio > 0 || res.ended != nil {
		st.failures = 0
	}
	idle := st.book.idle()
	var failErr error
	failed := res.failed != nil
	if failed && st.failFast {
		failErr = st.turnError(res.failed, ev.Err)
	}
	st.mu.Unlock()

	m := st.srv.metrics
	switch {
	case res.audio > 0:
		m.synthesizedBytes.Add(float64(res.audio))
	case res.warning && !failed:
		m.warnings.WithLabelValues("tts").Inc()
		if res.replace {
			st.log.Info("upstream error before the turn's audio; replacing the session", zap.Error(ev.Err))
		}
	case res.violation != "":
		m.protocolViolation("tts", res.violation)
	}
	if t := res.firstAudio; t != nil && !t.flushedAt.IsZero() {
		m.firstAudio.Observe(time.Since(t.flushedAt).Seconds())
	}
	if failed {
		m.turnFailed(turnOutcome(ev.Err).reason)
	}
	if failErr != nil {
		return true, delivered{done: true, err: failErr}
	}
	err := st.sendAll(out)
	st.book.chunk.Data = nil // the session's buffer, valid until its next Recv
	if err != nil || !idle {
		return true, delivered{replace: res.replace, err: err}
	}
	done, err := st.finished()
	return true, delivered{done: done, replace: res.replace && !done, boundary: res.ended != nil && !done, err: err}
}

// deliverFast is the fast path of the per-chunk path: the session's reader
// goroutine hands it each audio chunk while the down pump waits in
// RecvFast, and it delivers the chunks of a turn in progress itself,
// which saves a handoff between goroutines per chunk. It leaves anything
// else to the down pump. An outcome the down pump must act on (a failed
// send, in practice) ends the down pump's read with errFastOutcome.
func (st *synthesis) deliverFast(ev slngclient.TTSEvent) bool {
	handled, d := st.deliver(ev, true)
	if handled && d.asks() {
		st.mu.Lock()
		st.fastOut = d
		cancel := st.recvCancel
		st.mu.Unlock()
		cancel(errFastOutcome)
	}
	return handled
}

// errFastOutcome ends the down pump's read when deliverFast has left it an
// outcome to act on.
var errFastOutcome = errors.New("the fast path left an outcome")

// replace ends a session that cannot finish the turn in progress: SLNG
// answered it with an error frame (cause; the turn already ended with
// turn_failed, and the same socket would keep answering so), or the turn
// made no progress for the turn timeout (cause is errTurnTimeout; the turn
// ends with turn_failed here). The session is closed, and the turns queued
// behind go to a new one.
func (st *synthesis) replace(ctx context.Context, sess TTSSession, cause error) (TTSSession, error) {
	var end *slngclient.UpstreamError
	if errors.Is(cause, errTurnTimeout) {
		var failErr error
		err := st.emit(func() []*speechv1.SynthesizeResponse {
			out, t := st.book.failInProgress(cause)
			if t != nil && st.failFast {
				failErr = st.turnError(t, cause)
				return nil
			}
			return out
		})
		st.srv.metrics.turnFailed(ReasonUpstreamTurnTimeout)
		st.log.Info("turn timed out", zap.Duration("turn_timeout", st.srv.cfg.TurnTimeout),
			zap.String("upstream_session_id", sess.ID()))
		if failErr != nil {
			return nil, failErr
		}
		if err != nil {
			return nil, err
		}
		// A stuck session counts as SLNG being unwell.
		end = slngclient.NewTimeout("no progress on the turn", errTurnTimeout)
	} else {
		ue, _ := slngclient.AsUpstreamError(cause)
		if ue == nil {
			ue = slngclient.NewErrorFrame("unknown", "")
		}
		// The session is given up, not the stream: what it failed on is
		// already reported in turn_failed.
		cp := *ue
		cp.Retryable = true
		end = &cp
	}
	st.mu.Lock()
	st.state.markDirty()
	st.mu.Unlock()
	sess.CloseNow()
	return st.upstreamEnded(ctx, end)
}

// rolloverDue reports whether the session should be replaced at this turn
// boundary, before SLNG's maximum connection duration (30 minutes on some
// plans) ends it in the middle of a turn.
func (st *synthesis) rolloverDue(sess TTSSession) bool {
	age := st.srv.cfg.MaxUpstreamSessionAge
	if age <= 0 || time.Since(sess.Stats().ReadyAt) < age {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.state.running() && st.book.idle() && !st.book.openText()
}

// rollover asks the owner to close an old session between turns; the next
// text dials a new one.
func (st *synthesis) rollover(ctx context.Context, sess TTSSession) (TTSSession, error) {
	r, err := st.call(ctx, ttsOp{kind: opRollover, sess: sess})
	if err != nil {
		return nil, err
	}
	if !r.rolled {
		return sess, nil
	}
	st.srv.metrics.reconnect("tts", "rollover")
	st.log.Info("upstream session rolled over between turns", zap.String("upstream_session_id", sess.ID()))
	return st.waitNext(ctx)
}

// waitNext waits, while gone, for the session the next text dials.
func (st *synthesis) waitNext(ctx context.Context) (TTSSession, error) {
	st.mu.Lock()
	next := st.next
	st.mu.Unlock()
	select {
	case sess := <-next:
		if sess == nil { // half-closed while waiting
			return nil, nil
		}
		return sess, nil
	case <-st.srv.drainCtx.Done():
		return nil, errDraining
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// upstreamEnded decides what the end of an upstream session means: the end
// of the stream, a failure, or (for models that close after every turn) a
// wait for the session of the next turn.
func (st *synthesis) upstreamEnded(ctx context.Context, recvErr error) (TTSSession, error) {
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	// io.EOF is SLNG's normal close; ErrSessionClosed our own close (a
	// half-close or a drain). A failure SLNG may recover from is treated like
	// a close, except that a turn must not have started reaching the caller.
	normal := recvErr == io.EOF
	closedNormally := normal || errors.Is(recvErr, slngclient.ErrSessionClosed)
	ue, isUpstream := slngclient.AsUpstreamError(recvErr)
	recoverable := normal || (isUpstream && ue.Retryable)

	type verdict int
	const (
		vDone verdict = iota
		vDrain
		vFail
		vResume
		vWait
	)
	var v verdict
	var failErr error
	// One critical section decides and records the outcome, so that a
	// half-close racing with the close cannot miss that the down pump waits.
	err := st.emit(func() []*speechv1.SynthesizeResponse {
		var out []*speechv1.SynthesizeResponse
		if closedNormally || recoverable {
			// A clean close after a turn's audio ends that turn (routes
			// that close after every turn); clears are acknowledged.
			var ended *turn
			out, ended = st.book.upstreamClosed(normal)
			if ended != nil {
				st.failures = 0
			}
		}
		idle := st.book.idle()
		openText := st.book.openText()
		if recoverable && (!idle || openText) {
			// A session that ends again before speaking, failing or closing
			// normally, counts: an upstream that keeps doing that must not be
			// redialled forever.
			st.failures++
		}
		switch {
		case idle && st.state.has(halfClosed):
			v = vDone
		case idle && st.state.has(draining):
			v = vDrain
		case !recoverable || st.failures > maxReconnects:
			cause := recvErr
			if normal {
				cause = errUpstreamClosedBeforeSpeaking
			}
			v, failErr = vFail, st.turnFailedLocked(cause)
		case !idle && st.book.pending[0].bytes > 0:
			// Part of the turn reached the caller: replaying it would
			// repeat audio.
			v, failErr = vFail, st.turnFailedLocked(recvErr)
		case !idle || openText:
			v = vResume
		default:
			// A normal close between turns: the next text dials again.
			if st.next == nil {
				st.next = make(chan TTSSession)
			}
			st.state.upstream = upGone
			v = vWait
		}
		return out
	})
	if err != nil {
		return nil, err
	}
	switch v {
	case vDone:
		return nil, nil
	case vDrain:
		return nil, errDraining
	case vFail:
		return nil, failErr
	case vResume:
		// SLNG closed, or failed, with turns still to speak (models that
		// close after every audio_end drop the turns queued behind):
		// replay them on a new session.
		if normal {
			return st.askResume(ctx, nil)
		}
		return st.askResume(ctx, recvErr)
	}
	return st.waitNext(ctx)
}
