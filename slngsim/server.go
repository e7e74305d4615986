package slngsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// SessionInfo records one connection, for tests.
type SessionInfo struct {
	ID           string
	Kind         string // "tts" or "stt"
	Route        string // "bridge" or "direct"
	Model        string
	Region       string // X-Region-Override
	WorldPart    string // X-World-Part-Override
	Profile      string // the Name of the session's profile
	ProviderKey  bool   // whether X-Slng-Provider-Key was sent (never its value)
	TokenInQuery bool   // whether the key came as ?token=
	KeyID        string // KeyID of the key presented, "" without one
	Init         json.RawMessage
	Received     map[string]int // client messages by type; "binary" counts audio frames
	Pings        int
	// PingsBeforeData counts the pings answered before the first data
	// the client sent after init: a TTS `text` or an STT audio frame (in
	// any form). A client that proves a session alive beside its first
	// message, not before it, leaves it at 0.
	PingsBeforeData int
	CloseCode       int // the close code the simulator sent, 0 if none (e.g. the client closed first)
	ProtocolErrors  int // client protocol violations (bare flush, bad JSON, unknown types)
	Open            bool
	ConnectedAt     time.Time
	LastClientFrame time.Time
	AudioBytesSent  int64
	AudioBytesHeard int64
	TurnsCompleted  int
	TurnsFailed     int // turns that got a mid-turn error frame (Profile.MidTurnError)
	FinalsSent      int
	KeepalivesHeard int
	ClearsAnswered  int
	// ClearedAudioSent counts the audio chunks of cleared turns sent after
	// the clear's answer (Profile.AudioAfterCleared).
	ClearedAudioSent int
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

	lis net.Listener
	// delay is lis when Options.Latency or Jitter is set: Close cuts its
	// connections and waits for their delay lines.
	delay *delayListener
	http  *http.Server
	url   string

	seq atomic.Int64
	// keys are the accepted keys (see SetAPIKeys).
	keys     atomic.Pointer[[]string]
	mu       sync.Mutex
	sessions []*session
	perKey   map[string]int
	// lostFinalizes counts, per model, the finalizes left unanswered
	// (Profile.LostFinalizes).
	lostFinalizes map[string]int
	closed        bool
	conns         sync.WaitGroup
	serveErr      chan error

	stats struct {
		connections, active, rejected, violations, turns, finals atomic.Int64
	}
}

// New returns a simulator that is not listening; serve it with Handler.
func New(opts Options) (*Server, error) {
	if opts.ChunkDuration < 0 || opts.MaxConcurrentPerKey < 0 {
		return nil, errors.New("slngsim: negative ChunkDuration or MaxConcurrentPerKey")
	}
	if opts.Latency < 0 || opts.Jitter < 0 {
		return nil, errors.New("slngsim: negative Latency or Jitter")
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
	s.url = "ws://" + lis.Addr().String()
	if s.opts.Latency > 0 || s.opts.Jitter > 0 {
		s.delay = newDelayListener(lis, netDelay{latency: s.opts.Latency, jitter: s.opts.Jitter})
		lis = s.delay
	}
	s.lis = lis
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
	if s.delay != nil {
		s.delay.closeAll()
	}
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
