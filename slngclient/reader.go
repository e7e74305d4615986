package slngclient

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// readLoop is the session's only reader. It reads the socket continuously:
// each frame goes to the dialer until `ready`, then to the session's sink,
// which hands its event to the consumer. The reader waits only while the
// consumer is busy with the event before (the consumer sets the pace: a
// consumer that stops taking events stops the reading and, through TCP,
// SLNG); that wait is counted as held (see give), never as SLNG's silence.
func (cn *conn) readLoop() {
	var slots [2]slot
	var lastErr *UpstreamError // the last data frame, when it was an error (the reader's own copy)
	var lastErrAt time.Time
	// inAudio: TTS audio has come since the last end of a turn. Only what
	// SLNG sent counts, so that a close SLNG sent before it saw our text
	// is not taken for one in the middle of a turn.
	var inAudio bool
	ready := false // `ready` went to the dialer: frames go to the sink now
	var i int
	err := func() error {
		for {
			// No context: the socket is closed to stop the reader
			// (shutdown, liveness), and a cancellable context would cost
			// coder/websocket a context.AfterFunc on every read.
			typ, r, err := cn.ws.Reader(context.Background())
			if err != nil {
				return err
			}
			// The slot of the frame handed over before this one may still
			// be in use; i moves on only when a frame is handed over, so
			// a skipped frame never overwrites it.
			s := &slots[i&1]
			s.raw, err = readAll(r, s.raw[:0])
			if err != nil {
				return err
			}
			cn.framesIn.Add(1)
			cn.life.heardNow()
			var f frame
			if typ == websocket.MessageBinary {
				if len(s.raw) == 0 {
					continue
				}
				f.audio = s.raw
			} else {
				f, err = decodeFrame(s.raw, s.dec)
				if err != nil {
					cn.malformed.Add(1)
					cn.log.Load().Debug("ignoring malformed frame", zap.Int("bytes", len(s.raw)))
					continue
				}
				if f.audio != nil {
					s.dec = f.audio[:0:cap(f.audio)]
				}
			}
			lastErr = nil
			if f.err != nil {
				c := *f.err
				lastErr = &c
				lastErrAt = time.Now()
			}
			if f.audio != nil {
				cn.audioBytes.Add(int64(len(f.audio)))
				inAudio = true
			}
			if f.msg != nil && endsTurn(f.msg.Type) {
				inAudio = false
			}
			handed, ok := true, true
			if ready {
				handed, ok = cn.sink.deliver(f)
			} else {
				ok = give(cn, cn.frames, f)
				ready = ok && f.audio == nil && f.msg != nil && f.msg.Type == "ready"
			}
			if !ok {
				if cn.ctx.Err() != nil {
					return cn.ctx.Err()
				}
				continue // being closed: the frame is dropped
			}
			if handed {
				// The consumer is done with the frame before this one:
				// its slot is filled next, and a large buffer of it goes
				// now rather than when the next frame comes.
				i++
				slots[i&1].shrink()
			}
		}
	}()
	if lastErr != nil && time.Since(lastErrAt) > fatalFrameWindow {
		// An error frame on a socket SLNG kept open (a mid-turn error)
		// does not explain a close that comes much later, such as an
		// idle reap: that close is classified on its own.
		lastErr = nil
	}
	ph := phaseIdle
	if inAudio || cn.sentAudioRecently() {
		ph = phaseTurn
	}
	cn.termErr = cn.classify(err, lastErr, ph)
	close(cn.termDone)
	if ready {
		cn.sink.finish(cn.termErr)
	}
	cn.cancel() // stops liveness
	close(cn.readerDone)
}

// maxKeptBuffer is the largest read buffer a slot keeps between frames: a
// rare large frame's buffer is let go once the frame is done with, instead
// of staying with the session for its whole life.
const maxKeptBuffer = 64 << 10

// shrink lets go of buffers a large frame grew, before the slot is reused.
func (s *slot) shrink() {
	if cap(s.raw) > maxKeptBuffer {
		s.raw = nil
	}
	if cap(s.dec) > maxKeptBuffer {
		s.dec = nil
	}
}

// fatalFrameWindow is how soon after an error frame a close must come for
// the frame to be taken as the close's reason: SLNG's fatal errors are a
// frame and, at once, the close.
const fatalFrameWindow = time.Second

// readAll reads a message into buf, reusing its capacity. The read limit
// set on the socket bounds it.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// classify turns the reader's final error into what Recv reports. ph says
// whether a turn was in flight. A failure that follows the consumer
// holding the reader back is reported as a *HeldBackError (see heldBack);
// a normal close stays one.
func (cn *conn) classify(err error, lastErr *UpstreamError, ph phase) error {
	if cn.closedBy.Load() {
		return ErrSessionClosed
	}
	end := cn.classifyEnd(err, lastErr, ph)
	if end == io.EOF {
		return end
	}
	if held := cn.heldBack(); held != nil {
		held.Err = end
		return held
	}
	return end
}

func (cn *conn) classifyEnd(err error, lastErr *UpstreamError, ph phase) error {
	if cn.pingLost.Load() {
		return (&UpstreamError{Kind: KindTimeout, Message: "upstream stopped answering pings", CloseCode: 1006}).classified()
	}
	code := int(websocket.CloseStatus(err))
	var ce websocket.CloseError
	reason := ""
	if errors.As(err, &ce) {
		reason = ce.Reason
	}
	if lastErr != nil && lastErr.Code == "" && code != -1 && code != int(websocket.StatusNormalClosure) {
		// A frame that names no code says nothing the close code does
		// not: the close is classified on its own (a 1008 after it is a
		// reap like any other), and keeps the frame's message.
		return (&UpstreamError{Kind: KindClose, CloseCode: code, CloseReason: reason, Message: lastErr.Message, phase: ph}).classified()
	}
	switch {
	case lastErr != nil:
		// SLNG's fatal errors are an error frame, then the close: the frame
		// says what happened.
		ue := *lastErr
		ue.CloseCode, ue.CloseReason, ue.phase = code, reason, ph
		if code == -1 {
			ue.CloseCode = 1006
		}
		return &ue
	case code == int(websocket.StatusNormalClosure):
		return io.EOF
	case code == int(websocket.StatusMessageTooBig) || (code == -1 && strings.Contains(err.Error(), "read limited")):
		return (&UpstreamError{Kind: KindProtocol, Message: "upstream message exceeds the read limit", CloseCode: code}).classified()
	case code != -1:
		// What a close means depends on the phase: see closeRows.
		return (&UpstreamError{Kind: KindClose, CloseCode: code, CloseReason: reason, phase: ph}).classified()
	}
	return lost("connection lost", err)
}

// heldBackWindow is how soon after a long wait for the consumer (see
// longHold) an end of the session counts as the consumer's doing.
const heldBackWindow = 2 * time.Second

// heldBack returns the error for a session that ended while, or right
// after, its consumer held the reader back for long: SLNG's side was then
// not being read, so whatever SLNG did (a close, a reset) may be SLNG
// shedding a slow reader, and is not evidence of SLNG failing. nil
// otherwise.
func (cn *conn) heldBack() *HeldBackError {
	now := time.Now()
	if since := cn.heldSince.Load(); since != 0 && now.Sub(time.Unix(0, since)) >= longHold {
		return &HeldBackError{Held: now.Sub(time.Unix(0, since))}
	}
	if end := cn.longHoldEnd.Load(); end != 0 && now.Sub(time.Unix(0, end)) < heldBackWindow {
		return &HeldBackError{}
	}
	return nil
}
