package service

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/clock"
)

// The plumbing every stream shares. A stream is one loop goroutine (the
// handler's), which owns all of the stream's state and decides everything,
// and three goroutines that only do I/O, each joined to the loop by one
// small queue:
//
//   - the caller's reader: stream.Recv, handed to the loop over a channel
//     of callerQueue messages (see readCaller);
//   - the caller's sender: stream.Send of what the loop put in the stream's
//     outbox, bounded in bytes (see outbox);
//   - the upstream writer: dials, writes and closes SLNG sessions in the
//     order the loop queued the commands (see mailbox), and reports back on
//     a channel.
//
// SLNG's side is read by the session's own reader goroutine, whose events
// the loop takes from the session's channel. No lock is held across I/O:
// each queue's lock guards only the queue.

// callerQueue bounds the caller's messages read ahead of the loop. A full
// queue holds the reader back, and through it the caller's HTTP/2 flow
// control.
const callerQueue = 8

// callerMsg is one message from the caller, or how its side ended (err;
// io.EOF for a half-close).
type callerMsg[M any] struct {
	msg M
	err error
}

// readCaller starts the caller's reader: it hands each message recv
// returns to the loop on out, until recv fails (that error is handed over
// too) or stop is closed. grpc-go releases a blocked Recv only when the
// handler returns, so the handler never waits for the reader: Server.Wait
// does.
func readCaller[M any](s *Server, recv func() (M, error), out chan<- callerMsg[M], stop <-chan struct{}) {
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		for {
			m, err := recv()
			select {
			case out <- callerMsg[M]{msg: m, err: err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
}

// mailbox is a FIFO from the loop to one goroutine that takes from it and
// may block meanwhile (the upstream writer). Putting never blocks: the
// loop bounds what it puts, by reading the caller only while fewer than
// limit items wait (see full), and learns on space when the taker has
// made room again.
type mailbox[T any] struct {
	mu      sync.Mutex
	items   []T
	head    int
	limit   int
	waiting bool // the taker waits on wake
	// full: the loop saw limit items waiting and waits for space.
	full   bool
	closed bool
	wake   chan struct{}
	space  chan struct{}
}

func newMailbox[T any](limit int) *mailbox[T] {
	return &mailbox[T]{limit: limit, wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// put appends v.
func (m *mailbox[T]) put(v T) {
	m.mu.Lock()
	m.items = append(m.items, v)
	wake := m.waiting
	m.waiting = false
	m.mu.Unlock()
	if wake {
		m.wake <- struct{}{} // buffered; only a waiting taker drains it
	}
}

// isFull reports whether limit items or more wait; the loop is then told
// on space when fewer do.
func (m *mailbox[T]) isFull() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.full = len(m.items)-m.head >= m.limit
	return m.full
}

// len is how many items wait.
func (m *mailbox[T]) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.items) - m.head
}

// take returns the oldest item, waiting for one, or false once the mailbox
// is closed.
func (m *mailbox[T]) take() (T, bool) {
	for {
		m.mu.Lock()
		if v, ok := m.popLocked(); ok || m.closed {
			ok = ok && !m.closed
			m.mu.Unlock()
			return v, ok
		}
		m.waiting = true
		m.mu.Unlock()
		<-m.wake
	}
}

// rest empties the mailbox of what was never taken: for its owner, once
// the mailbox is closed and its taker has returned.
func (m *mailbox[T]) rest() []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []T
	for v, ok := m.popLocked(); ok; v, ok = m.popLocked() {
		out = append(out, v)
	}
	return out
}

// tryTake returns the oldest item if there is one.
func (m *mailbox[T]) tryTake() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		var zero T
		return zero, false
	}
	return m.popLocked()
}

func (m *mailbox[T]) popLocked() (T, bool) {
	var zero T
	if m.head == len(m.items) {
		return zero, false
	}
	v := m.items[m.head]
	m.items[m.head] = zero
	m.head++
	if m.head == len(m.items) {
		m.items, m.head = emptied(m.items), 0
	}
	if m.full && len(m.items)-m.head < m.limit {
		m.full = false
		select {
		case m.space <- struct{}{}:
		default: // one is pending already
		}
	}
	return v, true
}

// emptied is a drained queue ready for reuse: the same array unless a
// backlog grew it past maxKeptQueue.
func emptied[T any](items []T) []T {
	if cap(items) > maxKeptQueue {
		return nil
	}
	return items[:0]
}

// close ends the mailbox: the taker stops, and what waits is dropped.
func (m *mailbox[T]) close() {
	m.mu.Lock()
	m.closed = true
	wake := m.waiting
	m.waiting = false
	m.mu.Unlock()
	if wake {
		m.wake <- struct{}{}
	}
}

// outbox holds the responses the loop made for the caller until the
// caller's sender has sent them. It is bounded in bytes, per stream and
// across the gateway (see paused): SLNG's audio for a caller that reads
// more slowly than SLNG speaks waits here, while the session's reader
// keeps reading SLNG.
type outbox[R any] struct {
	clock clock.Clock // for how long a send has lasted
	mu    sync.Mutex
	items []outItem[R]
	head  int
	bytes int // queued
	// waiting: the sender waits on wake; sending: it sends a response it
	// took.
	waiting, sending bool
	closed           bool
	// watch: the loop wants a notify when the sender has sent something
	// (it waits for room, or for the outbox to empty).
	watch bool
	err   error // the send that failed
	free  []R   // sent responses kept for reuse (see recycle)

	wake   chan struct{} // to the sender
	notify chan struct{} // to the loop
	// sendingSince is when the send in progress began (Unix nanoseconds),
	// 0 between sends: a send that lasts is a caller that accepts nothing.
	sendingSince atomic.Int64
	// total is the gateway's count of queued bytes, across streams.
	total *atomic.Int64
	// limit and max bound the bytes queued, per stream and across the
	// gateway (see over).
	limit int
	max   int64
	// recycle, when not nil, says whether a sent response may be reused.
	recycle func(R) bool
}

type outItem[R any] struct {
	r R
	n int // bytes
}

// maxFree bounds the responses an outbox keeps for reuse: enough for the
// chunks in flight between the loop and a sender that keeps up; a backlog
// that drained leaves no more behind.
const maxFree = 8

// maxKeptQueue is the largest queue capacity an outbox or a mailbox keeps
// once it is empty: a backlog's array is let go when it has drained.
const maxKeptQueue = 256

// newOutbox returns an outbox bounded to limit bytes, and to max bytes
// across the gateway as counted in total (0: no such bound).
func newOutbox[R any](clk clock.Clock, limit int, total *atomic.Int64, max int64, recycle func(R) bool) *outbox[R] {
	return &outbox[R]{clock: clk, wake: make(chan struct{}, 1), notify: make(chan struct{}, 1),
		limit: limit, total: total, max: max, recycle: recycle}
}

// push queues r, of n bytes, for the sender. It reports the outbox over
// its bounds; the loop is then notified after the sender's next send.
func (o *outbox[R]) push(r R, n int) (over bool) {
	o.total.Add(int64(n))
	o.mu.Lock()
	o.items = append(o.items, outItem[R]{r, n})
	o.bytes += n
	wake := o.waiting
	o.waiting = false
	over = o.overLocked()
	o.watch = o.watch || over
	o.mu.Unlock()
	if wake {
		o.wake <- struct{}{}
	}
	return over
}

// overLocked: the stream's queue is at its limit, or the gateway's is and
// this stream holds some of it (a stream with nothing queued may always
// read: it is not the one behind).
func (o *outbox[R]) overLocked() bool {
	return o.bytes >= o.limit || (o.head < len(o.items) && o.max > 0 && o.total.Load() >= o.max)
}

// reuse returns a sent response kept for reuse, if there is one.
func (o *outbox[R]) reuse() (R, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var zero R
	if len(o.free) == 0 {
		return zero, false
	}
	r := o.free[len(o.free)-1]
	o.free[len(o.free)-1] = zero
	o.free = o.free[:len(o.free)-1]
	return r, true
}

// check is what the loop needs to know of the outbox: whether it has sent
// everything, whether it is over its bounds, and the error of a send that
// failed. The loop is notified after the sender's next send when it is
// over its bounds, or when the loop says it waits for the outbox to empty.
func (o *outbox[R]) check(waiting bool) (empty, over bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	empty, over = o.head == len(o.items) && !o.sending, o.overLocked()
	o.watch = over || waiting
	return empty, over, o.err
}

// close stops the sender after the send in progress; what waits is
// dropped.
func (o *outbox[R]) close() {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	left := o.bytes
	o.bytes = 0
	o.items, o.head = nil, 0
	wake := o.waiting
	o.waiting = false
	o.mu.Unlock()
	o.total.Add(-int64(left))
	if wake {
		o.wake <- struct{}{}
	}
}

// stalledFor is how long the send in progress has lasted, 0 if none.
func (o *outbox[R]) stalledFor(now time.Time) time.Duration {
	if since := o.sendingSince.Load(); since != 0 {
		return now.Sub(time.Unix(0, since))
	}
	return 0
}

// send is the caller's sender: it sends what the loop queued, in order,
// until the outbox is closed or a send fails (the loop is notified).
func (o *outbox[R]) send(send func(R) error) {
	for {
		o.mu.Lock()
		for !o.closed && o.head == len(o.items) {
			o.waiting = true
			o.mu.Unlock()
			<-o.wake
			o.mu.Lock()
		}
		if o.closed {
			o.mu.Unlock()
			return
		}
		it := o.items[o.head]
		o.items[o.head] = outItem[R]{}
		o.head++
		if o.head == len(o.items) {
			o.items, o.head = emptied(o.items), 0
		}
		o.sending = true
		o.mu.Unlock()

		o.sendingSince.Store(o.clock.Now().UnixNano())
		err := send(it.r)
		o.sendingSince.Store(0)

		o.mu.Lock()
		o.sending = false
		if !o.closed {
			o.bytes -= it.n
			o.total.Add(-int64(it.n))
		}
		if err == nil && o.recycle != nil && len(o.free) < maxFree && o.recycle(it.r) {
			o.free = append(o.free, it.r)
		}
		if err != nil && o.err == nil {
			o.err = err
		}
		tell := o.watch || err != nil
		o.watch = false
		o.mu.Unlock()
		if tell {
			select {
			case o.notify <- struct{}{}:
			default: // one is pending already
			}
		}
		if err != nil {
			return
		}
	}
}
