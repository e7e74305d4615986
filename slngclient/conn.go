package slngclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// Stats counts what one session saw and did.
type Stats struct {
	FramesIn   int64 // messages received, text and binary
	AudioBytes int64 // audio bytes received (TTS) or sent (STT)
	// UnknownTypes counts messages ignored because this client does not
	// know their type or they carry nothing it uses: JSON audio frames
	// without audio ({"audio": null}), and audio on an STT session.
	UnknownTypes   int64
	Malformed      int64 // text frames that were not valid JSON, ignored
	KeepalivesSent int64
	PingsSent      int64
	// Handshake is how long the WebSocket handshake took; Ready, the wait
	// from sending init to receiving ready.
	Handshake, Ready time.Duration
	// ReadyAt is when the session became ready.
	ReadyAt time.Time
}

// frame is one message read from the socket: audio (a binary frame, or
// JSON audio decoded into the reader's buffer, never empty), or a JSON
// message, with its error when it is an error frame.
type frame struct {
	audio    []byte
	sequence int64
	msg      *serverMsg
	err      *UpstreamError // msg is an error frame
	// align is where the frame's alignment is, if it has any: parsed only
	// for a TTS consumer that asked (TTSSession.SetAlignment).
	align alignRaw
}

// slot is one of the reader's two buffers: the consumer may still use the
// audio of the previous frame while the reader fills the other slot.
type slot struct {
	raw, dec []byte
}

// sink is what a session does with the frames that follow `ready`: the
// TTS and STT sessions turn them into their events and hand those to their
// consumer. Both methods run on the reader goroutine only.
type sink interface {
	// deliver handles f. It returns handed when the consumer got an event
	// that may still use f's buffer (the reader then fills the other slot
	// next), and false in ok when the session shut down while it waited.
	deliver(f frame) (handed, ok bool)
	// finish runs once the session has ended, termErr set: the consumer
	// gets what the end itself means (a TTS turn ended by the close), then
	// its events channel is closed.
	finish(termErr error)
}

// conn is the part of a session that TTS and STT share: the socket, the
// reader goroutine, the liveness goroutine and serialized writes.
type conn struct {
	ws        *websocket.Conn
	log       atomic.Pointer[zap.Logger] // gains the session id once ready
	id, reqID string

	ctx    context.Context // ends when the session ends
	cancel context.CancelFunc

	// frames carries what comes before `ready` to the dialer (awaitReady);
	// everything after it goes to sink. Unbuffered.
	frames     chan frame
	sink       sink          // set before the reader starts
	termDone   chan struct{} // closed once termErr is set
	readerDone chan struct{} // closed when the reader has exited: termErr set, every event handed over
	liveDone   chan struct{}
	termErr    error // why the session ended; written before termDone closes
	liveOn     bool  // the liveness goroutine runs; set by dial before it returns

	// The consumer holding the reader back (see give): heldSince is when
	// the current wait began (Unix nanoseconds, 0 while the reader is not
	// waiting), heldTotal the time all finished waits took, and
	// longHoldEnd when the last wait of at least longHold ended. Liveness
	// does not blame SLNG for a pong the reader could not read meanwhile,
	// and a close read right after a long wait is the consumer's doing.
	heldSince, heldTotal, longHoldEnd atomic.Int64

	lastSend atomic.Int64 // Unix nanoseconds of the last data frame sent
	// audioSent is when STT audio, a finalize or the end of the audio
	// last went out (Unix nanoseconds): an STT turn is in flight.
	audioSent atomic.Int64
	closedBy  atomic.Bool   // Close or CloseNow was called
	closing   chan struct{} // closed with closedBy's first set (see markClosed)
	pingLost  atomic.Bool   // a ping went unanswered
	life      life          // signs of SLNG's life, and the proof ProveLife asks for (life.go)

	framesIn, audioBytes, unknown, malformed, keepalives, pings atomic.Int64

	handshake, ready time.Duration // set by dial before the session is returned
	readyAt          time.Time
}

// ended returns why the session ended, or nil while the reader runs. The
// reader always sets termErr (classify never returns nil) before it
// closes termDone.
func (cn *conn) ended() error {
	select {
	case <-cn.termDone:
		return cn.termErr
	default:
		return nil
	}
}

var (
	msgKeepalive = []byte(`{"type":"keepalive"}`)
	msgFlush     = []byte(`{"type":"flush"}`)
	msgClear     = []byte(`{"type":"clear"}`)
	msgClose     = []byte(`{"type":"close"}`)
	msgFinalize  = []byte(`{"type":"finalize"}`)
)

func (cn *conn) writeJSON(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("slng: encode message: %w", err)
	}
	return cn.write(ctx, websocket.MessageText, b)
}

// write sends one message. coder/websocket writes each message whole, and
// may be called from several goroutines; messages written from one
// goroutine keep their order.
func (cn *conn) write(ctx context.Context, typ websocket.MessageType, b []byte) error {
	if cn.closedBy.Load() {
		return ErrSessionClosed
	}
	return cn.send(ctx, typ, b)
}

// send is write without the check that the session is open: close sends
// `close` after marking the session closed.
func (cn *conn) send(ctx context.Context, typ websocket.MessageType, b []byte) error {
	// Counted before the write: SLNG's answer may be read before the
	// write returns, and it proves life as much as a pong.
	frames := cn.framesIn.Load()
	err := cn.ws.Write(ctx, typ, b)
	if err == nil {
		cn.lastSend.Store(time.Now().UnixNano())
		if cn.life.armed.Load() != 0 {
			cn.startProof(frames)
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The reader usually knows better why the socket failed.
	select {
	case <-cn.termDone:
		if cn.termErr == io.EOF {
			return NewClosedEarly("upstream closed the session")
		}
		return cn.termErr
	case <-time.After(100 * time.Millisecond):
	}
	return lost("write failed", err)
}

// turnWindow is how long after STT audio went out a close counts as one in
// the middle of a turn (see closeRows): SLNG reaps sessions that have been
// idle for seconds, and real-time audio comes every 20-100 ms.
const turnWindow = 2 * time.Second

// sentAudioRecently reports whether an STT turn is in flight.
func (cn *conn) sentAudioRecently() bool {
	at := cn.audioSent.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < turnWindow
}

// writeTurn sends an STT message that keeps a turn in flight: audio, a
// finalize, or the end of the audio.
// It is marked before it goes out, so that the reader, seeing SLNG's
// answer, always finds the mark.
func (cn *conn) writeTurn(ctx context.Context, typ websocket.MessageType, b []byte) error {
	cn.audioSent.Store(time.Now().UnixNano())
	return cn.write(ctx, typ, b)
}

// give hands v to the consumer on ch, waiting while it is busy, unless the
// session is being closed (v is then dropped: close discards what
// arrives) or shut down first (false for both). The time it waits is the consumer
// holding the reader back: it is counted (see conn.heldSince), so that
// neither liveness nor a close that follows blames SLNG for it. A consumer
// already waiting takes v without the cost of a select over both: per
// audio frame, that is the common case.
func give[E any](cn *conn, ch chan<- E, v E) bool {
	select {
	case ch <- v:
		return true
	default:
	}
	start := time.Now()
	cn.heldSince.Store(start.UnixNano())
	defer func() {
		end := time.Now()
		d := end.Sub(start)
		cn.heldTotal.Add(int64(d))
		cn.heldSince.Store(0)
		if d >= longHold {
			cn.longHoldEnd.Store(end.UnixNano())
		}
	}()
	select {
	case ch <- v:
		return true
	case <-cn.closing:
		return false
	case <-cn.ctx.Done():
		return false
	}
}

// longHold is how long the consumer must hold the reader back for a close
// read right after to be put down to it (see classify): a close that SLNG
// sent while nobody read its frames may well be SLNG shedding a reader
// that fell behind.
const longHold = time.Second

// heldFor is how long the consumer has held the reader back in all, the
// wait in progress included.
func (cn *conn) heldFor(now time.Time) time.Duration {
	d := time.Duration(cn.heldTotal.Load())
	if since := cn.heldSince.Load(); since != 0 {
		d += now.Sub(time.Unix(0, since))
	}
	return d
}

// close ends the session gracefully: it sends `close`, then waits (within
// ctx) for SLNG to close the socket, discarding what arrives meanwhile.
func (cn *conn) close(ctx context.Context) error {
	// Marked first: SLNG may answer `close` before send returns, and the
	// reader must then report our close, not SLNG's (ErrSessionClosed,
	// not io.EOF).
	if !cn.markClosed() {
		cn.shutdown()
		return nil
	}
	if werr := cn.send(ctx, websocket.MessageText, msgClose); werr == nil {
		// give discards what arrives meanwhile (closing is closed).
		select {
		case <-cn.readerDone:
		case <-ctx.Done():
		}
	}
	cn.shutdown()
	return nil
}

// markClosed records that the session is being closed on our side, and
// reports whether this call did it.
func (cn *conn) markClosed() bool {
	if cn.closedBy.Swap(true) {
		return false
	}
	close(cn.closing)
	return true
}

// shutdown closes the socket at once and waits for both goroutines.
func (cn *conn) shutdown() {
	cn.markClosed()
	cn.cancel()
	cn.ws.CloseNow()
	<-cn.readerDone
	if cn.liveOn {
		<-cn.liveDone
	}
	cn.stopProofs()
}

func (cn *conn) stats() Stats {
	return Stats{
		FramesIn:       cn.framesIn.Load(),
		AudioBytes:     cn.audioBytes.Load(),
		UnknownTypes:   cn.unknown.Load(),
		Malformed:      cn.malformed.Load(),
		KeepalivesSent: cn.keepalives.Load(),
		PingsSent:      cn.pings.Load(),
		Handshake:      cn.handshake,
		Ready:          cn.ready,
		ReadyAt:        cn.readyAt,
	}
}

// opaque keeps an error's text but not its chain when the chain holds
// io.EOF: a lost connection must not pass for the normal close that Recv
// reports as io.EOF, and errors.Is(err, io.EOF) would say it does.
func opaque(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New(err.Error())
	}
	return err
}
