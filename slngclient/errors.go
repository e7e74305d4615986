package slngclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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
	// before it. After `ready`, 1001, 1008, 1011 and 1012 are reaps (see
	// Reaped).
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
	// Retryable reports whether the same request may succeed later.
	Retryable bool
	// Err is the underlying error, if any, already free of secrets.
	Err error

	// beforeReady marks a close that came while the session was being
	// opened, before `ready`: SLNG failing to open a session, never a
	// reap.
	beforeReady bool
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

// Reaped reports whether SLNG ended an open session as housekeeping rather
// than because of anything the session did: a close with 1001 (going
// away), 1008 (policy violation), 1011 (internal error) or 1012 (service
// restart) after `ready` and without an error frame just before it
// (KindClose), or an idle_timeout_exceeded or
// max_connection_duration_exceeded error frame followed by a close.
//
// SLNG's gateway reaps idle and over-long connections, and LiveKit's SLNG
// plugin notes that it may send no error frame first: the close code is
// the only account. A 1008 after an error frame that blames the request
// (config_error, invalid_request, auth_error, ...) is that error instead
// (KindErrorFrame). A bare 1008 is also SLNG's documented answer to audio
// before init, which this client never sends; it is treated as a reap too.
// A reap is always Retryable: the same work may go on on a new session.
func (e *UpstreamError) Reaped() bool {
	if e.beforeReady {
		return false
	}
	switch e.Kind {
	case KindClose:
		return reapClose(e.CloseCode)
	case KindErrorFrame:
		return e.CloseCode != 0 && (e.Code == "idle_timeout_exceeded" || e.Code == "max_connection_duration_exceeded")
	}
	return false
}

// reapClose reports whether a close code, with no error frame before it,
// is one SLNG reaps connections with.
func reapClose(code int) bool {
	switch code {
	case 1001, 1008, 1011, 1012:
		return true
	}
	return false
}

const (
	// maxHandshakeBody is how much of a refused handshake's body is read:
	// what coder/websocket keeps of it.
	maxHandshakeBody = 1024
	// maxHandshakeMessage bounds the part of it that reaches Message.
	maxHandshakeMessage = 256
)

// handshakeMessage turns the start of a refused handshake's body into an
// error message: the message field of a JSON body (detail, message, error
// or description), or the text itself; without the secrets, control
// characters or invalid UTF-8; whitespace collapsed; at most
// maxHandshakeMessage bytes. cut says that body is only the start of a
// longer one, which may end in the first bytes of a secret.
func handshakeMessage(body []byte, cut bool, keys []string) string {
	// Each secret as is and as it appears in a query string (?token=).
	var secrets []string
	for _, k := range keys {
		if k != "" {
			secrets = append(secrets, k)
			if q := url.QueryEscape(k); q != k {
				secrets = append(secrets, q)
			}
		}
	}
	s := string(body)
	if cut {
		s = trimSecretPrefix(s, secrets)
	}
	s = redactText(s, secrets)
	if m := jsonBodyMessage(s); m != "" {
		s = redactText(m, secrets) // JSON escapes could have hidden one
	}
	s = strings.ToValidUTF8(s, "")
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.IsControl(r) || r == utf8.RuneError || unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > maxHandshakeMessage {
			break
		}
	}
	return truncate(b.String(), maxHandshakeMessage)
}

// jsonBodyMessage is the message of a JSON error body such as
// {"detail": "..."} or {"error": {"message": "..."}}, or "".
func jsonBodyMessage(s string) string {
	var body struct {
		Detail      json.RawMessage `json:"detail"`
		Message     json.RawMessage `json:"message"`
		Error       json.RawMessage `json:"error"`
		Description json.RawMessage `json:"description"`
	}
	if !strings.HasPrefix(strings.TrimSpace(s), "{") || json.Unmarshal([]byte(s), &body) != nil {
		return ""
	}
	_, errMsg := errorObject(body.Error)
	return firstNonEmpty(rawString(body.Detail), rawString(body.Message), errMsg, rawString(body.Description))
}

// redactText replaces every secret in s.
func redactText(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "REDACTED")
	}
	return s
}

// trimSecretPrefix cuts a tail of s that is the start of a secret: a
// secret the cut at the end of s split in two.
func trimSecretPrefix(s string, secrets []string) string {
	for _, sec := range secrets {
		for n := min(len(sec)-1, len(s)); n > 0; n-- {
			if strings.HasSuffix(s, sec[:n]) {
				s = s[:len(s)-n]
				break
			}
		}
	}
	return s
}

// Unwell reports whether the error says that SLNG or its provider is
// failing, as opposed to the request being wrong, the caller going away or
// a limit being reached: transport failures, timeouts, HTTP 5xx handshakes,
// abnormal closes and provider or backend error frames. Circuit breakers
// count these and nothing else.
//
// Reaps (see Reaped) are not counted, even with 1011 or 1012: reaping idle
// and old connections is SLNG's routine housekeeping, and a breaker that
// counted them would open on a healthy service whose callers pause. A
// close before `ready` is never a reap: 1000, 1001, 1011 and 1012 there
// say that SLNG failed to open the session, and count.
func (e *UpstreamError) Unwell() bool {
	switch e.Kind {
	case KindTransport, KindTimeout, KindProtocol:
		return true
	case KindHandshake:
		return e.HTTPStatus >= 500
	case KindClose:
		if e.Reaped() {
			return false
		}
		switch e.CloseCode {
		case 1006, 1011, 1012, 1013, 1014:
			return true
		case 1000, 1001:
			return e.beforeReady
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
