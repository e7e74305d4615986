package slngclient

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrorKind classifies an UpstreamError by where it came from.
type ErrorKind int

const (
	// KindErrorFrame: SLNG sent an `error` message (Code, Message). When
	// the socket closed right after it, CloseCode says how.
	KindErrorFrame ErrorKind = iota + 1
	// KindHandshake: SLNG refused the WebSocket upgrade (HTTPStatus).
	KindHandshake
	// KindClose: SLNG closed the socket with CloseCode and no error frame
	// before it.
	KindClose
	// KindTransport: the connection failed or was lost without a close
	// frame (reported as CloseCode 1006), or could not be opened at all.
	KindTransport
	// KindTimeout: SLNG did not answer in time (no `ready`, no pong).
	KindTimeout
	// KindProtocol: SLNG sent something that breaks the protocol, such as a
	// frame over the read limit or a `ready` without a session id.
	KindProtocol
)

func (k ErrorKind) String() string {
	switch k {
	case KindErrorFrame:
		return "error frame"
	case KindHandshake:
		return "handshake"
	case KindClose:
		return "close"
	case KindTransport:
		return "transport"
	case KindTimeout:
		return "timeout"
	case KindProtocol:
		return "protocol"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// UpstreamError is every failure that comes from SLNG. Its Error string
// never contains the API key or a URL with the key.
type UpstreamError struct {
	Kind ErrorKind
	// Code and Message are SLNG's, from an error frame (e.g.
	// "provider_error"); empty otherwise.
	Code, Message string
	// CloseCode is the WebSocket close code SLNG closed with, 1006 for a
	// connection lost without a close frame, 0 when the socket is open or
	// was never opened.
	CloseCode   int
	CloseReason string
	// HTTPStatus is the status of a refused handshake.
	HTTPStatus int
	// RetryAfter is SLNG's Retry-After on a refused handshake, if any.
	RetryAfter time.Duration
	// Retryable reports whether the same request may succeed later.
	Retryable bool
	// Err is the underlying error, if any, already free of secrets.
	Err error
}

func (e *UpstreamError) Error() string {
	var b strings.Builder
	b.WriteString("slng ")
	b.WriteString(e.Kind.String())
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, ": http %d", e.HTTPStatus)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.CloseCode != 0 {
		fmt.Fprintf(&b, " (close %d", e.CloseCode)
		if e.CloseReason != "" {
			fmt.Fprintf(&b, " %q", e.CloseReason)
		}
		b.WriteString(")")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// AsUpstreamError finds an *UpstreamError in err's chain.
func AsUpstreamError(err error) (*UpstreamError, bool) {
	var ue *UpstreamError
	ok := errors.As(err, &ue)
	return ue, ok
}

var (
	// ErrSessionClosed is returned by a session's methods after its own
	// Close or CloseNow.
	ErrSessionClosed = errors.New("slng session closed")
	// ErrNothingToFlush is returned by Flush when no text was sent since
	// the last turn: SLNG treats a bare flush as a protocol violation.
	ErrNothingToFlush = errors.New("slng: nothing to flush")
	// ErrEmptyAudio is returned by SendAudio for an empty chunk: upstream
	// models read an empty binary frame as the end of the audio.
	ErrEmptyAudio = errors.New("slng: empty audio chunk")
	// ErrInvalidModel is returned for a model name that is not an SLNG
	// model variant.
	ErrInvalidModel = errors.New("slng: invalid model variant")
)

// retryableCode reports whether an SLNG error code means "try again later"
// (slng-protocol.md section 6).
func retryableCode(code string) bool {
	switch code {
	case "rate_limit", "rate_limit_exceeded", "provider_error", "backend_connection_failed", "backend_error",
		"not_ready", "backpressure", "stt_metering_unavailable", "translation_error",
		"idle_timeout_exceeded", "max_connection_duration_exceeded":
		return true
	}
	return false
}

// retryableStatus follows SLNG's client guidance: 408, 409, 425, 429 and 5xx
// may succeed later; other 4xx will not.
func retryableStatus(st int) bool {
	return st == 408 || st == 409 || st == 425 || st == 429 || st >= 500
}

// redact removes secrets from an error's text, for errors whose text we do
// not control (e.g. net/http's, which quote the URL).
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	changed := false
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "REDACTED")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return errors.New(s)
}

// Unwell reports whether the error says that SLNG or its provider is
// failing, as opposed to the request being wrong, the caller going away or
// a limit being reached: transport failures, timeouts, HTTP 5xx handshakes,
// abnormal closes and provider or backend error frames. Circuit breakers
// count these and nothing else.
func (e *UpstreamError) Unwell() bool {
	switch e.Kind {
	case KindTransport, KindTimeout, KindProtocol:
		return true
	case KindHandshake:
		return e.HTTPStatus >= 500
	case KindClose:
		switch e.CloseCode {
		case 1006, 1011, 1012, 1013, 1014:
			return true
		}
	case KindErrorFrame:
		switch e.Code {
		case "provider_error", "backend_connection_failed", "backend_error", "not_ready",
			"internal_error", "server_error", "translation_error", "stt_metering_unavailable":
			return true
		}
	}
	return false
}

// Reaped reports whether SLNG ended the session as housekeeping (an idle or
// over-long connection reaped, a restart): a close with 1001, 1008, 1011 or
// 1012 and no error frame saying the request was wrong, or an
// idle_timeout_exceeded or max_connection_duration_exceeded error frame.
// A new session may succeed where this one ended.
func (e *UpstreamError) Reaped() bool {
	switch e.Kind {
	case KindClose:
		switch e.CloseCode {
		case 1001, 1008, 1011, 1012:
			return true
		}
	case KindErrorFrame:
		return e.Code == "idle_timeout_exceeded" || e.Code == "max_connection_duration_exceeded"
	}
	return false
}
