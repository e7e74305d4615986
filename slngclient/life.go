package slngclient

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// A session that sat idle may have lost its peer without a FIN: a NAT or a
// load balancer that forgot the connection, a host that vanished. Nothing
// shows it but a round trip. Pinging before the first message costs every
// caller that round trip, on every turn that starts a stream; ProveLife
// runs the proof beside the first message instead: the message goes out at
// once, a ping right after it, and only a peer that stays silent ends the
// session, early enough for the caller to replay its message on another.

// life is what a session knows of its peer being there: when it last heard
// from it, and the proof of life ProveLife asked for.
type life struct {
	heard atomic.Int64 // Unix nanoseconds of the last frame or pong received
	// armed is the bound of a proof waiting for the session's next
	// message, 0 when none is.
	armed  atomic.Int64
	failed atomic.Bool // a proof went unanswered and ended the session

	mu     sync.Mutex // guards closed and wg.Add
	closed bool       // the session is shutting down: no proof starts
	wg     sync.WaitGroup
}

// heardNow records a sign of life. It runs on the session's reader, and
// on coder/websocket's handling of a pong there: a store and nothing else.
func (l *life) heardNow() { l.heard.Store(time.Now().UnixNano()) }

// ProveLife asks for a proof that SLNG is still there, given beside the
// session's next message rather than before it: right after that message
// (text, audio, any other) goes out, a ping follows it, and unless the pong
// or any frame arrives within `within` of the message, the session ends
// with a retryable *UpstreamError of KindTimeout, as one whose pings go
// unanswered does, and LifeUnproven reports true. The caller sees an
// ordinary session end before any answer to its message, and may replay
// the message on another session. A frame counts because a pong can wait
// behind audio the caller has not read yet.
//
// ProveLife does not block. It does nothing when within is not positive or
// a proof is already waiting for its message.
func (s *session) ProveLife(within time.Duration) {
	if within > 0 {
		s.cn.life.armed.CompareAndSwap(0, int64(within))
	}
}

// LifeUnproven reports whether the session ended because a proof of life
// (ProveLife) went unanswered.
func (s *session) LifeUnproven() bool { return s.cn.life.failed.Load() }

// Heard is when SLNG was last heard from on the session: the last frame
// received (`ready`, at first), or the last pong.
func (s *session) Heard() time.Time { return time.Unix(0, s.cn.life.heard.Load()) }

// startProof starts the proof armed by ProveLife, if any, after a message
// went out; framesAt frames had arrived before it was written. send calls
// it after every successful write.
func (cn *conn) startProof(framesAt int64) {
	within := time.Duration(cn.life.armed.Swap(0))
	if within <= 0 {
		return
	}
	deadline := time.Now().Add(within)
	cn.life.mu.Lock()
	defer cn.life.mu.Unlock()
	if cn.life.closed {
		return
	}
	cn.life.wg.Add(1)
	go cn.prove(deadline, framesAt)
}

// prove pings and waits until deadline for the pong; without it, and
// without any frame since the message (framesAt frames had arrived), it
// ends the session. The session's shutdown waits for it (stopProofs).
func (cn *conn) prove(deadline time.Time, framesAt int64) {
	defer cn.life.wg.Done()
	ctx, cancel := context.WithDeadline(cn.ctx, deadline)
	defer cancel()
	cn.pings.Add(1)
	if err := cn.ws.Ping(ctx); err == nil || ctx.Err() == nil || cn.ctx.Err() != nil || cn.ended() != nil {
		// Proven; or the ping could not be written, which the reader
		// reports better; or the session ended anyway.
		return
	}
	if cn.framesIn.Load() != framesAt {
		return // SLNG spoke: the pong waits behind frames not yet read
	}
	cn.life.failed.Store(true)
	// The reader then reports the session's end as a lost ping would
	// (classify), a retryable timeout.
	cn.pingLost.Store(true)
	cn.ws.CloseNow()
}

// stopProofs stops new proofs and waits for those running; shutdown calls
// it once the session's context has ended.
func (cn *conn) stopProofs() {
	cn.life.mu.Lock()
	cn.life.closed = true
	cn.life.mu.Unlock()
	cn.life.wg.Wait()
}
