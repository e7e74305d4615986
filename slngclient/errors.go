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
	// before it. After `ready`, 1001, 1008 and 1012 are reaps, and 1011
	// when no turn is in flight (see Reaped).
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
	// "provider_error"). For KindHandshake, Message is what the refused
	// handshake's body says (e.g. "BYOK is only supported for external
	// STT/TTS routes"): at most 256 bytes of valid UTF-8, without control
	// characters or the keys. Otherwise a short description, or empty.
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
	// Retryable reports whether the same request may succeed later. The
	// constructors set it from Class; a caller that gives up a session
	// rather than the work may set it on a copy.
	Retryable bool
	// Err is the underlying error, if any, already free of secrets.
	Err error

	// phase is where the session was when it failed: before `ready` (SLNG
	// failing to open it, never a reap), idle, or in a turn.
	phase phase
	// byok: the session sent a provider key (X-Slng-Provider-Key).
	byok bool
}

// classified sets Retryable from Class, for the constructors.
func (e *UpstreamError) classified() *UpstreamError {
	e.Retryable = e.Class().Retryable
	return e
}

// NewErrorFrame returns the error of an SLNG error frame with this code
// and message, on an open session with no close after it: what a
// session's warning events carry. It is the one constructor of error frame
// errors; the session's reader builds each frame's error with it.
func NewErrorFrame(code, message string) *UpstreamError {
	return (&UpstreamError{Kind: KindErrorFrame, Code: code, Message: message}).classified()
}

// NewTimeout returns the error of SLNG not answering in time: message says
// what did not come, err (which may be nil) why it was awaited. It is
// Retryable and Unwell.
func NewTimeout(message string, err error) *UpstreamError {
	return (&UpstreamError{Kind: KindTimeout, Message: message, Err: err}).classified()
}

// NewClosedEarly returns the error of SLNG closing an open session
// normally (1000) before the work given to it was done: message says what
// was cut short. It is Retryable, and neither Unwell nor a reap.
func NewClosedEarly(message string) *UpstreamError {
	return (&UpstreamError{Kind: KindClose, CloseCode: 1000, Message: message}).classified()
}

// lost returns the error of a connection that failed without a close
// frame: what was under way (message) and the socket's error, whose chain
// must not pass for the normal close (see opaque).
func lost(message string, err error) *UpstreamError {
	return (&UpstreamError{Kind: KindTransport, Message: message, CloseCode: 1006, Err: opaque(err)}).classified()
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

// HeldBackError ends a session that failed while, or right after, its
// consumer held the reader back for a second or more: SLNG's frames were
// not being read, so a close or reset then may be SLNG shedding a slow
// reader, and says nothing about SLNG's health. It is not an
// *UpstreamError (AsUpstreamError reports false, and errors.As does not
// find one through it), so that nothing counts it against SLNG: the
// consumer, not SLNG, was too slow.
type HeldBackError struct {
	// Held is how long the wait in progress had lasted when the session
	// ended, 0 when it ended just after a long wait.
	Held time.Duration
	// Err is what the end would have been taken for otherwise, for logs.
	Err error
}

func (e *HeldBackError) Error() string {
	msg := "slng session ended while its consumer held the reader back"
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}
