package service

// synthState is what a Synthesize stream decides on beside its turns, as
// one value (synthCore's): how the stream is ending, and what its current
// upstream session is good for.
type synthState struct {
	ending   ending
	upstream upstreamState
}

// ending says who has asked the stream to end. A caller's half-close and
// a server drain are independent: a drain may come while the turns before
// a half-close finish.
type ending uint8

const (
	// halfClosed: the caller sent everything; flushed turns finish, then
	// the stream ends with OK.
	halfClosed ending = 1 << iota
	// draining: the server shuts down; flushed turns finish, then the
	// stream ends with SERVER_DRAINING unless the caller half-closed.
	draining
)

// upstreamState is what the stream's current upstream session is good for.
type upstreamState uint8

const (
	// upClean: live, and every turn on it ended cleanly so far; it may go
	// back to the pool when the stream ends.
	upClean upstreamState = iota
	// upDirty: live, but it saw a clear, a cancel, a warning or text never
	// flushed, so it must not serve another stream.
	upDirty
	// upGone: it ended between turns (a route that closes after every
	// turn, or a rollover); the next text dials a new one.
	upGone
)

func (s synthState) has(e ending) bool { return s.ending&e != 0 }

// ended reports that the caller half-closed or the server drains.
func (s synthState) ended() bool { return s.has(halfClosed | draining) }

// markDirty keeps a live session from the pool.
func (s *synthState) markDirty() {
	if s.upstream == upClean {
		s.upstream = upDirty
	}
}

// keepable reports a session that may go back to the pool as far as the
// stream is concerned: the caller half-closed, no drain, nothing spoiled it.
func (s synthState) keepable() bool {
	return s.ending == halfClosed && s.upstream == upClean
}
