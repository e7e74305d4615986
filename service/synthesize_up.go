package service

import (
	"context"
	"errors"
	"io"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// pumpUp relays the caller's requests to SLNG.
func (st *synthesis) pumpUp(ctx context.Context) error {
	stopDrain := context.AfterFunc(st.srv.drainCtx, st.onDrain)
	defer stopDrain()
	for {
		req, err := st.reqs.Recv()
		if errors.Is(err, io.EOF) {
			return st.ask(ctx, ttsOp{kind: opHalfClose})
		}
		if err != nil {
			return err
		}
		st.activity()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		switch r := req.GetRequest().(type) {
		case *speechv1.SynthesizeRequest_Config:
			return invalid("config", "config may be sent only once, as the first message")
		case *speechv1.SynthesizeRequest_Text:
			if err := st.srv.checkText("text.text", r.Text.GetText()); err != nil {
				return err
			}
			if err := st.ask(ctx, ttsOp{kind: opText, text: r.Text.GetText(), flush: r.Text.GetFlush()}); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Flush:
			if err := st.ask(ctx, ttsOp{kind: opFlush}); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Clear:
			if err := st.ask(ctx, ttsOp{kind: opClear}); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Cancel:
			if err := st.ask(ctx, ttsOp{kind: opClear, cancel: true}); err != nil {
				return err
			}
		default:
			return invalid("request", "the request sets none of config, text, flush, clear, cancel")
		}
	}
}

// maxTurnText bounds the text of one turn, which the gateway keeps until the
// turn is spoken so that it can replay it on a new upstream session.
const maxTurnText = 1 << 20

// text sends text for the open turn, redialling first if the previous
// session ended, and flushes when asked. The owner runs it.
func (st *synthesis) text(ctx context.Context, text string, flush bool) error {
	st.mu.Lock()
	if st.state.has(draining) {
		st.mu.Unlock()
		return errDraining
	}
	send, err := st.book.addText(text, maxTurnText)
	gone := st.state.upstream == upGone
	st.mu.Unlock()
	if err != nil {
		return invalid("text.text", "a turn holds at most %d bytes of text: flush more often", maxTurnText)
	}
	if send {
		if err := st.usage.charge(ctx, text); err != nil {
			return err
		}
		if gone {
			if err := st.redial(ctx); err != nil {
				return err
			}
		}
		if err := st.session().Text(ctx, text, false); err != nil && !writeRecoverable(err) {
			return err
		}
	}
	if flush {
		return st.flush(ctx)
	}
	return nil
}

// flush ends the open turn. A flush without text is ignored: SLNG treats a
// bare flush as a protocol violation. The owner runs it.
func (st *synthesis) flush(ctx context.Context) error {
	st.mu.Lock()
	// Registered before the flush goes out, so that the down pump always
	// finds the turn its audio belongs to.
	t := st.book.flush(time.Now())
	first := t != nil && len(st.book.pending) == 1
	sess := st.sess
	st.mu.Unlock()
	if t == nil {
		return nil
	}
	if first {
		// The watchdog runs while turns are pending; it sleeps otherwise.
		st.progress.Store(time.Now().UnixNano())
		st.armTurnTimer(st.srv.cfg.TurnTimeout)
	}
	if err := sess.Flush(ctx); err != nil && !writeRecoverable(err) {
		return err
	}
	return nil
}

// armTurnTimer (re)starts the turn watchdog.
func (st *synthesis) armTurnTimer(d time.Duration) {
	if st.srv.cfg.TurnTimeout > 0 {
		st.turnTimer.Reset(d)
	}
}

// checkTurn is the turn watchdog: when the turn being spoken has made no
// progress for the turn timeout, it ends the down pump's Recv with
// errTurnTimeout. It never blocks.
func (st *synthesis) checkTurn() {
	st.mu.Lock()
	busy := !st.book.idle()
	cancel := st.recvCancel
	st.mu.Unlock()
	if !busy {
		return // flush arms it again
	}
	if left := st.turnStale(); left > 0 {
		st.armTurnTimer(left)
		return
	}
	if cancel != nil {
		cancel(errTurnTimeout)
	}
}

// turnStale returns how long the turn in progress may still go without
// progress; zero or less means it has timed out. Progress is a response
// reaching the caller (every audio chunk and end of turn is one) since the
// flush, so a caller that reads slowly never makes a turn look stuck.
func (st *synthesis) turnStale() time.Duration {
	last := max(st.progress.Load(), st.lastSent.Load())
	return st.srv.cfg.TurnTimeout - time.Since(time.Unix(0, last))
}

// writeRecoverable reports a write that failed because SLNG had just closed the
// socket, normally (as models that close after audio_end do) or with a
// failure it may recover from. The text is already recorded in its turn,
// and the down pump, on seeing the end, replays it on a new session (see
// resume) or ends the stream, so the write itself is not an error.
//
// ErrSessionClosed counts too: the down pump closes a session it replaces
// (after a failed turn) while the up pump may be writing to it.
func writeRecoverable(err error) bool {
	if errors.Is(err, slngclient.ErrSessionClosed) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && ue.Retryable
}

// clear discards the open turn and every pending one. SLNG answers its
// `clear` with `cleared` after the last frame of the discarded turns, which
// is what lets the down pump drop them. A Cancel is acknowledged at once
// (barge-in wants no wait); a Clear when `cleared` arrives. The owner runs
// it.
func (st *synthesis) clear(ctx context.Context, cancel bool) error {
	var gone bool
	var sess TTSSession
	err := st.emit(func() []*speechv1.SynthesizeResponse {
		st.state.markDirty()
		gone, sess = st.state.upstream == upGone, st.sess
		// With no session there is nothing to clear upstream: the
		// acknowledgement goes out now.
		return st.book.clear(cancel, !gone)
	})
	if err != nil || gone {
		return err
	}
	if err := sess.Clear(ctx); err != nil && !writeRecoverable(err) {
		return err
	}
	// A session that ends before `cleared` arrives: upstreamClosed
	// acknowledges the clear.
	return nil
}

// halfClose handles the caller's half-close: unflushed text is discarded,
// flushed turns complete, then the stream ends. The owner runs it.
func (st *synthesis) halfClose(ctx context.Context) error {
	st.mu.Lock()
	st.state.ending |= halfClosed
	if st.book.openText() {
		// SLNG holds text that was never flushed: the session must not
		// serve another stream, whose first flush would speak it.
		st.state.markDirty()
	}
	st.book.open = nil
	idle := st.book.idle()
	gone := st.state.upstream == upGone
	sess := st.sess
	st.mu.Unlock()
	if !idle {
		return nil // the down pump ends after the last turn
	}
	if !gone && st.reusable() {
		st.stopQuiet() // the down pump stops; the session stays open
		return nil
	}
	if gone {
		// The down pump waits for a new session: tell it there is none.
		select {
		case st.next <- nil:
		case <-ctx.Done():
		}
		return nil
	}
	closeCtx, cancel := context.WithTimeout(ctx, st.srv.cfg.CloseTimeout)
	defer cancel()
	_ = sess.Close(closeCtx) // the down pump sees the close and ends cleanly
	return nil
}

// onDrain runs when the server starts draining: an idle stream ends now, a
// busy one after its flushed turns.
func (st *synthesis) onDrain() {
	var idle bool
	var sess TTSSession
	// A failed send shows up in the down pump, which sends too.
	_ = st.emit(func() []*speechv1.SynthesizeResponse {
		st.state.ending |= draining
		idle, sess = st.book.idle(), st.sess
		return []*speechv1.SynthesizeResponse{{Response: &speechv1.SynthesizeResponse_Draining{
			Draining: &speechv1.ServerDraining{Grace: durationOrNil(st.srv.cfg.DrainGrace)}}}}
	})
	if idle && sess != nil {
		sess.CloseNow() // unblocks the down pump, which reports errDraining
	}
}
