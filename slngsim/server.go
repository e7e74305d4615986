package slngsim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// AudioForm is how the simulated TTS sends audio, for every model. It
// predates Profile.AudioShape, which can also choose other JSON shapes per
// model.
type AudioForm int

const (
	// AudioBinary leaves the choice to the profile (binary frames unless
	// its AudioShape says otherwise).
	AudioBinary AudioForm = iota
	// AudioJSON sends `audio_chunk` JSON messages with base64 data, the
	// documented form, on every model (AudioShapeAudioChunk).
	AudioJSON
)

// Options configure a simulator. The zero value of every field is its
// documented default.
type Options struct {
	// Addr is the listen address for Start. Default "127.0.0.1:0".
	Addr string
	// APIKey is the key the simulator accepts (Bearer or ?token=). Empty
	// accepts any request, with or without a key, unless APIKeys is set.
	APIKey string
	// APIKeys are more accepted keys, for tests with several credentials.
	APIKeys []string
	// Realtime paces TTS audio at playback speed. Default: as fast as the
	// client reads.
	Realtime bool
	// AudioForm AudioJSON sends audio_chunk JSON on every model, whatever
	// the profile says.
	AudioForm AudioForm
	// ChunkDuration is the audio per TTS frame. Default 20 ms.
	ChunkDuration time.Duration
	// IdleTimeout reaps a socket whose client sent no text or binary frame
	// for this long (pings do not count): with the profile's ReapErrorFrame,
	// error idle_timeout_exceeded first; then close with its ReapCode
	// (rich: the frame, then 1008). Default 30 s; negative disables.
	IdleTimeout time.Duration
	// MaxConnectionDuration reaps any socket this old, as the idle timeout
	// does but with max_connection_duration_exceeded. Default 30 min, the
	// limit of some SLNG plans; negative disables.
	MaxConnectionDuration time.Duration
	// TTSTextTimeout and TTSTextTimeoutClose, when not 0, replace every
	// profile's TextTimeout and TextTimeoutClose; a negative TTSTextTimeout
	// disables the text timeout on every model.
	TTSTextTimeout      time.Duration
	TTSTextTimeoutClose int
	// MaxConcurrentPerKey limits open sockets per key; more are refused
	// with HTTP 429. 0 means no limit.
	MaxConcurrentPerKey int
	// ConnectLatency delays every handshake; ReadyLatency delays `ready`
	// after `init`; FirstAudioLatency delays each turn's first audio.
	ConnectLatency, ReadyLatency, FirstAudioLatency time.Duration
	// CloseAfterAudioEnd, when set, decides each model's
	// Profile.CloseAfterTurn (close 1000 after each turn's end messages),
	// whatever the profile says. When it, Profile and ProfileFor are all
	// unset, models whose name contains "rime/" or "cartesia/" close after
	// each turn, as the simulator always did.
	CloseAfterAudioEnd func(model string) bool
	// Profile is the route behaviour of every model; nil means
	// ProfileRich(), the simulator's original behaviour. New copies it.
	Profile *Profile
	// ProfileFor, when set, picks each model's profile at its handshake
	// and takes precedence over Profile, e.g. Realistic. It may be called
	// concurrently.
	ProfileFor func(model string) Profile
	// Faults are injected per model; the key "*" applies to every model
	// without an entry of its own. See ParseFault.
	Faults map[string]Fault
	// Script, when set, picks the fault for each connection and takes
	// precedence over Faults; returning the zero Fault injects nothing.
	Script func(ConnInfo) Fault
	// BenchStamp writes the send time into the first 8 bytes of every TTS
	// audio payload (big-endian Unix nanoseconds), for latency benchmarks.
	// The audio is then no longer decodable.
	BenchStamp bool
	// Logger receives the simulator's logs; nil discards them. Keys are
	// never logged.
	Logger *zap.Logger
}

// ConnInfo describes a connection, for Options.Script.
type ConnInfo struct {
	Kind  string // "tts" or "stt"
	Model string
	Seq   int64 // 1 for the first connection the simulator accepted, and so on
}

// SessionInfo records one connection, for tests.
type SessionInfo struct {
	ID               string
	Kind             string // "tts" or "stt"
	Route            string // "bridge" or "direct"
	Model            string
	Region           string // X-Region-Override
	WorldPart        string // X-World-Part-Override
	Profile          string // the Name of the session's profile
	ProviderKey      bool   // whether X-Slng-Provider-Key was sent (never its value)
	TokenInQuery     bool   // whether the key came as ?token=
	KeyID            string // KeyID of the key presented, "" without one
	Init             json.RawMessage
	Received         map[string]int // client messages by type; "binary" counts audio frames
	Pings            int
	CloseCode        int // the close code the simulator sent, 0 if none (e.g. the client closed first)
	ProtocolErrors   int // client protocol violations (bare flush, bad JSON, unknown types)
	Open             bool
	ConnectedAt      time.Time
	LastClientFrame  time.Time
	AudioBytesSent   int64
	AudioBytesHeard  int64
	TurnsCompleted   int
	TurnsFailed      int // turns that got a mid-turn error frame (Profile.MidTurnError)
	FinalsSent       int
	KeepalivesHeard  int
	ClearsAnswered   int
	UnknownTypesSent int
}

// Stats are the simulator's counters.
type Stats struct {
	Connections        int64 // accepted WebSocket connections
	Active             int64 // open now
	Rejected           int64 // refused handshakes (auth, route, limit, faults)
	ProtocolViolations int64
	TTSTurns           int64
	STTFinals          int64
}

// Server is a running simulator. Its methods may be called concurrently.
type Server struct {
	opts Options
	log  *zap.Logger

	lis  net.Listener
	http *http.Server
	url  string

	seq atomic.Int64
	// keys are the accepted keys (see SetAPIKeys).
	keys     atomic.Pointer[[]string]
	mu       sync.Mutex
	sessions []*session
	perKey   map[string]int
	closed   bool
	conns    sync.WaitGroup
	serveErr chan error

	stats struct {
		connections, active, rejected, violations, turns, finals atomic.Int64
	}
}

// New returns a simulator that is not listening; serve it with Handler.
func New(opts Options) (*Server, error) {
	if opts.ChunkDuration < 0 || opts.MaxConcurrentPerKey < 0 {
		return nil, errors.New("slngsim: negative ChunkDuration or MaxConcurrentPerKey")
	}
	if opts.ChunkDuration == 0 {
		opts.ChunkDuration = 20 * time.Millisecond
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	if opts.MaxConnectionDuration == 0 {
		opts.MaxConnectionDuration = 30 * time.Minute
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.TTSTextTimeoutClose != 0 && !validCloseCode(opts.TTSTextTimeoutClose) {
		return nil, errors.New("slngsim: TTSTextTimeoutClose is not a close code")
	}
	if opts.Profile != nil {
		p := *opts.Profile
		if err := p.withDefaults().validate(); err != nil {
			return nil, err
		}
		opts.Profile = &p
	}
	faults := make(map[string]Fault, len(opts.Faults))
	for k, v := range opts.Faults {
		faults[k] = v
	}
	opts.Faults = faults
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	srv := &Server{opts: opts, log: log.Named("slngsim"), perKey: map[string]int{}}
	var keys []string
	for _, k := range append([]string{opts.APIKey}, opts.APIKeys...) {
		if k != "" {
			keys = append(keys, k)
		}
	}
	srv.SetAPIKeys(keys...)
	return srv, nil
}

// Start returns a simulator listening on opts.Addr. The caller must Close it.
func Start(opts Options) (*Server, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("slngsim: %w", err)
	}
	s.lis = lis
	s.url = "ws://" + lis.Addr().String()
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.http.Serve(lis) }()
	return s, nil
}

// URL is the base URL of a started simulator, e.g. "ws://127.0.0.1:8787".
func (s *Server) URL() string { return s.url }

// Close stops listening, closes every open socket without a close frame and
// waits for all of the simulator's goroutines to exit.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	open := append([]*session(nil), s.sessions...)
	s.mu.Unlock()
	var err error
	if s.http != nil {
		err = s.http.Close()
		if serr := <-s.serveErr; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	for _, ss := range open {
		ss.cancel()
	}
	s.conns.Wait()
	return err
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:        s.stats.connections.Load(),
		Active:             s.stats.active.Load(),
		Rejected:           s.stats.rejected.Load(),
		ProtocolViolations: s.stats.violations.Load(),
		TTSTurns:           s.stats.turns.Load(),
		STTFinals:          s.stats.finals.Load(),
	}
}

// Sessions returns a snapshot of every connection so far, oldest first.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	list := append([]*session(nil), s.sessions...)
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, ss := range list {
		out = append(out, ss.snapshot())
	}
	return out
}

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

// profileFor resolves a model's profile: ProfileFor, else Profile, else
// the rich profile; then the older Options that still apply to every
// model, and the defaults.
func (s *Server) profileFor(model string) Profile {
	o := &s.opts
	var p Profile
	switch {
	case o.ProfileFor != nil:
		p = o.ProfileFor(model)
	case o.Profile != nil:
		p = *o.Profile
	default:
		p = ProfileRich()
		p.CloseAfterTurn = strings.Contains(model, "rime/") || strings.Contains(model, "cartesia/")
	}
	if o.CloseAfterAudioEnd != nil {
		p.CloseAfterTurn = o.CloseAfterAudioEnd(model)
	}
	if o.AudioForm == AudioJSON {
		p.AudioShape = AudioShapeAudioChunk
	}
	if o.TTSTextTimeout != 0 {
		p.TextTimeout = o.TTSTextTimeout
	}
	if o.TTSTextTimeoutClose != 0 {
		p.TextTimeoutClose = o.TTSTextTimeoutClose
	}
	return p.withDefaults()
}

// byokRefusal is SLNG's answer to a provider key on an SLNG-hosted route
// (pipecat-slng README and CHANGELOG 0.4.0).
const byokRefusal = "BYOK is only supported for external STT/TTS routes"

func (s *Server) reject(w http.ResponseWriter, code int, msg string) {
	s.stats.rejected.Add(1)
	http.Error(w, msg, code)
}

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

// SetAPIKeys replaces the keys the simulator accepts (Options.APIKey and
// APIKeys) for handshakes from now on, as a rotated or revoked key would;
// open sessions go on. No keys accepts any request.
func (s *Server) SetAPIKeys(keys ...string) {
	keys = append([]string(nil), keys...)
	s.keys.Store(&keys)
}

func (s *Server) accepts(key string) bool {
	keys := *s.keys.Load()
	if len(keys) == 0 {
		return true
	}
	ok := false
	for _, k := range keys {
		if k != "" && subtle.ConstantTimeCompare([]byte(key), []byte(k)) == 1 {
			ok = true
		}
	}
	return ok
}

// KeyID identifies a key in SessionInfo without revealing it: the first 8
// bytes of its SHA-256, in hex; "" for no key.
func KeyID(key string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// Kill cuts, without a close frame, every open connection whose info
// matches, as a network failure or a reaped socket would; it returns how
// many it cut.
func (s *Server) Kill(match func(SessionInfo) bool) int {
	s.mu.Lock()
	list := append([]*session(nil), s.sessions...)
	s.mu.Unlock()
	n := 0
	for _, ss := range list {
		if info := ss.snapshot(); info.Open && match(info) {
			ss.drop()
			n++
		}
	}
	return n
}

// Reap closes every open connection whose info matches with a close
// frame of code, as SLNG reaps idle and over-long connections; with
// withErrorFrame an error frame (max_connection_duration_exceeded, in the
// session's ErrorShape) goes first. Unlike Kill, the client sees a proper
// close. It returns how many connections it started to reap; each closes
// promptly, but Reap does not wait for the client's answer. A code that is
// not a close code (see RFC 6455 section 7.4) reaps nothing.
func (s *Server) Reap(match func(SessionInfo) bool, code int, withErrorFrame bool) int {
	if !validCloseCode(code) {
		return 0
	}
	s.mu.Lock()
	list := append([]*session(nil), s.sessions...)
	s.mu.Unlock()
	n := 0
	for _, ss := range list {
		info := ss.snapshot()
		if !info.Open || ss.closing.Load() || !match(info) {
			continue
		}
		req := reapRequest{code: websocket.StatusCode(code), frame: withErrorFrame,
			errCode: "max_connection_duration_exceeded", message: "connection reaped"}
		select {
		case ss.reaps <- req:
			n++
		default: // a reap is already on its way
		}
	}
	return n
}

func (s *Server) acquireKey(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxConcurrentPerKey > 0 && s.perKey[key] >= s.opts.MaxConcurrentPerKey {
		return false
	}
	s.perKey[key]++
	return true
}

func (s *Server) releaseKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perKey[key]--
	if s.perKey[key] <= 0 {
		delete(s.perKey, key)
	}
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

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
