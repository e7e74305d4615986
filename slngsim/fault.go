package slngsim

import (
	"fmt"
	"strconv"
	"strings"
)

// FaultKind names what a Fault does.
type FaultKind string

// The fault kinds.
const (
	// FaultHandshake rejects the WebSocket upgrade with HTTP Fault.HTTPStatus
	// and a plain-text body: Fault.Body, or a realistic one for the status
	// (see handshakeBody).
	FaultHandshake FaultKind = "handshake"
	// FaultError sends an error frame with Fault.Code; when Fault.Fatal, the
	// socket is then closed with Fault.CloseCode (default 1011).
	FaultError FaultKind = "error"
	// FaultDrop cuts the TCP connection without a close frame (the client
	// sees 1006).
	FaultDrop FaultKind = "drop"
	// FaultClose closes the socket with Fault.CloseCode.
	FaultClose FaultKind = "close"
	// FaultStall stops sending anything, keeping the socket open.
	FaultStall FaultKind = "stall"
	// FaultMalformed sends a text frame that is not JSON.
	FaultMalformed FaultKind = "malformed"
	// FaultOversized sends a text frame of Fault.Size bytes (default 8 MiB).
	FaultOversized FaultKind = "oversized"
	// FaultUnknown sends messages of an unknown type; a correct client
	// ignores them.
	FaultUnknown FaultKind = "unknown"
)

// FaultPoint says when a Fault fires.
type FaultPoint string

// The fault points. PointChunks uses Fault.After.
const (
	PointInit       FaultPoint = "init"        // instead of `ready`: the answer to `init`
	PointReady      FaultPoint = "ready"       // right after `ready`
	PointFirstAudio FaultPoint = "first-audio" // before the first audio of the first turn
	PointChunks     FaultPoint = "chunks"      // after Fault.After audio chunks (TTS) or after Fault.After binary frames received (STT)
	PointFirstFinal FaultPoint = "first-final" // STT: before the first final transcript
	PointConnect    FaultPoint = "connect"     // handshake faults
)

// Fault is an injected misbehaviour. The zero Fault does nothing.
type Fault struct {
	Kind       FaultKind
	Point      FaultPoint
	After      int    // for PointChunks
	HTTPStatus int    // for FaultHandshake
	Body       string // for FaultHandshake: the response body; default a realistic text for the status
	Code       string // for FaultError
	Message    string // for FaultError; default "injected <code>"
	Fatal      bool   // for FaultError: close after the frame
	CloseCode  int    // for FaultClose and fatal FaultError
	Size       int    // for FaultOversized
	// RetryAfter, for FaultHandshake, sends a Retry-After header with
	// this many seconds (as SLNG's gateway may with a 429 or 503).
	RetryAfter int
	// Once makes the fault fire on the first matching connection only.
	Once bool
}

// ParseFault parses a fault spec of the form MODEL=KIND[:ARG][@POINT][,OPTION...]:
//
//	deepgram/aura:2=handshake:503
//	*=handshake:400,body=BYOK is only supported for external STT/TTS routes
//	*=handshake:429,retry-after=30
//	*=error:provider_error@first-audio,fatal,close=1011
//	*=error:pronunciation_not_found@ready         (non-fatal: frame only)
//	*=drop@chunks:3
//	*=close:1012@chunks:2
//	*=stall@chunks:5
//	*=malformed@ready
//	*=oversized@ready,size=8388608
//	*=unknown@ready
//	*=error:rate_limit@ready,fatal,once
//	*=error:auth_error@init,fatal,close=1008     (answers init with the error, never ready)
//
// MODEL "*" applies to every model. The default point is ready (connect for
// handshake faults).
func ParseFault(spec string) (model string, f Fault, err error) {
	model, rest, ok := strings.Cut(spec, "=")
	if !ok || model == "" || rest == "" {
		return "", Fault{}, fmt.Errorf("fault %q: want MODEL=KIND[:ARG][@POINT][,OPTION...]", spec)
	}
	// The model may contain ':' and '=' never, so the first '=' splits.
	parts := strings.Split(rest, ",")
	head, opts := parts[0], parts[1:]
	head, point, hasPoint := strings.Cut(head, "@")
	kind, arg, _ := strings.Cut(head, ":")
	f.Kind = FaultKind(kind)
	f.Point = PointReady
	switch f.Kind {
	case FaultHandshake:
		f.Point = PointConnect
		if f.HTTPStatus, err = strconv.Atoi(arg); err != nil || f.HTTPStatus < 400 || f.HTTPStatus > 599 {
			return "", Fault{}, fmt.Errorf("fault %q: handshake needs an HTTP status 400-599", spec)
		}
	case FaultError:
		if arg == "" {
			return "", Fault{}, fmt.Errorf("fault %q: error needs a code", spec)
		}
		f.Code = arg
	case FaultClose:
		if f.CloseCode, err = strconv.Atoi(arg); err != nil || f.CloseCode < 1000 || f.CloseCode > 4999 {
			return "", Fault{}, fmt.Errorf("fault %q: close needs a close code", spec)
		}
	case FaultDrop, FaultStall, FaultMalformed, FaultOversized, FaultUnknown:
		if arg != "" {
			return "", Fault{}, fmt.Errorf("fault %q: %s takes no argument", spec, kind)
		}
	default:
		return "", Fault{}, fmt.Errorf("fault %q: unknown kind %q", spec, kind)
	}
	if hasPoint {
		p, n, _ := strings.Cut(point, ":")
		f.Point = FaultPoint(p)
		switch f.Point {
		case PointInit, PointReady, PointFirstAudio, PointFirstFinal:
		case PointChunks:
			if f.After, err = strconv.Atoi(n); err != nil || f.After < 0 {
				return "", Fault{}, fmt.Errorf("fault %q: chunks needs a count", spec)
			}
		default:
			return "", Fault{}, fmt.Errorf("fault %q: unknown point %q", spec, point)
		}
	}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "fatal":
			f.Fatal = true
		case "once":
			f.Once = true
		case "close":
			if f.CloseCode, err = strconv.Atoi(v); err != nil {
				return "", Fault{}, fmt.Errorf("fault %q: bad close code", spec)
			}
		case "size":
			if f.Size, err = strconv.Atoi(v); err != nil || f.Size <= 0 {
				return "", Fault{}, fmt.Errorf("fault %q: bad size", spec)
			}
		case "message":
			f.Message = v
		case "retry-after":
			if f.RetryAfter, err = strconv.Atoi(v); err != nil || f.RetryAfter < 0 || f.Kind != FaultHandshake {
				return "", Fault{}, fmt.Errorf("fault %q: retry-after takes seconds, on handshake faults", spec)
			}
		case "body":
			if f.Kind != FaultHandshake {
				return "", Fault{}, fmt.Errorf("fault %q: body is for handshake faults", spec)
			}
			f.Body = v
		default:
			return "", Fault{}, fmt.Errorf("fault %q: unknown option %q", spec, o)
		}
	}
	return model, f, nil
}

// MustFaults parses specs into a Faults map, panicking on a bad spec; for
// tests and literals.
func MustFaults(specs ...string) map[string]Fault {
	m := map[string]Fault{}
	for _, s := range specs {
		model, f, err := ParseFault(s)
		if err != nil {
			panic(err)
		}
		m[model] = f
	}
	return m
}

// ConnInfo describes a connection, for Options.Script.
type ConnInfo struct {
	Kind  string // "tts" or "stt"
	Model string
	Seq   int64 // 1 for the first connection the simulator accepted, and so on
}

// faultFor picks the fault of a new connection: Options.Script, else the
// model's entry in Options.Faults, else its "*" entry. A Once fault is
// removed as it is handed out, so that it fires on one connection only.
func (s *Server) faultFor(ci ConnInfo) Fault {
	if s.opts.Script != nil {
		return s.opts.Script(ci)
	}
	f, ok := s.opts.Faults[ci.Model]
	if !ok {
		f = s.opts.Faults["*"]
	}
	if f.Once {
		s.mu.Lock()
		defer s.mu.Unlock()
		key := ci.Model
		if _, own := s.opts.Faults[key]; !own {
			key = "*"
		}
		if cur, ok := s.opts.Faults[key]; !ok || cur.Kind == "" {
			return Fault{}
		}
		delete(s.opts.Faults, key)
	}
	return f
}
