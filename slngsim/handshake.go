package slngsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// modelPattern is SLNG's model variant syntax (slng-protocol.md section 1).
var modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+(?::[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// Handler serves both SLNG route families:
// /v1/bridges/unmute/{tts|stt}/{model} and /v1/{tts|stt}/{model}.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

// admitted is a handshake the simulator accepts.
type admitted struct {
	route, kind, model string
	key                string
	inQuery            bool // the key came as ?token=
	profile            Profile
	fault              Fault
}

// admit checks a handshake as SLNG does: the route, the model variant,
// the key, BYOK, the model's handshake fault and the per-key connection
// limit, in that order. It answers a refusal itself and returns false; an
// admitted handshake holds one of its key's connections, which the caller
// releases.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (admitted, bool) {
	route, kind, model, ok := parsePath(r.URL.Path)
	if !ok {
		s.reject(w, http.StatusNotFound, "unknown route")
		return admitted{}, false
	}
	if !modelPattern.MatchString(model) || len(model) > 128 {
		s.reject(w, http.StatusBadRequest, "invalid model variant")
		return admitted{}, false
	}
	// The profile comes first: it shapes every refusal that follows.
	profile := s.profileFor(model)
	if err := profile.validate(); err != nil {
		s.log.Error("invalid profile", zap.String("model", model), zap.Error(err))
		s.reject(w, http.StatusInternalServerError, err.Error())
		return admitted{}, false
	}
	a := admitted{route: route, kind: kind, model: model, profile: profile}
	a.key, a.inQuery = credential(r)
	if !s.accepts(a.key) {
		s.refuse(w, profile, http.StatusUnauthorized, "Invalid or missing API key")
		return admitted{}, false
	}
	if profile.NotDeployed {
		region := s.opts.Region
		if region == "" {
			region = "this region"
		}
		s.refuse(w, profile, http.StatusNotFound, "Model "+model+" is not deployed in "+region)
		return admitted{}, false
	}
	if s.opts.ConnectLatency > 0 && !sleepCtx(r.Context(), s.opts.ConnectLatency) {
		return admitted{}, false
	}
	if profile.RefuseBYOK && r.Header.Get("X-Slng-Provider-Key") != "" && strings.HasPrefix(model, "slng/") {
		s.refuse(w, profile, http.StatusBadRequest, byokRefusal)
		return admitted{}, false
	}
	a.fault = s.faultFor(ConnInfo{Kind: kind, Model: model, Seq: s.seq.Add(1)})
	if f := a.fault; f.Kind == FaultHandshake {
		body := f.Body
		if body == "" {
			body = handshakeBody(f.HTTPStatus)
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		}
		s.refuse(w, profile, f.HTTPStatus, body)
		return admitted{}, false
	}
	if !s.acquireKey(a.key) {
		s.refuse(w, profile, http.StatusTooManyRequests, "Too many concurrent connections")
		return admitted{}, false
	}
	return a, true
}

// serveHTTP admits a handshake, accepts the WebSocket and serves the
// session until it ends.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer s.releaseKey(a.key)

	ss := &session{
		srv:     s,
		fault:   a.fault,
		profile: a.profile,
		reaps:   make(chan reapRequest, 1),
		info: SessionInfo{
			ID:           "sess_" + randomHex(8),
			Profile:      a.profile.Name,
			Kind:         a.kind,
			Route:        a.route,
			Model:        a.model,
			Region:       r.Header.Get("X-Region-Override"),
			WorldPart:    r.Header.Get("X-World-Part-Override"),
			ProviderKey:  r.Header.Get("X-Slng-Provider-Key") != "",
			TokenInQuery: a.inQuery,
			KeyID:        KeyID(a.key),
			Received:     map[string]int{},
			Open:         true,
			ConnectedAt:  time.Now(),
		},
		requestID: "req_" + randomHex(8),
	}
	w.Header().Set("X-Slng-Request-Id", ss.requestID)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		CompressionMode: websocket.CompressionDisabled,
		OnPingReceived: func(context.Context, []byte) bool {
			ss.mu.Lock()
			ss.info.Pings++
			ss.mu.Unlock()
			return true
		},
	})
	if err != nil {
		s.stats.rejected.Add(1)
		return
	}
	// The session's context ends when the session does or when the
	// simulator closes, whichever is first.
	ss.ctx, ss.cancel = context.WithCancel(context.WithoutCancel(r.Context()))
	ss.ws = c
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ss.cancel()
		c.CloseNow()
		return
	}
	s.conns.Add(1)
	s.sessions = append(s.sessions, ss)
	s.mu.Unlock()
	defer s.conns.Done()
	s.stats.connections.Add(1)
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)
	ss.run()
}

// byokRefusal is SLNG's answer to a provider key on an SLNG-hosted route
// (pipecat-slng README and CHANGELOG 0.4.0).
const byokRefusal = "BYOK is only supported for external STT/TTS routes"

// reject refuses a handshake with a plain-text body.
func (s *Server) reject(w http.ResponseWriter, code int, msg string) {
	s.stats.rejected.Add(1)
	http.Error(w, msg, code)
}

// refuse refuses a handshake for a model whose profile is known: with a
// plain-text body, or a JSON one when the profile says so.
func (s *Server) refuse(w http.ResponseWriter, p Profile, code int, msg string) {
	if !p.JSONHandshakeBodies {
		s.reject(w, code, msg)
		return
	}
	s.stats.rejected.Add(1)
	body := []byte(msg)
	if !strings.HasPrefix(msg, "{") || !json.Valid(body) {
		body = handshakeJSON(code, msg)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// handshakeJSON is a refusal's JSON body in the shape of the error
// responses of SLNG's OpenAPI document for the same paths: {"error": M,
// "status": N}, and for 403 {"error", "message", "statusCode"}.
func handshakeJSON(status int, msg string) []byte {
	var v any = struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}{msg, status}
	if status == http.StatusForbidden {
		v = struct {
			Error      string `json:"error"`
			Message    string `json:"message"`
			StatusCode int    `json:"statusCode"`
		}{http.StatusText(status), msg, status}
	}
	b, _ := json.Marshal(v)
	return b
}

func parsePath(p string) (route, kind, model string, ok bool) {
	rest, bridge := strings.CutPrefix(p, "/v1/bridges/unmute/")
	route = "bridge"
	if !bridge {
		if rest, ok = strings.CutPrefix(p, "/v1/"); !ok {
			return "", "", "", false
		}
		route = "direct"
	}
	kind, model, ok = strings.Cut(rest, "/")
	if !ok || (kind != "tts" && kind != "stt") || model == "" {
		return "", "", "", false
	}
	return route, kind, model, true
}

func credential(r *http.Request) (key string, inQuery bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if k, ok := strings.CutPrefix(h, "Bearer "); ok {
			return k, false
		}
		return "", false
	}
	if k := r.URL.Query().Get("token"); k != "" {
		return k, true
	}
	return "", false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// handshakeBody is the body of a refused handshake: SLNG's own words where
// its documentation gives them ([ERR], the OpenAPI document), otherwise a
// short reason in the same style. pipecat-slng shows this body to the user,
// so it is never just the status line.
func handshakeBody(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "Invalid request: the model route does not accept this connection"
	case http.StatusUnauthorized:
		return "Invalid or missing API key"
	case http.StatusForbidden:
		return "Missing or invalid Bearer token"
	case http.StatusNotFound:
		return "Model not found"
	case http.StatusRequestEntityTooLarge:
		return "Payload too large"
	case http.StatusTooManyRequests:
		return "Too many concurrent connections"
	case http.StatusInternalServerError:
		return "Internal server error"
	case http.StatusBadGateway:
		return "Failed to connect to backend: 502 Bad Gateway"
	case http.StatusServiceUnavailable:
		return "Service temporarily unavailable, please retry"
	case http.StatusGatewayTimeout:
		return "Backend did not respond in time"
	}
	return http.StatusText(status)
}
