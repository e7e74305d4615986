package slngclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
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

// frame is one message handed from the reader goroutine to Recv.
type frame struct {
	audio    []byte // binary frame or decoded audio_chunk; nil otherwise
	sequence int64
	msg      *serverMsg
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

	frames     chan frame    // unbuffered: the reader waits for Recv
	readerDone chan struct{} // closed when the reader has exited and termErr is set
	liveDone   chan struct{}
	termErr    error // why the session ended; written before readerDone closes
	liveOn     bool  // the liveness goroutine runs; set by dial before it returns

	wmu      sync.Mutex
	lastSend atomic.Int64 // Unix nanoseconds of the last data frame sent
	closedBy atomic.Bool  // Close or CloseNow was called
	pingLost atomic.Bool  // a ping went unanswered

	framesIn, audioBytes, unknown, malformed, keepalives, pings atomic.Int64

	handshake, ready time.Duration // set by dial before the session is returned
	readyAt          time.Time
}

// dial opens a socket, sends init and waits for ready. kind is "tts" or
// "stt"; keepalive is the session's keepalive interval.
func (c *Client) dial(ctx context.Context, kind string, ep Endpoint, init any, keepalive time.Duration) (*conn, error) {
	if err := ValidateModel(ep.Model); err != nil {
		return nil, err
	}
	key := ep.APIKey
	if key == "" {
		key = c.apiKey()
	}
	full, display := c.endpointURL(kind, ep.Model, key)
	log := c.log.With(zap.String("url", display), zap.String("kind", kind))
	dialStart := time.Now()
	ws, resp, err := websocket.Dial(ctx, full, &websocket.DialOptions{
		HTTPClient: c.opts.HTTPClient,
		HTTPHeader: c.headers(ep, key),
		// SLNG's own clients disable permessage-deflate: some upstreams
		// fail the handshake with it.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		secrets := []string{key, ep.ProviderKey, c.opts.ProviderKey}
		return nil, handshakeError(ctx, resp, redact(err, secrets...), secrets)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cn := &conn{
		ws:         ws,
		ctx:        lctx,
		cancel:     cancel,
		frames:     make(chan frame),
		readerDone: make(chan struct{}),
		liveDone:   make(chan struct{}),
	}
	cn.log.Store(log)
	cn.handshake = time.Since(dialStart)
	if resp != nil {
		cn.reqID = resp.Header.Get("X-Slng-Request-Id")
	}
	cn.lastSend.Store(time.Now().UnixNano())
	go cn.readLoop()

	initAt := time.Now()
	if err := cn.writeJSON(ctx, init); err != nil {
		cn.shutdown()
		return nil, err
	}
	if err := cn.awaitReady(ctx, c.opts.ReadyTimeout); err != nil {
		cn.shutdown()
		return nil, notReady(err)
	}
	cn.readyAt = time.Now()
	cn.ready = cn.readyAt.Sub(initAt)
	cn.liveOn = true
	go cn.liveness(keepalive, c.opts.PingInterval, c.opts.PingTimeout)
	// The reader goroutine logs too, so the logger is swapped atomically.
	cn.log.Store(log.With(zap.String("upstream_session_id", cn.id)))
	cn.log.Load().Debug("session ready")
	return cn, nil
}

// handshakeError classifies a failed dial. A refused handshake's body says
// why (e.g. "BYOK is only supported for external STT/TTS routes"), so a
// sanitized start of it becomes the error's Message; secrets are redacted
// from it.
func handshakeError(ctx context.Context, resp *http.Response, err error, secrets []string) error {
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		ue := &UpstreamError{Kind: KindHandshake, HTTPStatus: resp.StatusCode, Retryable: retryableStatus(resp.StatusCode)}
		if resp.Body != nil {
			// coder/websocket has already read the first 1 KiB of the body
			// into memory and closed the connection; the limit is ours too,
			// in case that changes.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, maxHandshakeBody))
			ue.Message = handshakeMessage(b, len(b) == maxHandshakeBody, secrets)
		}
		if s := resp.Header.Get("Retry-After"); s != "" {
			if n, perr := strconv.Atoi(s); perr == nil && n >= 0 {
				ue.RetryAfter = time.Duration(n) * time.Second
			}
		}
		return ue
	}
	if ctx.Err() != nil {
		// The caller's own deadline or cancellation, not SLNG's failure.
		return fmt.Errorf("slng dial: %w", ctx.Err())
	}
	return &UpstreamError{Kind: KindTransport, Message: "dial failed", Retryable: true, Err: opaque(err)}
}

// notReady marks a close that ended a dial before `ready`: SLNG failing to
// open the session, not a reap (UpstreamError.Reaped), and a normal close
// there is a failure too, not the io.EOF that ends an open session.
func notReady(err error) error {
	if errors.Is(err, io.EOF) {
		return &UpstreamError{Kind: KindClose, CloseCode: 1000, Message: "upstream closed the session before ready",
			Retryable: true, beforeReady: true}
	}
	if ue, ok := AsUpstreamError(err); ok && ue.Kind == KindClose {
		c := *ue
		c.beforeReady = true
		return &c
	}
	return err
}

// awaitReady waits for `ready`, ignoring unknown messages; an error frame or
// a close before it fails the dial.
func (cn *conn) awaitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case f := <-cn.frames:
			if f.msg == nil {
				return &UpstreamError{Kind: KindProtocol, Message: "audio before ready", Retryable: true}
			}
			switch f.msg.Type {
			case "ready":
				cn.id = f.msg.SessionID
				if f.msg.RequestID != "" {
					cn.reqID = f.msg.RequestID
				}
				return nil
			case "error":
				code, msg := errorOf(f.msg)
				return &UpstreamError{Kind: KindErrorFrame, Code: code, Message: msg, Retryable: retryableCode(code)}
			default:
				cn.unknown.Add(1)
			}
		case <-cn.readerDone:
			return cn.termErr
		case <-t.C:
			return &UpstreamError{Kind: KindTimeout, Message: "no ready within " + timeout.String(), Retryable: true}
		case <-ctx.Done():
			return fmt.Errorf("slng dial: %w", ctx.Err())
		}
	}
}

// readLoop is the session's only reader. It hands each frame to Recv and
// waits for it to be taken, so a slow consumer stops the reading (and, via
// TCP, SLNG) instead of queueing.
func (cn *conn) readLoop() {
	var slots [2]slot
	var lastErr *UpstreamError // the last data frame, when it was an error
	var lastErrAt time.Time
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
			var f frame
			if typ == websocket.MessageBinary {
				if len(s.raw) == 0 {
					continue
				}
				f.audio = s.raw
				lastErr = nil
			} else {
				d, err := decodeFrame(s.raw, s.dec)
				if err != nil {
					cn.malformed.Add(1)
					cn.log.Load().Debug("ignoring malformed frame", zap.Int("bytes", len(s.raw)))
					continue
				}
				if d.msg == nil {
					s.dec = d.audio[:0:cap(d.audio)]
					f.audio, f.sequence = d.audio, d.sequence
					lastErr = nil
				} else {
					f.msg = d.msg
					if d.msg.Type == "error" {
						code, msg := errorOf(d.msg)
						lastErr = &UpstreamError{Kind: KindErrorFrame, Code: code, Message: msg, Retryable: retryableCode(code)}
					} else {
						lastErr = nil
					}
				}
			}
			if f.audio != nil {
				cn.audioBytes.Add(int64(len(f.audio)))
			}
			select {
			case cn.frames <- f:
				i++
			case <-cn.ctx.Done():
				return cn.ctx.Err()
			}
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
	cn.termErr = cn.classify(err, lastErr)
	cn.cancel() // stops liveness
	close(cn.readerDone)
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

// classify turns the reader's final error into what Recv reports.
func (cn *conn) classify(err error, lastErr *UpstreamError) error {
	if cn.closedBy.Load() {
		return ErrSessionClosed
	}
	if cn.pingLost.Load() {
		return &UpstreamError{Kind: KindTimeout, Message: "upstream stopped answering pings", CloseCode: 1006, Retryable: true}
	}
	code := int(websocket.CloseStatus(err))
	var ce websocket.CloseError
	reason := ""
	if errors.As(err, &ce) {
		reason = ce.Reason
	}
	switch {
	case lastErr != nil:
		// SLNG's fatal errors are an error frame, then the close: the frame
		// says what happened.
		ue := *lastErr
		ue.CloseCode, ue.CloseReason = code, reason
		if code == -1 {
			ue.CloseCode = 1006
		}
		return &ue
	case code == int(websocket.StatusNormalClosure):
		return io.EOF
	case code == int(websocket.StatusMessageTooBig) || (code == -1 && strings.Contains(err.Error(), "read limited")):
		return &UpstreamError{Kind: KindProtocol, Message: "upstream message exceeds the read limit", CloseCode: code, Retryable: true}
	case code != -1:
		// A bare 1008 is retryable: SLNG reaps connections with it (see
		// UpstreamError.Reaped); a request it rejects gets an error frame
		// first, handled above. 1003 says the frames themselves were
		// wrong, which a retry repeats.
		return &UpstreamError{Kind: KindClose, CloseCode: code, CloseReason: reason,
			Retryable: code != int(websocket.StatusUnsupportedData)}
	}
	return &UpstreamError{Kind: KindTransport, Message: "connection lost", CloseCode: 1006, Retryable: true, Err: opaque(err)}
}

// liveness sends keepalive messages when the session has been quiet and
// pings to find dead peers. It exits when the session ends.
func (cn *conn) liveness(keepalive, pingEvery, pingTimeout time.Duration) {
	defer close(cn.liveDone)
	if keepalive <= 0 && pingEvery <= 0 {
		return
	}
	lastPing := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		wait := time.Hour
		if keepalive > 0 {
			wait = min(wait, time.Unix(0, cn.lastSend.Load()).Add(keepalive).Sub(now))
		}
		if pingEvery > 0 {
			wait = min(wait, lastPing.Add(pingEvery).Sub(now))
		}
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-cn.ctx.Done():
			return
		case <-t.C:
		}
		now = time.Now()
		if keepalive > 0 && now.Sub(time.Unix(0, cn.lastSend.Load())) >= keepalive {
			if err := cn.write(cn.ctx, websocket.MessageText, msgKeepalive); err != nil {
				return
			}
			cn.keepalives.Add(1)
		}
		if pingEvery > 0 && now.Sub(lastPing) >= pingEvery {
			lastPing = now
			pctx, cancel := context.WithTimeout(cn.ctx, pingTimeout)
			err := cn.ping(pctx)
			cancel()
			if err != nil {
				if cn.ctx.Err() == nil {
					cn.pingLost.Store(true)
					cn.ws.CloseNow()
				}
				return
			}
		}
	}
}

// ping sends a WebSocket ping and waits, within ctx, for its pong.
func (cn *conn) ping(ctx context.Context) error {
	if err := cn.ended(); err != nil {
		return err
	}
	cn.pings.Add(1)
	// The pong never comes if the reader stops: end the wait then too.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(cn.ctx, cancel)()
	if err := cn.ws.Ping(pctx); err != nil {
		if err := cn.ended(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return &UpstreamError{Kind: KindTimeout, Message: "no pong", Retryable: true, Err: err}
		}
		return &UpstreamError{Kind: KindTransport, Message: "ping failed", CloseCode: 1006, Retryable: true, Err: opaque(err)}
	}
	return nil
}

// ended returns why the session ended, or nil while the reader runs.
func (cn *conn) ended() error {
	select {
	case <-cn.readerDone:
		if cn.termErr != nil {
			return cn.termErr
		}
		return ErrSessionClosed
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
	cn.wmu.Lock()
	err := cn.ws.Write(ctx, typ, b)
	if err == nil {
		cn.lastSend.Store(time.Now().UnixNano())
	}
	cn.wmu.Unlock()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The reader usually knows better why the socket failed.
	select {
	case <-cn.readerDone:
		if cn.termErr == io.EOF {
			return &UpstreamError{Kind: KindClose, CloseCode: 1000, Message: "upstream closed the session", Retryable: true}
		}
		return cn.termErr
	case <-time.After(100 * time.Millisecond):
	}
	return &UpstreamError{Kind: KindTransport, Message: "write failed", CloseCode: 1006, Retryable: true, Err: opaque(err)}
}

// next waits for the next frame.
func (cn *conn) next(ctx context.Context) (frame, error) {
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
	if cn.closedBy.Load() {
		cn.shutdown()
		return nil
	}
	werr := cn.write(ctx, websocket.MessageText, msgClose)
	cn.closedBy.Store(true)
	if werr == nil {
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
