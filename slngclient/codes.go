package slngclient

import (
	"errors"
	"io"
	"strconv"
)

// Category is what an SLNG failure means to whoever asked for the work:
// the one classification that the gateway's status table maps from. It is
// not a gRPC code: this package does not import gRPC.
type Category int

// The categories.
const (
	// CategoryUnknown is an error code this client does not know.
	CategoryUnknown Category = iota
	// CategoryUnavailable is SLNG or its provider failing or busy: error
	// frames such as provider_error, HTTP 5xx, abnormal closes, lost
	// connections, timeouts.
	CategoryUnavailable
	// CategoryExpired is SLNG ending an open session as housekeeping (a
	// reap, or idle_timeout_exceeded / max_connection_duration_exceeded).
	CategoryExpired
	// CategoryAuth is SLNG refusing the API key: auth_error, HTTP 401 or
	// 403.
	CategoryAuth
	// CategoryProviderKey is the provider refusing the provider key sent
	// with the session (BYOK).
	CategoryProviderKey
	// CategoryConfig is SLNG refusing the session's configuration:
	// config_error, HTTP 400.
	CategoryConfig
	// CategoryRequest is SLNG refusing a request on an open session:
	// invalid_request, payload_too_large, pronunciation_not_found.
	CategoryRequest
	// CategoryNotFound is a model SLNG does not know: HTTP 404.
	CategoryNotFound
	// CategoryRateLimited is SLNG's rate limit: rate_limit,
	// rate_limit_exceeded, HTTP 429.
	CategoryRateLimited
	// CategoryProtocol is SLNG breaking the protocol.
	CategoryProtocol
)

var categoryNames = [...]string{"unknown", "unavailable", "expired", "auth", "provider_key", "config", "request",
	"not_found", "rate_limited", "protocol"}

func (c Category) String() string {
	if c >= 0 && int(c) < len(categoryNames) {
		return categoryNames[c]
	}
	return "category(" + strconv.Itoa(int(c)) + ")"
}

// Class is how a failure is to be treated. Every UpstreamError has one
// (UpstreamError.Class); the pool's breaker and backoff and the gateway's
// status table read it rather than lists of codes of their own.
type Class struct {
	Category Category
	// Retryable: the same request may succeed later.
	Retryable bool
	// Unwell: SLNG or its provider is failing. Circuit breakers count
	// these failures and no others.
	Unwell bool
	// Fault: the failure is the caller's: its key, its configuration or
	// its request. Retrying the same thing fails the same way.
	Fault bool
	// Reap: SLNG ended an open session as housekeeping; the same work may
	// go on on a new session at once.
	Reap bool
}

// Shorthands for the table's rows.
var (
	unwell    = Class{Category: CategoryUnavailable, Retryable: true, Unwell: true}
	busy      = Class{Category: CategoryUnavailable, Retryable: true}
	expired   = Class{Category: CategoryExpired, Retryable: true, Reap: true}
	refused   = func(c Category) Class { return Class{Category: c, Fault: true} }
	protocol  = Class{Category: CategoryProtocol, Retryable: true, Unwell: true}
	unknownEF = Class{Category: CategoryUnknown}
)

// codeBackendConnectionFailed is what SLNG answers init with when the
// provider refuses a BYOK key (pipecat-slng 0.4.0), as well as when it
// cannot reach the provider at all.
const codeBackendConnectionFailed = "backend_connection_failed"

// codeClasses classifies SLNG's error frame codes (slng-protocol.md
// section 6). Reap here means "a reap when a close follows the frame on an
// open session"; see UpstreamError.Class.
var codeClasses = map[string]Class{
	"auth_error":                refused(CategoryAuth),
	"config_error":              refused(CategoryConfig),
	"invalid_request":           refused(CategoryRequest),
	"payload_too_large":         refused(CategoryRequest),
	"pronunciation_not_found":   refused(CategoryRequest),
	"rate_limit":                {Category: CategoryRateLimited, Retryable: true},
	"rate_limit_exceeded":       {Category: CategoryRateLimited, Retryable: true},
	"provider_error":            unwell,
	codeBackendConnectionFailed: unwell,
	"backend_error":             unwell,
	"not_ready":                 unwell,
	"stt_metering_unavailable":  unwell,
	"translation_error":         unwell,
	// SLNG pushing back on load: not a failure, and not worth a breaker.
	"backpressure":                     busy,
	"idle_timeout_exceeded":            expired,
	"max_connection_duration_exceeded": expired,
	// Not documented codes, but ones that say SLNG itself failed. Nothing
	// says a retry helps, and the gateway does not know them (UNKNOWN).
	"internal_error": {Category: CategoryUnknown, Unwell: true},
	"server_error":   {Category: CategoryUnknown, Unwell: true},
	// An error frame without a code.
	"": {Category: CategoryUnavailable},
}

// KnownCode reports whether code is one of SLNG's error codes that this
// package classifies: a bounded set, fit for a metric label. Numeric codes
// count when they are an HTTP status of the table below or a close code
// closeRows knows.
func KnownCode(code string) bool {
	if n, ok := numericCode(code); ok {
		_, isClose := closeRows[n]
		return isClose || numericStatuses[n] || n >= 500 && n <= 504
	}
	_, ok := codeClasses[code]
	return ok && code != ""
}

// numericStatuses are the HTTP statuses an error frame is known to carry
// as its code besides 5xx, each with a row in frameStatusClass.
var numericStatuses = map[int]bool{400: true, 401: true, 403: true, 404: true, 408: true, 409: true, 413: true,
	422: true, 425: true, 429: true}

// numericCode reads an error frame's code that is a number (SLNG's clients
// meet `{"type":"error","code":1008}` from Gradium, and statuses in code,
// status_code or err_code), as decimal digits.
func numericCode(code string) (int, bool) {
	if code == "" || len(code) > 4 {
		return 0, false
	}
	n, err := strconv.Atoi(code)
	return n, err == nil && n >= 100 && code[0] != '+' && code[0] != '-'
}

// numericClass classifies an error frame whose code is a number: an HTTP
// status (100-599) as LiveKit's SLNG plugin reads one (4xx other than 408,
// 409, 425 and 429 will not succeed later, 413 is final, 5xx is SLNG
// failing), or a WebSocket close code (1000-4999) as the same close would
// be.
func numericClass(n int, ph phase) (Class, bool) {
	switch {
	case n >= 1000 && n <= 4999:
		return closeClass(n, ph), true
	case n == 400 && ph == phaseOpening:
		return refused(CategoryConfig), true // the answer to init
	case n == 400 || n == 413 || n == 422 || n >= 400 && n < 500 && !numericStatuses[n]:
		// Too large, or another refusal of what the caller asked.
		return refused(CategoryRequest), true
	case n >= 400 && n < 600:
		return statusClass(n), true
	}
	return Class{}, false
}

// phase is where in its life a session was when it failed.
type phase uint8

const (
	// phaseIdle: open, with no turn in flight. The zero value, so that an
	// UpstreamError built without a session is classified as before.
	phaseIdle phase = iota
	// phaseOpening: before `ready`.
	phaseOpening
	// phaseTurn: open, with a turn in flight (see conn.midTurn).
	phaseTurn
)

// closeRow classifies a close code by phase.
type closeRow struct{ opening, idle, turn Class }

// same is a close code that means the same in every phase.
func same(c Class) closeRow { return closeRow{c, c, c} }

// closeRows classifies the WebSocket close codes SLNG ends sessions with,
// when no error frame came just before (which then says more).
//
// LiveKit's SLNG plugin notes that a gateway reaping an idle or over-long
// connection may send no error frame first, with 1008, 1011 or 1012 as the
// only account (slng-real-clients.md), so those, and 1001, are reaps on an
// open session. But 1011 is also what a provider crashing in the middle of
// a stream produces, and reaps take idle sessions: a 1011 while a turn is
// in flight (TTS audio not yet ended, STT audio just sent) is SLNG being
// unwell, or a provider that crashes streams would never open a breaker.
// Before `ready` nothing is a reap: closes there are SLNG failing to open
// the session.
var closeRows = map[int]closeRow{
	1000: {opening: unwell, idle: busy, turn: busy},
	1001: {opening: unwell, idle: expired, turn: expired},
	// 1003 says the frames themselves were wrong, which a retry repeats.
	1003: same(Class{Category: CategoryUnavailable}),
	1006: same(unwell),
	// A bare 1008 is also SLNG's documented answer to audio before init,
	// which this client never sends.
	1008: {opening: busy, idle: expired, turn: expired},
	1009: same(protocol),
	1011: {opening: unwell, idle: expired, turn: unwell},
	1012: {opening: unwell, idle: expired, turn: expired},
	1013: same(unwell),
	1014: same(unwell),
}

// closeClass classifies a close code without an error frame before it.
func closeClass(code int, ph phase) Class {
	row, ok := closeRows[code]
	if !ok {
		return busy // another close: not known to be a failure of SLNG
	}
	switch ph {
	case phaseOpening:
		return row.opening
	case phaseTurn:
		return row.turn
	}
	return row.idle
}

// statusClass classifies the HTTP status of a refused handshake, following
// SLNG's client guidance: 408, 409, 425, 429 and 5xx may succeed later;
// other 4xx will not.
func statusClass(st int) Class {
	switch {
	case st == 400:
		return refused(CategoryConfig)
	case st == 401 || st == 403:
		return refused(CategoryAuth)
	case st == 404:
		return refused(CategoryNotFound)
	case st == 429:
		return Class{Category: CategoryRateLimited, Retryable: true}
	case st == 408 || st == 409 || st == 425:
		return busy
	case st >= 500:
		return unwell
	}
	return refused(CategoryUnavailable)
}

// frameClass classifies an error frame's code. closed says the socket
// closed right after the frame.
func frameClass(code string, closed bool, ph phase, byok bool) Class {
	if code == codeBackendConnectionFailed && ph == phaseOpening && byok {
		// The provider refusing the session's BYOK key: the caller's to
		// fix, and a retry or a breaker would only hammer the provider.
		// With a key of its own, SLNG sends no other sign of it.
		return refused(CategoryProviderKey)
	}
	c, ok := codeClasses[code]
	if !ok {
		n, isNum := numericCode(code)
		if c, ok = numericClass(n, ph); !isNum || !ok {
			return unknownEF
		}
	}
	if c.Reap && (!closed || ph == phaseOpening) {
		// The frame announces a reap that has not happened (yet), or SLNG
		// failing to open a session.
		c.Reap = false
	}
	return c
}

// Class classifies the failure: what the pool's breaker, its backoff and
// the gateway's status table read. It depends on the kind, the code, the
// close code or HTTP status, and on where the session was: before
// `ready`, open and idle, or in the middle of a turn.
func (e *UpstreamError) Class() Class {
	switch e.Kind {
	case KindErrorFrame:
		return frameClass(e.Code, e.CloseCode != 0, e.phase, e.byok)
	case KindHandshake:
		return statusClass(e.HTTPStatus)
	case KindClose:
		return closeClass(e.CloseCode, e.phase)
	case KindTransport, KindTimeout:
		return unwell
	case KindProtocol:
		return protocol
	}
	return unknownEF
}

// Reaped reports whether SLNG ended an open session as housekeeping rather
// than because of anything the session did (Class().Reap): a close with
// 1001, 1008 or 1012 after `ready` and without an error frame just before
// it, a 1011 so on a session with no turn in flight, or an
// idle_timeout_exceeded or max_connection_duration_exceeded error frame
// followed by a close. A reap is always Retryable and never Unwell.
func (e *UpstreamError) Reaped() bool { return e.Class().Reap }

// AtInit reports whether SLNG ended the session in answer to its init:
// after the handshake and before `ready`, with an error frame, a close or
// a lost connection. What the init asked for (a voice, a language, an
// encoding the provider refuses) may be why, as much as SLNG failing:
// LiveKit's plugin retires such a session "as when the provider refuses
// the voice".
func (e *UpstreamError) AtInit() bool {
	return e.phase == phaseOpening && (e.Kind == KindErrorFrame || e.Kind == KindClose || e.Kind == KindTransport)
}

// Unwell reports whether the error says that SLNG or its provider is
// failing, as opposed to the request being wrong, the caller going away, a
// limit being reached or a reap (Class().Unwell). Circuit breakers count
// these and nothing else.
func (e *UpstreamError) Unwell() bool { return e.Class().Unwell }

// Reaped reports whether err, as a session's Recv or Err returned it, is
// SLNG ending the session as housekeeping: an UpstreamError whose Reaped
// is true, or a normal close (io.EOF), which on a session with no turn in
// flight, such as a standby, is SLNG reaping it too.
func Reaped(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	ue, ok := AsUpstreamError(err)
	return ok && ue.Reaped()
}
