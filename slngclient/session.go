package slngclient

import (
	"context"

	"github.com/coder/websocket"
)

// session is what TTSSession and STTSession share; its methods are
// theirs.
type session struct {
	cn *conn
}

// ID is SLNG's session id from `ready`.
func (s *session) ID() string { return s.cn.id }

// RequestID is SLNG's request id, when it sent one.
func (s *session) RequestID() string { return s.cn.reqID }

// Done is closed when the session has ended and every frame received
// before the end has been handed to Recv: a caller that stops calling Recv
// holds the session open (that is the backpressure), so drain with Recv or
// call CloseNow.
func (s *session) Done() <-chan struct{} { return s.cn.readerDone }

// Err is why the session ended (see Recv), or nil while it is open.
func (s *session) Err() error { return s.cn.ended() }

// Stats returns the session's counters. AudioBytes counts audio received
// on a TTS session and sent on an STT session.
func (s *session) Stats() Stats { return s.cn.stats() }

// Keepalive sends a keepalive message now. The session also sends them by
// itself when idle.
func (s *session) Keepalive(ctx context.Context) error {
	return s.cn.write(ctx, websocket.MessageText, msgKeepalive)
}

// Ping checks, with one round trip, that SLNG still answers on the
// socket. Pings do not reset SLNG's idle timer.
func (s *session) Ping(ctx context.Context) error { return s.cn.ping(ctx) }

// Close ends the session gracefully: it sends `close` and waits, within
// ctx, for SLNG to close the socket, discarding what arrives meanwhile (on
// an STT session, use CloseSend to receive the last finals). It always
// releases everything.
func (s *session) Close(ctx context.Context) error { return s.cn.close(ctx) }

// CloseNow closes the socket at once and releases everything.
func (s *session) CloseNow() { s.cn.shutdown() }

// initConfig starts the config of a session's init: the model-specific
// keys in extra, then the audio format ("linear16" and defaultRate unless
// set) and the language, which extra cannot override. Some models default
// to MP3 unless the format is sent, so it always is.
func initConfig(extra map[string]any, encoding string, sampleRate, defaultRate int, language string) map[string]any {
	config := make(map[string]any, len(extra)+3)
	for k, v := range extra {
		config[k] = v
	}
	if encoding == "" {
		encoding = "linear16"
	}
	if sampleRate == 0 {
		sampleRate = defaultRate
	}
	config["encoding"] = encoding
	config["sample_rate"] = sampleRate
	if language != "" {
		config["language"] = language
	}
	return config
}
