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

// readLoop is the session's only reader. It hands each frame to Recv and
// waits for it to be taken, so a slow consumer stops the reading (and, via
// TCP, SLNG) instead of queueing.
func (cn *conn) readLoop() {
	var slots [2]slot
	var lastErr *UpstreamError // the last data frame, when it was an error (the reader's own copy)
	var lastErrAt time.Time
	// inAudio: TTS audio has come since the last end of a turn. Only what
	// SLNG sent counts, so that a close SLNG sent before it saw our text
	// is not taken for one in the middle of a turn.
	var inAudio bool
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
				if f.msg == nil {
					s.dec = f.audio[:0:cap(f.audio)]
				}
			}
			lastErr = nil
			if f.err != nil {
				c := *f.err
				lastErr = &c
			}
			if f.audio != nil {
				cn.audioBytes.Add(int64(len(f.audio)))
				inAudio = true
			} else if endsTurn(f.msg.Type) {
				inAudio = false
			}
			if f.audio != nil && cn.offerFast(f) {
				continue // taken at once: the slot is free again
			}
			if !cn.handOver(f) {
				return cn.ctx.Err()
			}
			i++
			// Later audio must not reach a fast taker before the
			// consumer has dealt with this frame: it offers one again
			// when it next waits.
			cn.clearFast()
			if lastErr != nil {
				// Taken when the reader goes back to the socket, so that
				// a slow consumer does not stretch the gap.
				lastErrAt = time.Now()
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
	cn.cancel() // stops liveness
	close(cn.readerDone)
}

// handOver gives f to Recv, waiting until Recv takes it or the session
// ends (false). A Recv already waiting takes it without the cost of a
// select over both: per audio frame, that is the common case.
func (cn *conn) handOver(f frame) bool {
	select {
	case cn.frames <- f:
		return true
	default:
	}
	select {
	case cn.frames <- f:
		return true
	case <-cn.ctx.Done():
		return false
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
// whether a turn was in flight.
func (cn *conn) classify(err error, lastErr *UpstreamError, ph phase) error {
	if cn.closedBy.Load() {
		return ErrSessionClosed
	}
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
