package service

import (
	"context"
	"time"
)

// streamCore is what a stream's loop drives: synthCore and sttCore. M is
// the caller's message, E SLNG's event, R the writer's result, Resp the
// response for the caller and C the writer's command. Every method runs
// on the loop goroutine.
type streamCore[M, E, R, Resp, C any] interface {
	// wantsCaller reports whether the caller's next message is wanted now.
	wantsCaller() bool
	onCallerMsg(m callerMsg[M], now time.Time)
	// reading is the session to read SLNG's events from, nil for none.
	reading() eventSource[E]
	// midFrame reports that the rest of the SLNG frame whose first events
	// the core was given is still to come from reading.
	midFrame() bool
	onUpstream(ev E, now time.Time)
	onUpstreamEnd(err error, now time.Time)
	onResult(r R, now time.Time)
	onDrain(now time.Time)
	onTick(now time.Time)
	// setPaused records that SLNG is not read (true) because the caller
	// is behind, or is read again.
	setPaused(paused bool, now time.Time)
	// abort ends the stream without waiting for the outbox.
	abort(err error)
	nextCheck() time.Time
	// ended reports that the stream's end is decided, and whether what
	// the outbox holds is to be sent first.
	ended() (done, drainOut bool)
	// carry moves what the core asked for to the outbox and the writer,
	// and reports whether it queued a response, and the outbox over its
	// bounds.
	carry(ob *outbox[Resp], cmds *mailbox[C]) (pushed, over bool)
}

// eventSource is a session's side that the loop reads.
type eventSource[E any] interface {
	Events() <-chan E
	Err() error
}

// streamLoop runs one stream's loop: the only goroutine that touches its
// core. It carries out what the core asks and feeds it what happens.
type streamLoop[M, E, R, Resp, C any] struct {
	s       *Server
	core    streamCore[M, E, R, Resp, C]
	ob      *outbox[Resp]
	cmds    *mailbox[C]
	results <-chan R
	// paused: the outbox is over its bounds, so SLNG is not read.
	paused bool
	// stallAt is when to check that the caller still accepts messages,
	// zero while the outbox has been empty since the last check.
	stallAt time.Time
}

// runStream runs one stream: the caller's reader and sender, the upstream
// writer (write), and the loop that drives core, until the core decides
// the end. Then settle closes what must be closed (the session, which also
// ends a write blocked on it) and reports whether the session is kept, and
// the writer is joined. The caller's
// reader and sender are not waited for: grpc-go releases a blocked Recv or
// Send only when the handler returns, and Server.Wait joins them.
func runStream[M, E, R, Resp, C any](ctx context.Context, s *Server, core streamCore[M, E, R, Resp, C],
	recv func() (M, error), send func(Resp) error, recycle func(Resp) bool,
	cmds *mailbox[C], results <-chan R, write func(context.Context), settle func() (keep bool)) {
	stop := make(chan struct{})
	defer close(stop)
	in := make(chan callerMsg[M], callerQueue)
	readCaller(s, recv, in, stop)

	ob := newOutbox(s.cfg.Clock, s.cfg.StreamBufferBytes, &s.metrics.buffered, s.cfg.BufferBytes, recycle)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		ob.send(send)
	}()
	defer ob.close()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	written := make(chan struct{})
	go func() {
		defer close(written)
		write(wctx)
	}()

	l := &streamLoop[M, E, R, Resp, C]{s: s, core: core, ob: ob, cmds: cmds, results: results}
	l.run(ctx, in)
	if keep := settle(); !keep {
		cancel() // ends a write blocked on a session that is not kept
	}
	// A kept session goes back to the pool: the writer's last write is on
	// the wire, but its goroutine may not have returned from it, and
	// coder/websocket closes a connection whose write's context ends. So
	// the writer finishes before its context does.
	cmds.close()
	<-written
	cancel()
}

// maxWriterQueue bounds the commands waiting for the upstream writer: the
// loop stops reading the caller while more wait.
const maxWriterQueue = 8

// run runs until the core decides the end and, if it asks, the outbox is
// empty.
func (l *streamLoop[M, E, R, Resp, C]) run(ctx context.Context, in <-chan callerMsg[M]) {
	s, c := l.s, l.core
	clk := s.cfg.Clock
	timer := clk.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var armed time.Time
	drain := s.drainCtx.Done()
	for {
		now := clk.Now()
		l.carry(now)
		done, drainOut := c.ended()
		if done && (!drainOut || l.emptied()) {
			return
		}
		if !done && c.midFrame() {
			// The rest of a frame comes before anything else, so that
			// nothing the caller asks lands between a frame's events (a
			// clear between audio and its alignment would count the
			// audio's characters unspoken). slngclient hands it at once.
			src := c.reading()
			select {
			case ev, ok := <-src.Events():
				l.upstream(src, ev, ok, clk.Now())
			case <-ctx.Done():
				c.abort(context.Cause(ctx))
			}
			continue
		}
		var callerCh <-chan callerMsg[M]
		var space <-chan struct{}
		if !done && c.wantsCaller() {
			if l.cmds.isFull() {
				space = l.cmds.space // the caller waits for the writer
			} else {
				callerCh = in
			}
		}
		var upCh <-chan E
		var src eventSource[E]
		if !done && !l.paused {
			if src = c.reading(); src != nil {
				upCh = src.Events()
				// Per audio chunk, the common case: an event already there
				// is taken without a select over every input.
				select {
				case ev, ok := <-upCh:
					l.upstream(src, ev, ok, now)
					continue
				default:
				}
			}
		}
		if next := minTime(c.nextCheck(), l.stallCheck()); next != never && (armed.IsZero() || next.Before(armed)) {
			timer.ResetAt(next)
			armed = next
		}
		select {
		case ev, ok := <-upCh:
			l.upstream(src, ev, ok, clk.Now())
		case m := <-callerCh:
			c.onCallerMsg(m, clk.Now())
		case <-space:
		case r := <-l.results:
			c.onResult(r, clk.Now())
		case <-l.ob.notify:
			l.outboxChanged(clk.Now())
		case <-timer.C():
			armed = time.Time{}
			l.tick(clk.Now())
		case <-drain:
			drain = nil
			c.onDrain(clk.Now())
		case <-ctx.Done():
			c.abort(context.Cause(ctx))
		}
	}
}

func (l *streamLoop[M, E, R, Resp, C]) upstream(src eventSource[E], ev E, ok bool, now time.Time) {
	if ok {
		l.core.onUpstream(ev, now)
	} else {
		l.core.onUpstreamEnd(src.Err(), now)
	}
	// An event's audio is the session's until the next event: what the
	// core made of it is carried out now.
	l.carry(now)
}

// carry moves the core's outputs on, and pauses the reading of SLNG when
// the outbox is over its bounds.
func (l *streamLoop[M, E, R, Resp, C]) carry(now time.Time) {
	pushed, over := l.core.carry(l.ob, l.cmds)
	if pushed && l.stallAt.IsZero() && l.s.cfg.CallerStallTimeout > 0 {
		l.stallAt = now.Add(l.s.cfg.CallerStallTimeout)
	}
	if over && !l.paused {
		l.paused = true
		l.core.setPaused(true, now)
		l.s.metrics.pauses.Inc()
	}
}

// outboxChanged handles the sender's notice: a failed send, room again
// after a pause, or (once done) an emptier outbox.
func (l *streamLoop[M, E, R, Resp, C]) outboxChanged(now time.Time) {
	done, _ := l.core.ended()
	_, over, err := l.ob.check(done)
	if err != nil {
		l.core.abort(err) // the caller's stream broke
		return
	}
	if l.paused && !over {
		l.paused = false
		l.core.setPaused(false, now)
	}
}

// emptied reports that the outbox has sent everything (or cannot), and
// asks to be notified of the next send otherwise.
func (l *streamLoop[M, E, R, Resp, C]) emptied() bool {
	empty, _, err := l.ob.check(true)
	return empty || err != nil
}

// stallCheck is when the caller's sender is next checked for a stall.
func (l *streamLoop[M, E, R, Resp, C]) stallCheck() time.Time {
	if l.stallAt.IsZero() {
		return never
	}
	return l.stallAt
}

// tick checks the timers: the core's, and whether the caller accepts
// messages (see Config.CallerStallTimeout).
func (l *streamLoop[M, E, R, Resp, C]) tick(now time.Time) {
	if !l.stallAt.IsZero() && !now.Before(l.stallAt) {
		stall := l.s.cfg.CallerStallTimeout
		done, _ := l.core.ended()
		switch stalled := l.ob.stalledFor(now); {
		case stalled >= stall:
			l.core.abort(errCallerStalled)
			return
		case stalled > 0:
			l.stallAt = now.Add(stall - stalled)
		default:
			if empty, _, _ := l.ob.check(done); empty {
				l.stallAt = time.Time{}
			} else {
				l.stallAt = now.Add(stall)
			}
		}
	}
	l.core.onTick(now)
}
