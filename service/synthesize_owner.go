package service

import (
	"context"
)

// ttsOp is a request to a Synthesize stream's upstream owner (see own).
type ttsOp struct {
	kind   ttsOpKind
	text   string // opText
	flush  bool   // opText
	cancel bool   // opClear: a Cancel, acknowledged at once
	// cause is why the session ended, nil for a normal close (opResume).
	cause error
	sess  TTSSession    // opRollover: the session to close
	reply chan ttsReply // opResume, opRollover
}

type ttsOpKind uint8

const (
	opText ttsOpKind = iota
	opFlush
	opClear
	opHalfClose
	opResume
	opRollover
)

// ttsOpQueue bounds the requests waiting for the owner. A full queue holds
// the up pump back, and through it the caller's HTTP/2 flow control.
const ttsOpQueue = 8

// ttsReply answers opResume (the new session, or why there is none) and
// opRollover (whether the session was closed).
type ttsReply struct {
	sess   TTSSession
	err    error
	rolled bool
}

// ask queues a request for the owner.
func (st *synthesis) ask(ctx context.Context, op ttsOp) error { return offer(ctx, st.ops, op) }

// own is the stream's upstream owner, the only goroutine that writes to,
// dials and replaces its upstream session, in the order the pumps ask. It
// ends when the stream does, or with the error of a request the stream
// cannot survive (a bad text, a quota, a failed write).
func (st *synthesis) own(ctx context.Context) error {
	for {
		var op ttsOp
		select {
		case op = <-st.ops:
		case <-ctx.Done():
			return nil
		}
		var err error
		switch op.kind {
		case opText:
			err = st.text(ctx, op.text, op.flush)
		case opFlush:
			err = st.flush(ctx)
		case opClear:
			err = st.clear(ctx, op.cancel)
		case opHalfClose:
			err = st.halfClose(ctx)
		case opResume:
			sess, rerr := st.resume(ctx, op.cause)
			op.reply <- ttsReply{sess: sess, err: rerr} // buffered
		case opRollover:
			op.reply <- ttsReply{rolled: st.closeBetweenTurns(ctx, op.sess)} // buffered
		}
		if err != nil {
			return err
		}
	}
}

// askResume asks the owner to replace a session that ended while turns
// were waiting to be spoken (see resume).
func (st *synthesis) askResume(ctx context.Context, cause error) (TTSSession, error) {
	r, err := st.call(ctx, ttsOp{kind: opResume, cause: cause})
	if err != nil {
		return nil, err
	}
	return r.sess, r.err
}

// call asks the owner and waits for its answer.
func (st *synthesis) call(ctx context.Context, op ttsOp) (ttsReply, error) {
	op.reply = make(chan ttsReply, 1)
	return roundTrip(ctx, st.ops, op, op.reply)
}

// closeBetweenTurns closes sess for a rollover when no turn is in progress
// or being written; the next text then dials a new session.
func (st *synthesis) closeBetweenTurns(ctx context.Context, sess TTSSession) bool {
	st.mu.Lock()
	ok := st.state.running() && st.book.idle() && !st.book.openText() && st.sess == sess
	if ok {
		st.state.upstream = upGone
		if st.next == nil {
			st.next = make(chan TTSSession)
		}
	}
	st.mu.Unlock()
	if ok {
		closeCtx, cancel := context.WithTimeout(ctx, st.srv.cfg.CloseTimeout)
		_ = sess.Close(closeCtx)
		cancel()
	}
	return ok
}
