package slngclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
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

// frame is one message handed from the reader goroutine to Recv: audio
// (a binary frame, or JSON audio decoded into the reader's buffer, never
// empty), or a JSON message, with its error when it is an error frame.
type frame struct {
	audio    []byte
	sequence int64
	msg      *serverMsg
	err      *UpstreamError // msg is an error frame
}

// slot is one of the reader's two buffers: the consumer may still use the
// audio of the previous frame while the reader fills the other slot.
type slot struct {
	raw, dec []byte
}

// conn is the part of a session that TTS and STT share: the socket, the
// reader goroutine, the liveness goroutine and serialized writes.
type conn struct {
	ws        *websocket.Conn
	log       atomic.Pointer[zap.Logger] // gains the session id once ready
	id, reqID string

	ctx    context.Context // ends when the session ends
	cancel context.CancelFunc

	frames chan frame // unbuffered: the reader waits for Recv
	// fast, set while a TTSSession.RecvFast waits, takes audio frames on
	// the reader's goroutine instead of frames (see RecvFast). fastMu is
	// held while it runs, so that RecvFast returns only after it.
	fastMu     sync.Mutex
	fast       func(frame) bool
	readerDone chan struct{} // closed when the reader has exited and termErr is set
	liveDone   chan struct{}
	termErr    error // why the session ended; written before readerDone closes
	liveOn     bool  // the liveness goroutine runs; set by dial before it returns

	wmu      sync.Mutex
	lastSend atomic.Int64 // Unix nanoseconds of the last data frame sent
	// audioSent is when STT audio, a finalize or the end of the audio
	// last went out (Unix nanoseconds): an STT turn is in flight.
	audioSent atomic.Int64
	closedBy  atomic.Bool // Close or CloseNow was called
	pingLost  atomic.Bool // a ping went unanswered
	life      life        // signs of SLNG's life, and the proof ProveLife asks for (life.go)

	framesIn, audioBytes, unknown, malformed, keepalives, pings atomic.Int64

	handshake, ready time.Duration // set by dial before the session is returned
	readyAt          time.Time
}

// ended returns why the session ended, or nil while the reader runs. The
// reader always sets termErr (classify never returns nil) before it
// closes readerDone.
func (cn *conn) ended() error {
	select {
	case <-cn.readerDone:
		return cn.termErr
	default:
		return nil
	}
}

var (
	msgKeepalive = []byte(`{"type":"keepalive"}`)
	msgFlush     = []byte(`{"type":"flush"}`)
	msgClear     = []byte(`{"type":"clear"}`)
	msgCancel    = []byte(`{"type":"cancel"}`)
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

// write sends one message. Writes are serialized so that messages keep
// their order across goroutines.
func (cn *conn) write(ctx context.Context, typ websocket.MessageType, b []byte) error {
	if cn.closedBy.Load() {
		return ErrSessionClosed
	}
	return cn.send(ctx, typ, b)
}

// send is write without the check that the session is open: close sends
// `close` after marking the session closed.
func (cn *conn) send(ctx context.Context, typ websocket.MessageType, b []byte) error {
	cn.wmu.Lock()
	err := cn.ws.Write(ctx, typ, b)
	if err == nil {
		cn.lastSend.Store(time.Now().UnixNano())
	}
	cn.wmu.Unlock()
	if err == nil {
		if cn.life.armed.Load() != 0 {
			cn.startProof()
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The reader usually knows better why the socket failed.
	select {
	case <-cn.readerDone:
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

// nextFast is next, with fast taking audio frames meanwhile (see
// TTSSession.RecvFast). It returns only once no call of fast is running.
func (cn *conn) nextFast(ctx context.Context, fast func(frame) bool) (frame, error) {
	if fast == nil {
		return cn.next(ctx)
	}
	cn.fastMu.Lock()
	cn.fast = fast
	cn.fastMu.Unlock()
	f, err := cn.next(ctx)
	cn.clearFast()
	return f, err
}

// offerFast gives an audio frame to the fast taker of a waiting RecvFast,
// if there is one and it takes it.
func (cn *conn) offerFast(f frame) bool {
	cn.fastMu.Lock()
	defer cn.fastMu.Unlock()
	return cn.fast != nil && cn.fast(f)
}

// clearFast withdraws the fast taker.
func (cn *conn) clearFast() {
	cn.fastMu.Lock()
	cn.fast = nil
	cn.fastMu.Unlock()
}

// next waits for the next frame.
func (cn *conn) next(ctx context.Context) (frame, error) {
	// A frame the reader is already offering is taken without a select
	// over the session's end and ctx: under load, the common case.
	select {
	case f := <-cn.frames:
		return f, nil
	default:
	}
	select {
	case f := <-cn.frames:
		return f, nil
	case <-cn.readerDone:
		return frame{}, cn.termErr
	case <-ctx.Done():
		return frame{}, ctx.Err()
	}
}

// close ends the session gracefully: it sends `close`, then waits (within
// ctx) for SLNG to close the socket, discarding what arrives meanwhile.
func (cn *conn) close(ctx context.Context) error {
	// Marked first: SLNG may answer `close` before send returns, and the
	// reader must then report our close, not SLNG's (ErrSessionClosed,
	// not io.EOF).
	if cn.closedBy.Swap(true) {
		cn.shutdown()
		return nil
	}
	if werr := cn.send(ctx, websocket.MessageText, msgClose); werr == nil {
	wait:
		for {
			select {
			case <-cn.frames:
			case <-cn.readerDone:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	cn.shutdown()
	return nil
}

// shutdown closes the socket at once and waits for both goroutines.
func (cn *conn) shutdown() {
	cn.closedBy.Store(true)
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
