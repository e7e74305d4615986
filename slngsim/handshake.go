package slngsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	route, kind, model, ok := parsePath(r.URL.Path)
	if !ok {
		s.reject(w, http.StatusNotFound, "unknown route")
		return
	}
	if !modelPattern.MatchString(model) || len(model) > 128 {
		s.reject(w, http.StatusBadRequest, "invalid model variant")
		return
	}
	key, inQuery := credential(r)
	if !s.accepts(key) {
		s.reject(w, http.StatusUnauthorized, "Invalid or missing API key")
		return
	}
	if s.opts.ConnectLatency > 0 && !sleepCtx(r.Context(), s.opts.ConnectLatency) {
		return
	}
	profile := s.profileFor(model)
	if err := profile.validate(); err != nil {
		s.log.Error("invalid profile", zap.String("model", model), zap.Error(err))
		s.reject(w, http.StatusInternalServerError, err.Error())
		return
	}
	if profile.RefuseBYOK && r.Header.Get("X-Slng-Provider-Key") != "" && strings.HasPrefix(model, "slng/") {
		s.reject(w, http.StatusBadRequest, byokRefusal)
		return
	}
	seq := s.seq.Add(1)
	fault := s.faultFor(ConnInfo{Kind: kind, Model: model, Seq: seq})
	if fault.Kind == FaultHandshake {
		body := fault.Body
		if body == "" {
			body = handshakeBody(fault.HTTPStatus)
		}
		if fault.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fault.RetryAfter))
		}
		s.reject(w, fault.HTTPStatus, body)
		return
	}
	if !s.acquireKey(key) {
		s.reject(w, http.StatusTooManyRequests, "Too many concurrent connections")
		return
	}
	defer s.releaseKey(key)

	ss := &session{
		srv:     s,
		fault:   fault,
		profile: profile,
		reaps:   make(chan reapRequest, 1),
		info: SessionInfo{
			ID:           "sess_" + randomHex(8),
			Profile:      profile.Name,
			Kind:         kind,
			Route:        route,
			Model:        model,
			Region:       r.Header.Get("X-Region-Override"),
			WorldPart:    r.Header.Get("X-World-Part-Override"),
			ProviderKey:  r.Header.Get("X-Slng-Provider-Key") != "",
			TokenInQuery: inQuery,
			KeyID:        KeyID(key),
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

func (s *Server) reject(w http.ResponseWriter, code int, msg string) {
	s.stats.rejected.Add(1)
	http.Error(w, msg, code)
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
