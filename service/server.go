package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/speech-gateway/speech-gateway/catalog"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// Config holds the service's knobs. The zero value of every field is the
// documented default.
type Config struct {
	// DefaultTTSModel serves Synthesize streams that name no model.
	// Default "deepgram/aura:2".
	DefaultTTSModel string
	// DefaultVoice is the voice for streams that name none and use
	// DefaultTTSModel. Default "aura-2-thalia-en". Streams naming another
	// model and no voice get the model's own default.
	DefaultVoice string
	// DefaultSTTModel serves Transcribe streams that name no model.
	// Default "deepgram/nova:3".
	DefaultSTTModel string
	// ModelAllowlist, when not empty, is the set of models callers may
	// name; the defaults are always allowed. Empty allows any model name
	// that passes validation.
	ModelAllowlist []string
	// MaxTextBytes bounds one text input. Default 64 KiB.
	MaxTextBytes int
	// MaxAudioChunkBytes bounds one audio chunk. Default 64 KiB.
	MaxAudioChunkBytes int
	// MaxStreamDuration ends streams that run longer. Default 1 hour;
	// negative disables it.
	MaxStreamDuration time.Duration
	// FinalsTimeout bounds the wait for the last transcripts after a
	// Transcribe caller half-closes. Default 10 s.
	FinalsTimeout time.Duration
	// CloseTimeout bounds a graceful upstream close. Default 2 s.
	CloseTimeout time.Duration
	// MaxStreams bounds concurrent streams across the gateway; more are
	// refused with RESOURCE_EXHAUSTED. 0 means no limit.
	MaxStreams int
	// CallerIdleTimeout ends a stream whose caller has sent nothing for
	// this long while nothing is in progress (Synthesize: no turn being
	// spoken); it frees the upstream session a forgotten stream holds.
	// Default 5 min; negative disables.
	CallerIdleTimeout time.Duration
	// TranscribeReplayBytes bounds the audio a Transcribe stream keeps
	// after its last final transcript, to replay to a new upstream session
	// when the old one fails. Default 2 MiB (about 65 s of 16 kHz LINEAR16);
	// negative disables reconnecting.
	TranscribeReplayBytes int
	// MaxUpstreamSessionAge: at the first final transcript after an
	// upstream session reaches this age, a Transcribe stream moves to a new
	// session, before SLNG's maximum connection duration (30 minutes on
	// some plans) ends it in the middle of speech. Default 25 min; negative
	// disables.
	MaxUpstreamSessionAge time.Duration
	// TurnTimeout ends a Synthesize turn that makes no progress (no audio,
	// no end of turn) for this long after its flush, with turn_failed and a
	// new upstream session for the turns behind it: some routes answer a
	// turn with an error frame and never finish it. Default 15 s; negative
	// disables.
	TurnTimeout time.Duration
	// ClearTimeout bounds the wait for SLNG's answer to a Synthesize
	// clear or cancel (`cleared`, or an end of a turn). Without one in
	// time, the caller gets `cleared` anyway, the session is retired, and
	// the next turn goes to a new one, as LiveKit's SLNG plugin waits 1 s.
	// Default 1 s; negative disables (the wait is then the turn
	// watchdog's).
	ClearTimeout time.Duration
	// FinalizeTimeout bounds the wait for the final that answers a
	// Transcribe finalize: without one in time, the audio no final covers
	// goes again to a new session, finalize included; if that one does
	// not answer either, the caller gets a finalize_timeout warning.
	// Default 5 s; negative disables.
	FinalizeTimeout time.Duration
	// Region names the SLNG region the upstream serves, for the status of
	// a model SLNG does not serve there. Optional.
	Region string
	// DrainGrace is the grace period announced to streams when the server
	// drains (ServerDraining.grace). Default 25 s.
	DrainGrace time.Duration
	// FirstMessageTimeout ends a stream whose caller sent no config within
	// it. Default 10 s; negative disables.
	FirstMessageTimeout time.Duration
	// CallerStallTimeout ends a stream whose caller accepts no message at
	// all for this long while responses wait for it (CALLER_STALLED): its
	// SLNG session is closed, never pooled, and nothing counts against
	// SLNG. Default 30 s; negative disables.
	CallerStallTimeout time.Duration
	// StreamBufferBytes bounds the responses, audio above all, that wait
	// for one stream's caller, who reads more slowly than SLNG speaks. SLNG
	// is read on meanwhile; past the bound, the stream stops reading SLNG
	// until the caller catches up. Default 3 MiB (over 60 s of 24 kHz
	// 16-bit audio).
	StreamBufferBytes int
	// BufferBytes bounds what waits for callers across the gateway: a
	// stream with anything waiting stops reading SLNG while the total is
	// over it. Default 256 MiB; negative disables.
	BufferBytes int64
	// TracerProvider records a span per upstream SLNG session; nil records
	// nothing. The gRPC server's own spans come from its stats handler.
	TracerProvider trace.TracerProvider
	// Clock times every stream's timers (first message, idle, duration,
	// a stalled caller, unanswered clears and finalizes); nil is the real
	// clock. Tests pass a fake one to run minutes of timers in no time.
	Clock clock.Clock
	// AllowCallerKey lets callers send their own SLNG key in the
	// x-slng-api-key request metadata. Off by default: such a request is
	// then refused, rather than silently served with the gateway's key.
	AllowCallerKey bool
	// Callers identifies, admits and meters the caller of each stream
	// (service/callers.go); nil identifies nobody and admits everyone.
	Callers Callers
	// Catalog returns the model catalog in force (catalog.Live.Current):
	// CatalogService lists it, and a stream naming a model in it is
	// checked against it before any SLNG dial (service/catalog.go). nil
	// lists nothing and checks nothing.
	Catalog func() *catalog.Catalog
}

// CallerKeyHeader is the request metadata that carries a caller's own SLNG
// key when Config.AllowCallerKey is set.
const CallerKeyHeader = "x-slng-api-key"

// DefaultConfig is the Config New uses for a zero Config: every knob at
// its documented default.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.DefaultTTSModel == "" {
		c.DefaultTTSModel = "deepgram/aura:2"
	}
	if c.DefaultVoice == "" {
		c.DefaultVoice = "aura-2-thalia-en"
	}
	if c.DefaultSTTModel == "" {
		c.DefaultSTTModel = "deepgram/nova:3"
	}
	if c.MaxTextBytes <= 0 {
		c.MaxTextBytes = 64 << 10
	}
	if c.MaxAudioChunkBytes <= 0 {
		c.MaxAudioChunkBytes = 64 << 10
	}
	if c.MaxStreamDuration == 0 {
		c.MaxStreamDuration = time.Hour
	}
	if c.FinalsTimeout <= 0 {
		c.FinalsTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	switch {
	case c.TranscribeReplayBytes == 0:
		c.TranscribeReplayBytes = 2 << 20
	case c.TranscribeReplayBytes < 0:
		c.TranscribeReplayBytes = 0
	}
	if c.CallerIdleTimeout == 0 {
		c.CallerIdleTimeout = 5 * time.Minute
	}
	if c.MaxUpstreamSessionAge == 0 {
		c.MaxUpstreamSessionAge = 25 * time.Minute
	}
	switch {
	case c.TurnTimeout == 0:
		c.TurnTimeout = 15 * time.Second
	case c.TurnTimeout < 0:
		c.TurnTimeout = 0
	}
	if c.DrainGrace <= 0 {
		c.DrainGrace = 25 * time.Second
	}
	c.ClearTimeout = orDefault(c.ClearTimeout, time.Second)
	c.FinalizeTimeout = orDefault(c.FinalizeTimeout, 5*time.Second)
	c.FirstMessageTimeout = orDefault(c.FirstMessageTimeout, 10*time.Second)
	c.CallerStallTimeout = orDefault(c.CallerStallTimeout, 30*time.Second)
	if c.StreamBufferBytes <= 0 {
		c.StreamBufferBytes = 3 << 20
	}
	switch {
	case c.BufferBytes == 0:
		c.BufferBytes = 256 << 20
	case c.BufferBytes < 0:
		c.BufferBytes = 0
	}
	c.ModelAllowlist = append([]string(nil), c.ModelAllowlist...)
	return c
}

// orDefault is d, def when d is zero, and 0 (off) when d is negative.
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Server implements TextToSpeechService, SpeechToTextService and
// CatalogService on top of an Upstream. Its methods may be called
// concurrently.
type Server struct {
	speechv1.UnimplementedTextToSpeechServiceServer
	speechv1.UnimplementedSpeechToTextServiceServer
	speechv1.UnimplementedCatalogServiceServer

	upstream Upstream
	log      *zap.Logger
	cfg      Config
	allowed  map[string]bool
	metrics  *Metrics
	tracer   trace.Tracer

	active atomic.Int64
	// drainCtx is cancelled by Drain; streams watch it.
	drainCtx context.Context
	drain    context.CancelFunc
	// pumps tracks the goroutines that may outlive their handler: a
	// stream's caller reader and sender, which grpc-go releases from a
	// blocked Recv or Send only when the handler returns, and the graceful
	// close of a session a Synthesize stream rolled over from.
	pumps sync.WaitGroup
	// timedRoutes are the models whose routes were seen sending alignment
	// (timings.go).
	timedRoutes timedRoutes
}

// New returns a Server. logger may be nil (no logs) and metrics may be nil
// (no metrics). It returns an error when cfg names invalid models.
func New(upstream Upstream, logger *zap.Logger, metrics *Metrics, cfg Config) (*Server, error) {
	if upstream == nil {
		return nil, errors.New("service: upstream is required")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	cfg = cfg.withDefaults()
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	s := &Server{
		tracer:   tp.Tracer(tracerName),
		upstream: upstream,
		log:      logger.Named("service"),
		cfg:      cfg,
		allowed:  map[string]bool{},
		metrics:  metrics,
	}
	s.drainCtx, s.drain = context.WithCancel(context.Background())
	for _, m := range append([]string{cfg.DefaultTTSModel, cfg.DefaultSTTModel}, cfg.ModelAllowlist...) {
		if err := slngclient.ValidateModel(m); err != nil {
			return nil, fmt.Errorf("service: model %q: %w", m, err)
		}
		s.allowed[m] = true
	}
	return s, nil
}

// Register registers the three services on r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	speechv1.RegisterTextToSpeechServiceServer(r, s)
	speechv1.RegisterSpeechToTextServiceServer(r, s)
	speechv1.RegisterCatalogServiceServer(r, s)
}

// Drain asks every stream to finish: Synthesize streams end after the turn
// in progress, Transcribe streams deliver their pending finals; both then
// end with UNAVAILABLE / SERVER_DRAINING so that callers retry on another
// replica. New streams are refused the same way. Drain does not block; the
// gRPC server's GracefulStop waits for the handlers.
func (s *Server) Drain() {
	s.drain()
}

// Wait blocks until every goroutine the Server started has exited. Call it
// after the gRPC server has stopped; it returns at once after that.
func (s *Server) Wait() {
	s.pumps.Wait()
}

// Profiles turns Synthesize and Transcribe configs, as callers send them,
// into pool profiles to keep warm: a standby serves a stream only when its
// config comes out exactly the same, so the profile goes through the same
// validation and defaults as a stream's config.
func (s *Server) Profiles(tts []*speechv1.SynthesisConfig, stt []*speechv1.RecognitionConfig) ([]slngpool.Profile, error) {
	var out []slngpool.Profile
	for _, c := range tts {
		st := &synthCore{coreBase: coreBase{srv: s}}
		if err := st.configure(c); err != nil {
			return nil, fmt.Errorf("prewarm synthesis config: %w", err)
		}
		out = append(out, slngpool.Profile{Endpoint: st.ep, TTS: &st.ttsCfg})
	}
	for _, c := range stt {
		tr := &sttCore{coreBase: coreBase{srv: s}}
		if err := tr.configure(c); err != nil {
			return nil, fmt.Errorf("prewarm recognition config: %w", err)
		}
		out = append(out, slngpool.Profile{Endpoint: tr.ep, STT: &tr.sttCfg})
	}
	return out, nil
}

// callerKey returns the caller's own SLNG key from the request metadata, or
// "" to use the gateway's. The key is never logged or echoed.
func (s *Server) callerKey(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(CallerKeyHeader)
	if len(vals) == 0 {
		return "", nil
	}
	const field = "metadata." + CallerKeyHeader
	switch {
	case !s.cfg.AllowCallerKey:
		return "", invalid(field, "this gateway does not accept callers' own SLNG keys")
	case len(vals) > 1:
		return "", invalid(field, "sent more than once")
	case len(vals[0]) == 0 || len(vals[0]) > 512 || strings.ContainsAny(vals[0], " \t\r\n"):
		return "", invalid(field, "not a valid key")
	}
	return vals[0], nil
}

// ActiveStreams reports the number of streams being served.
func (s *Server) ActiveStreams() int { return int(s.active.Load()) }

// admit counts a new stream in, or refuses it when draining or full. The
// returned func counts it out.
func (s *Server) admit(rpc string) (func(), error) {
	if s.drainCtx.Err() != nil {
		return nil, errDraining
	}
	n := s.active.Add(1)
	if s.cfg.MaxStreams > 0 && n > int64(s.cfg.MaxStreams) {
		s.active.Add(-1)
		return nil, errOverloaded
	}
	s.metrics.streamsActive.WithLabelValues(rpc).Inc()
	return func() {
		s.active.Add(-1)
		s.metrics.streamsActive.WithLabelValues(rpc).Dec()
	}, nil
}

// newSessionID returns the gateway's id for one stream.
func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "gw_" + hex.EncodeToString(b[:])
}

// finish turns a handler's error into the status the caller sees, logs it
// once, and records it.
func (s *Server) finish(ctx context.Context, rpc string, err error, meta streamMeta, log *zap.Logger) error {
	ctxErr := ctx.Err()
	st, internal := toStatus(err, ctxErr, meta)
	s.metrics.streamsTotal.WithLabelValues(rpc, st.Code().String()).Inc()
	if reason := upstreamReason(err, ctxErr, st); reason != "" {
		s.metrics.upstreamErrors.WithLabelValues(reason).Inc()
		if reason == ReasonUpstreamAuthFailed {
			credential := "gateway"
			if meta.callerKey {
				credential = "caller"
			}
			s.metrics.keyRefused.WithLabelValues(credential).Inc()
		}
	}
	switch {
	case err == nil:
		return nil
	case internal:
		log.Error("stream failed", zap.Error(err))
	default:
		log.Info("stream ended", zap.String("code", st.Code().String()), zap.Error(err))
	}
	return st.Err()
}

// upstreamReason is the ErrorInfo reason of a stream that an upstream
// failure ended (SLNG's error, a refused handshake, a lost session, an open
// breaker), "" otherwise.
func upstreamReason(err, ctxErr error, st *status.Status) string {
	var ue *slngclient.UpstreamError
	var coe *slngpool.CircuitOpenError
	if ctxErr != nil || (!errors.As(err, &ue) && !errors.As(err, &coe) && !errors.Is(err, errTurnTimeout)) {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// limits reports the limits in force, for `started`.
func (s *Server) limits() *speechv1.StreamLimits {
	l := &speechv1.StreamLimits{
		MaxTextBytes:       int32(s.cfg.MaxTextBytes),
		MaxAudioChunkBytes: int32(s.cfg.MaxAudioChunkBytes),
	}
	if s.cfg.MaxStreamDuration > 0 {
		l.MaxStreamDuration = durationpb.New(s.cfg.MaxStreamDuration)
	}
	if s.cfg.CallerIdleTimeout > 0 {
		l.IdleTimeout = durationpb.New(s.cfg.CallerIdleTimeout)
	}
	return l
}
