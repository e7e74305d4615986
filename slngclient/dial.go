package slngclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// dial opens a socket, sends init and waits for ready. kind is "tts" or
// "stt"; keepalive is the session's keepalive interval; attach makes the
// session around the connection, before its reader starts, and returns
// where the frames after `ready` go.
func (c *Client) dial(ctx context.Context, kind string, ep Endpoint, init any, keepalive time.Duration, attach func(*conn) sink) (*conn, error) {
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
	// The handshake has a bound of its own: the caller's deadline may be
	// far away (or absent, for the pool's own dials), and an upstream
	// that takes the connection and never answers is SLNG failing, which
	// the breaker must hear of, not the caller's deadline passing. Only
	// the handshake: the session outlives this context.
	hctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	var cn *conn // set before the reader, whose reads run OnPongReceived, starts
	ws, resp, err := websocket.Dial(hctx, full, &websocket.DialOptions{
		HTTPClient: c.opts.HTTPClient,
		HTTPHeader: c.headers(ep, key),
		// SLNG's own clients disable permessage-deflate: some upstreams
		// fail the handshake with it.
		CompressionMode: websocket.CompressionDisabled,
		// A pong is a sign of life (Heard), whoever pinged.
		OnPongReceived: func(context.Context, []byte) { cn.life.heardNow() },
	})
	handshakeExpired := hctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		if handshakeExpired && (resp == nil || resp.StatusCode == http.StatusSwitchingProtocols) {
			return nil, NewTimeout("no handshake answer within "+c.opts.HandshakeTimeout.String(), nil)
		}
		secrets := []string{key, ep.ProviderKey, c.opts.ProviderKey}
		return nil, handshakeError(ctx, resp, redact(err, secrets...), secrets)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cn = &conn{
		ws:         ws,
		ctx:        lctx,
		cancel:     cancel,
		frames:     make(chan frame),
		closing:    make(chan struct{}),
		termDone:   make(chan struct{}),
		readerDone: make(chan struct{}),
		liveDone:   make(chan struct{}),
	}
	cn.sink = attach(cn)
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
		return nil, notReady(err, ep.ProviderKey != "" || c.opts.ProviderKey != "")
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

// notReady marks an upstream failure that ended a dial before `ready`:
// SLNG failing to open the session, not a reap (UpstreamError.Reaped), and
// a normal close there is a failure too, not the io.EOF that ends an open
// session. byok says the session sent a provider key, which SLNG's
// provider may have refused (see frameClass).
func notReady(err error, byok bool) error {
	if errors.Is(err, io.EOF) {
		return (&UpstreamError{Kind: KindClose, CloseCode: 1000, Message: "upstream closed the session before ready",
			phase: phaseOpening}).classified()
	}
	if ue, ok := AsUpstreamError(err); ok {
		c := *ue
		c.phase, c.byok = phaseOpening, byok
		return c.classified()
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
			switch {
			case f.audio != nil:
				return (&UpstreamError{Kind: KindProtocol, Message: "audio before ready"}).classified()
			case f.err != nil:
				return f.err
			case f.msg.Type == "ready":
				cn.id = f.msg.SessionID
				if f.msg.RequestID != "" {
					cn.reqID = f.msg.RequestID
				}
				return nil
			default:
				cn.unknown.Add(1)
			}
		case <-cn.termDone:
			return cn.termErr
		case <-t.C:
			return NewTimeout("no ready within "+timeout.String(), nil)
		case <-ctx.Done():
			return fmt.Errorf("slng dial: %w", ctx.Err())
		}
	}
}
