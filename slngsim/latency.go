package slngsim

import (
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
)

// The network between a client and SLNG puts latency on every message, not
// only on the dial: 20-80 ms of round trip from a cluster to a regional
// host is normal. With Options.Latency the simulator holds every byte it
// receives and every byte it sends for a one-way delay, so that every
// frame (pings, pongs and closes included), the upgrade and a connection's
// end (FIN) cross the network late, as on a real one. TCP's own handshake
// is one more round trip: a connection's first bytes arrive no sooner than
// one round trip after it was accepted. TLS is not simulated; a dial to
// SLNG pays one more round trip for it, which Options.ConnectLatency can
// stand for.
//
// Each connection has a delay line per direction: a goroutine and a bounded
// queue of timestamped writes. A write is due at its arrival plus the
// latency and a jitter drawn for it, and never before the write ahead of
// it: a delayed frame never overtakes an earlier one, as on a TCP
// connection. A full queue stops the reading (inbound) or the writer
// (outbound), which TCP then passes on.

// delayQueue bounds the writes in flight per direction of a connection.
const delayQueue = 256

// delayReadSize is the most one read from the socket takes into one
// timestamped chunk.
const delayReadSize = 32 << 10

// aLongTimeAgo is a deadline that has passed: it stops a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// netDelay is the one-way delay of every chunk: latency, plus or minus a
// uniform jitter, never below zero.
type netDelay struct {
	latency, jitter time.Duration
}

func (d netDelay) next() time.Duration {
	if d.jitter <= 0 {
		return d.latency
	}
	j := time.Duration(rand.Int64N(int64(2*d.jitter)+1)) - d.jitter
	return max(d.latency+j, 0)
}

// delayListener hands out connections whose traffic crosses delay lines.
// It owns their goroutines: closeAll cuts the connections and waits for
// them.
type delayListener struct {
	net.Listener
	d netDelay

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[*delayConn]struct{}
	closed bool
}

func newDelayListener(l net.Listener, d netDelay) *delayListener {
	return &delayListener{Listener: l, d: d, conns: map[*delayConn]struct{}{}}
}

// Accept wraps the next connection in delay lines.
func (l *delayListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := newDelayConn(raw, l.d)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = raw.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	l.wg.Add(2)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		c.pumpIn()
	}()
	go func() {
		defer l.wg.Done()
		c.pumpOut()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	return c, nil
}

// closeAll cuts every connection still open or flushing, dropping what is
// in flight, and waits for the delay lines' goroutines. Accept refuses
// connections after it.
func (l *delayListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.cutNow()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// chunk is what one read from the socket, or one write to it, carried,
// with the time it is due at the other end. The last chunk inbound
// carries the end of the stream (io.EOF, or the socket's error).
type chunk struct {
	data []byte
	due  time.Time
	err  error
}

// delayConn is a connection whose traffic crosses two delay lines. Its
// methods may be called concurrently, as net.Conn's; Reads are served one
// at a time, as are Writes.
type delayConn struct {
	raw      net.Conn
	d        netDelay
	accepted time.Time

	in  chan chunk // pumpIn to Read
	out chan chunk // Write to pumpOut

	closing chan struct{} // closed by Close: flush what was written, then close
	cut     chan struct{} // closed by cutNow: drop everything
	// dead is closed by the first of Close and cutNow: Reads and Writes
	// fail from then on.
	dead      chan struct{}
	closeOnce sync.Once
	cutOnce   sync.Once
	deadOnce  sync.Once

	// rmu serializes Reads; cur is the chunk being read, owned by the
	// Read holding rmu. ready says that cur is due.
	rmu   sync.Mutex
	cur   chunk
	ready bool

	// wmu serializes Writes; lastOut is the due time of the last write,
	// under wmu.
	wmu     sync.Mutex
	lastOut time.Time

	// dl holds the deadlines; changed is closed and replaced whenever one
	// changes, so that a waiting Read or Write looks again.
	dlMu    sync.Mutex
	rdl     time.Time
	wdl     time.Time
	changed chan struct{}
}

func newDelayConn(raw net.Conn, d netDelay) *delayConn {
	return &delayConn{
		raw: raw, d: d, accepted: time.Now(),
		in: make(chan chunk, delayQueue), out: make(chan chunk, delayQueue),
		closing: make(chan struct{}), cut: make(chan struct{}), dead: make(chan struct{}), changed: make(chan struct{}),
	}
}

// pumpIn reads the socket and queues what it reads, each chunk due one
// delay after it arrived. It ends with the stream, queuing its end.
func (c *delayConn) pumpIn() {
	buf := make([]byte, delayReadSize)
	var last time.Time
	// TCP's handshake: the client's first bytes leave one round trip
	// after it connected, and arrive one delay later.
	earliest := c.accepted.Add(2 * c.d.latency)
	for {
		n, err := c.raw.Read(buf)
		now := time.Now()
		if now.Before(earliest) {
			now = earliest
		}
		ch := chunk{due: now.Add(c.d.next()), err: err}
		if ch.due.Before(last) {
			ch.due = last
		}
		last = ch.due
		if n > 0 {
			ch.data = append([]byte(nil), buf[:n]...)
		}
		select {
		case c.in <- ch:
		case <-c.closing:
			return
		case <-c.cut:
			return
		}
		if err != nil {
			return
		}
	}
}

// pumpOut writes each queued chunk to the socket when it is due. After
// Close it writes what was queued before, then closes the socket, so that
// the peer sees the end after the last byte, one delay late.
func (c *delayConn) pumpOut() {
	defer c.raw.Close()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var ch chunk
		select {
		case ch = <-c.out:
		case <-c.cut:
			return
		case <-c.closing:
			select {
			case ch = <-c.out:
			default:
				return
			}
		}
		if wait := time.Until(ch.due); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-c.cut:
				return
			}
		}
		if _, err := c.raw.Write(ch.data); err != nil {
			c.cutNow()
			return
		}
	}
}

// Read returns bytes that are due, waiting for them.
func (c *delayConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if !c.ready {
			if len(c.cur.data) == 0 && c.cur.err == nil {
				ch, err := c.waitRead(c.in, time.Time{})
				if err != nil {
					return 0, err
				}
				c.cur = ch
			}
			if _, err := c.waitRead(nil, c.cur.due); err != nil {
				return 0, err // cur stays, for the next Read
			}
			c.ready = true
		}
		if len(c.cur.data) > 0 {
			n := copy(p, c.cur.data)
			c.cur.data = c.cur.data[n:]
			if len(c.cur.data) == 0 && c.cur.err == nil {
				c.ready = false
			}
			return n, nil
		}
		if c.cur.err != nil {
			return 0, c.cur.err // the end of the stream stays
		}
		c.ready = false
	}
}

// waitRead waits for a chunk from from or, with from nil, until until,
// within the read deadline and while the connection is open.
func (c *delayConn) waitRead(from <-chan chunk, until time.Time) (chunk, error) {
	for {
		dl, changed := c.deadline(true)
		now := time.Now()
		if !dl.IsZero() && !now.Before(dl) {
			return chunk{}, os.ErrDeadlineExceeded
		}
		if from == nil && !now.Before(until) {
			return chunk{}, nil
		}
		end := dl
		if from == nil && (end.IsZero() || until.Before(end)) {
			end = until
		}
		timeout, stop := timerAt(end)
		select {
		case ch := <-from:
			stop()
			return ch, nil
		case <-c.dead:
			stop()
			return chunk{}, net.ErrClosed
		case <-timeout:
		case <-changed:
			stop()
		}
	}
}

// deadline returns the read (or write) deadline and a channel that is
// closed when either deadline changes.
func (c *delayConn) deadline(read bool) (time.Time, <-chan struct{}) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if read {
		return c.rdl, c.changed
	}
	return c.wdl, c.changed
}

// timerAt returns a channel that fires at t, or never for a zero t, and
// the function that stops its timer.
func timerAt(t time.Time) (<-chan time.Time, func() bool) {
	if t.IsZero() {
		return nil, func() bool { return false }
	}
	tm := time.NewTimer(time.Until(t))
	return tm.C, tm.Stop
}

// Write queues p to be written one delay from now. It returns at once
// unless the queue is full; then it waits for room within the write
// deadline.
func (c *delayConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	due := time.Now().Add(c.d.next())
	if due.Before(c.lastOut) {
		due = c.lastOut
	}
	ch := chunk{data: append([]byte(nil), p...), due: due}
	for {
		dl, changed := c.deadline(false)
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		timeout, stop := timerAt(dl)
		select {
		case <-c.dead:
			stop()
			return 0, net.ErrClosed
		default:
		}
		select {
		case c.out <- ch:
			stop()
			c.lastOut = due
			return len(p), nil
		case <-c.dead:
			stop()
			return 0, net.ErrClosed
		case <-timeout:
		case <-changed:
			stop()
		}
	}
}

// Close ends the connection as a socket's close does: what was written
// still reaches the peer, one delay late, and then the end of the stream.
// Reads fail at once.
func (c *delayConn) Close() error {
	c.closeOnce.Do(func() {
		c.deadOnce.Do(func() { close(c.dead) })
		close(c.closing)
		// Stop pumpIn's read; pumpOut closes the socket once flushed.
		_ = c.raw.SetReadDeadline(aLongTimeAgo)
		// A peer that reads nothing must not hold the flush forever.
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.d.latency + c.d.jitter + 5*time.Second))
	})
	return nil
}

// cutNow closes the socket at once, dropping what is in flight.
func (c *delayConn) cutNow() {
	c.cutOnce.Do(func() {
		c.deadOnce.Do(func() { close(c.dead) })
		close(c.cut)
		_ = c.raw.Close()
	})
}

func (c *delayConn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *delayConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *delayConn) SetDeadline(t time.Time) error {
	c.setDeadlines(&t, &t)
	return nil
}

// SetReadDeadline bounds Reads, including one already waiting: net/http
// stops its background read of a connection it hands over this way.
func (c *delayConn) SetReadDeadline(t time.Time) error {
	c.setDeadlines(&t, nil)
	return nil
}

// SetWriteDeadline bounds a Write's wait for room in the queue.
func (c *delayConn) SetWriteDeadline(t time.Time) error {
	c.setDeadlines(nil, &t)
	return nil
}

func (c *delayConn) setDeadlines(r, w *time.Time) {
	c.dlMu.Lock()
	if r != nil {
		c.rdl = *r
	}
	if w != nil {
		c.wdl = *w
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.dlMu.Unlock()
}
