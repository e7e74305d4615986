package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/speech-gateway/speech-gateway/callers"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// config is everything the binary reads from flags and the environment.
type config struct {
	listen      string
	adminListen string
	// debugListen serves /debug/pprof on its own listener; empty: off.
	debugListen string
	// memProfileRate, with debugListen, sets runtime.MemProfileRate.
	memProfileRate int
	dev            bool
	devRealtime    bool
	devProfile     string

	// The gRPC port's TLS (servertls.go): off without tlsCertFile; mutual
	// with tlsClientCAFile. The files are re-read every tlsReload (0: never).
	tlsCertFile, tlsKeyFile, tlsClientCAFile string
	tlsReload                                time.Duration

	baseURL string // empty: region's host
	apiKey  string // never logged or printed
	// keyFile is SLNG_API_KEY_FILE, re-read every keyReload (0: never).
	keyFile   string
	keyReload time.Duration
	routes    string
	// region selects the host; regionOverride and worldPartOverride are
	// sent as headers only when set.
	region, regionOverride, worldPartOverride string
	// legacyWorldPart says that the deprecated --slng-world-part named
	// the region, for a warning at start-up.
	legacyWorldPart bool
	tokenInQuery    bool
	// handshakeTimeout bounds each SLNG WebSocket handshake.
	handshakeTimeout time.Duration

	defaultTTSModel string
	defaultVoice    string
	defaultSTTModel string
	models          []string
	// catalogFile replaces the built-in model catalog; re-read every
	// catalogReload (0: never).
	catalogFile   string
	catalogReload time.Duration

	maxTextBytes       int
	maxAudioChunkBytes int
	maxStreamDuration  time.Duration
	maxStreams         int
	maxStreamsPerConn  int
	// maxHeaderListSize bounds a request's metadata (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE); more is refused by the transport.
	maxHeaderListSize int
	// streamWindow and connWindow fix the HTTP/2 receive windows; 0 leaves
	// grpc-go's dynamic ones.
	streamWindow, connWindow int
	finalsTimeout            time.Duration
	callerIdleTimeout        time.Duration
	replayBytes              int
	maxUpstreamAge           time.Duration
	turnTimeout              time.Duration
	// firstMessageTimeout and stallTimeout end streams whatever they are
	// blocked in; streamBuffer and totalBuffer bound what waits for
	// callers that read more slowly than SLNG speaks.
	firstMessageTimeout, stallTimeout time.Duration
	streamBuffer                      int
	totalBuffer                       int64
	clearTimeout                      time.Duration
	finalizeTimeout                   time.Duration

	shutdownDelay   time.Duration
	shutdownTimeout time.Duration

	allowCallerKey     bool
	poolWarm           bool
	poolMaxSessions    int
	poolMaxIdle        int
	poolMaxIdlePerKey  int
	poolMaxIdleAge     time.Duration
	poolRecentTTL      time.Duration
	poolAcquireTimeout time.Duration
	poolCheckoutPing   time.Duration
	dialAttempts       int
	dialRate           float64
	poolBackgroundRate float64
	breakerFailures    int
	breakerOpenTimeout time.Duration
	prewarmTTS         []*speechv1.SynthesisConfig
	prewarmSTT         []*speechv1.RecognitionConfig

	logLevel  string
	logFormat string

	// Callers and fleet-wide limits (fleet.go).
	callerIdentity     string
	trustAsserted      bool // --trust-asserted-caller-identity
	accessPolicy       string
	callerMaxStreams   int
	callerCharsPerMin  int64
	callerAudioPerMin  int64
	callerMetricLabels int
	redisURL           string // may hold a password: never logged
	redisMode          string
	redisPasswordFile  string
	redisPassword      string // from redisPasswordFile: never logged
	redisTimeout       time.Duration
	redisStartBudget   time.Duration
	fallbackReplicas   int
	fleetLeaseTTL      time.Duration
	upstreamBudget     int
}

// envValue is the environment variable name parsed by parse, or def when
// it is unset. A value that does not parse adds to errs an error saying it
// is not what (e.g. "an integer").
func envValue[T any](getenv func(string) string, errs *[]error, name string, def T, parse func(string) (T, error), what string) T {
	v := getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: not %s", name, v, what))
	}
	return x
}

// parseConfig reads flags, falling back to environment variables for
// their defaults, so that a Kubernetes manifest can use either.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("speech-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: speech-gateway [flags]\n\n"+
			"Streaming TTS and STT over gRPC, backed by SLNG. The SLNG key comes from\n"+
			"SLNG_API_KEY or the file named by SLNG_API_KEY_FILE; --dev needs none.\n\nFlags (environment variable in brackets):\n")
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var parseErrs []error
	envBoolDef := func(name string, def bool) bool {
		return envValue(getenv, &parseErrs, name, def, strconv.ParseBool, "a boolean")
	}
	envBool := func(name string) bool { return envBoolDef(name, false) }
	envInt := func(name string, def int) int {
		return envValue(getenv, &parseErrs, name, def, strconv.Atoi, "an integer")
	}
	envInt64 := func(name string, def int64) int64 {
		return envValue(getenv, &parseErrs, name, def, func(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) }, "an integer")
	}
	envFloat := func(name string, def float64) float64 {
		return envValue(getenv, &parseErrs, name, def, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }, "a number")
	}
	envDur := func(name string, def time.Duration) time.Duration {
		return envValue(getenv, &parseErrs, name, def, time.ParseDuration, "a duration")
	}

	fs.StringVar(&c.listen, "listen", env("LISTEN_ADDR", ":50051"), "gRPC listen address [LISTEN_ADDR]")
	fs.StringVar(&c.adminListen, "admin-listen", env("ADMIN_ADDR", ":9090"), "admin HTTP address for /metrics, /healthz, /readyz; empty disables [ADMIN_ADDR]")
	fs.StringVar(&c.debugListen, "debug-listen", env("DEBUG_ADDR", ""), "serve Go's /debug/pprof on this address, apart from the admin port; bind it to loopback, e.g. 127.0.0.1:6060; empty disables [DEBUG_ADDR]")
	fs.IntVar(&c.memProfileRate, "debug-mem-profile-rate", envInt("DEBUG_MEM_PROFILE_RATE", 0), "with --debug-listen, sample one allocation per this many bytes; 1 records every allocation, for exact counts at a large CPU cost; 0 keeps Go's default [DEBUG_MEM_PROFILE_RATE]")
	fs.StringVar(&c.tlsCertFile, "tls-cert-file", env("TLS_CERT_FILE", ""), "serve gRPC over TLS with this PEM certificate (chain); empty serves cleartext, for a mesh that brings its own TLS [TLS_CERT_FILE]")
	fs.StringVar(&c.tlsKeyFile, "tls-key-file", env("TLS_KEY_FILE", ""), "the PEM private key of --tls-cert-file [TLS_KEY_FILE]")
	fs.StringVar(&c.tlsClientCAFile, "tls-client-ca-file", env("TLS_CLIENT_CA_FILE", ""), "with --tls-cert-file, require client certificates that chain to a CA in this PEM bundle (mutual TLS); the caller identity source tls reads them [TLS_CLIENT_CA_FILE]")
	fs.DurationVar(&c.tlsReload, "tls-reload-interval", envDur("TLS_RELOAD_INTERVAL", 10*time.Second), "re-read the TLS files this often and serve new connections with changed ones (a renewed certificate); 0 disables [TLS_RELOAD_INTERVAL]")
	showVersion := fs.Bool("version", false, "print the version, revision and Go version, and exit")
	fs.BoolVar(&c.dev, "dev", envBool("SPEECH_GATEWAY_DEV"), "run an embedded SLNG simulator on loopback and use it; no key needed [SPEECH_GATEWAY_DEV]")
	fs.BoolVar(&c.devRealtime, "dev-realtime", envBool("SPEECH_GATEWAY_DEV_REALTIME"), "with --dev, the simulator paces audio at playback speed [SPEECH_GATEWAY_DEV_REALTIME]")
	fs.StringVar(&c.devProfile, "dev-profile", env("SPEECH_GATEWAY_DEV_PROFILE", "realistic"), "with --dev, the simulator's route profile: realistic (per provider, as SLNG's own clients report; docs/simulator.md), rich (the kindest), or another slngsim profile name [SPEECH_GATEWAY_DEV_PROFILE]")
	fs.StringVar(&c.baseURL, "slng-base-url", env("SLNG_BASE_URL", ""), "SLNG base URL, e.g. wss://us-east.api.slng.ai; empty uses the host of --slng-region [SLNG_BASE_URL]")
	fs.StringVar(&c.region, "slng-region", env("SLNG_REGION", ""), "SLNG region, whose host wss://{region}.api.slng.ai the gateway dials: "+
		strings.Join(slngclient.KnownRegions, ", ")+" (there is no default; SLNG routes no request between regions) [SLNG_REGION]")
	fs.StringVar(&c.routes, "slng-routes", env("SLNG_ROUTES", "bridge"), "SLNG route family: bridge (/v1/bridges/unmute/...) or direct (/v1/{tts|stt}/...) [SLNG_ROUTES]")
	legacyWorldPart := fs.String("slng-world-part", env("SLNG_WORLD_PART", ""), "deprecated name of --slng-region; na, eu and ap are refused: they are world parts, not hosts [SLNG_WORLD_PART]")
	fs.StringVar(&c.regionOverride, "slng-region-override", env("SLNG_REGION_OVERRIDE", ""), "send X-Region-Override, e.g. eu-north-1; retired for speech by SLNG's current clients [SLNG_REGION_OVERRIDE]")
	fs.StringVar(&c.worldPartOverride, "slng-world-part-override", env("SLNG_WORLD_PART_OVERRIDE", ""), "send X-World-Part-Override: na, eu or ap; retired for speech by SLNG's current clients [SLNG_WORLD_PART_OVERRIDE]")
	fs.DurationVar(&c.handshakeTimeout, "slng-handshake-timeout", envDur("SLNG_HANDSHAKE_TIMEOUT", 10*time.Second), "bound on each SLNG WebSocket handshake (TCP, TLS, HTTP upgrade); one that takes longer fails as SLNG being unwell and counts against the breaker [SLNG_HANDSHAKE_TIMEOUT]")
	fs.BoolVar(&c.tokenInQuery, "slng-token-in-query", envBool("SLNG_TOKEN_IN_QUERY"), "send the key as ?token= instead of an Authorization header [SLNG_TOKEN_IN_QUERY]")
	fs.DurationVar(&c.keyReload, "key-reload-interval", envDur("KEY_RELOAD_INTERVAL", 10*time.Second), "re-read SLNG_API_KEY_FILE this often and use a changed key for new sessions (a rotated Secret); 0 disables [KEY_RELOAD_INTERVAL]")
	fs.StringVar(&c.defaultTTSModel, "default-tts-model", env("DEFAULT_TTS_MODEL", "deepgram/aura:2"), "model for Synthesize streams that name none [DEFAULT_TTS_MODEL]")
	fs.StringVar(&c.defaultVoice, "default-voice", env("DEFAULT_VOICE", "aura-2-thalia-en"), "voice for streams that name neither model nor voice [DEFAULT_VOICE]")
	fs.StringVar(&c.defaultSTTModel, "default-stt-model", env("DEFAULT_STT_MODEL", "deepgram/nova:3"), "model for Transcribe streams that name none [DEFAULT_STT_MODEL]")
	models := fs.String("models", env("MODEL_ALLOWLIST", ""), "comma-separated models callers may name; empty allows any valid name [MODEL_ALLOWLIST]")
	fs.StringVar(&c.catalogFile, "catalog-file", env("CATALOG_FILE", ""), "YAML file of the models and voices CatalogService lists, and against which streams' voices, encodings and sample rates are checked before any SLNG dial; re-read when it changes; empty uses the built-in catalog of SLNG's documented models (with --dev, as the simulator plays them) [CATALOG_FILE]")
	fs.DurationVar(&c.catalogReload, "catalog-reload-interval", envDur("CATALOG_RELOAD_INTERVAL", 5*time.Second), "re-read --catalog-file this often and put a changed file that parses in force; 0 disables [CATALOG_RELOAD_INTERVAL]")
	fs.IntVar(&c.maxTextBytes, "max-text-bytes", envInt("MAX_TEXT_BYTES", 64<<10), "largest text in one request [MAX_TEXT_BYTES]")
	fs.IntVar(&c.maxAudioChunkBytes, "max-audio-chunk-bytes", envInt("MAX_AUDIO_CHUNK_BYTES", 64<<10), "largest audio chunk in one request [MAX_AUDIO_CHUNK_BYTES]")
	fs.DurationVar(&c.maxStreamDuration, "max-stream-duration", envDur("MAX_STREAM_DURATION", time.Hour), "longest stream; negative means no limit [MAX_STREAM_DURATION]")
	fs.IntVar(&c.maxStreams, "max-streams", envInt("MAX_STREAMS", 0), "concurrent streams across the gateway; 0 means no limit [MAX_STREAMS]")
	fs.IntVar(&c.maxStreamsPerConn, "max-streams-per-conn", envInt("MAX_STREAMS_PER_CONN", 1000), "HTTP/2 MaxConcurrentStreams per client connection [MAX_STREAMS_PER_CONN]")
	fs.IntVar(&c.maxHeaderListSize, "max-header-list-size", envInt("MAX_HEADER_LIST_SIZE", 64<<10), "bytes of request metadata (headers, uncompressed) a stream may send, from 4096 to 16777216; a stream with more is refused by the transport before it reaches the gateway [MAX_HEADER_LIST_SIZE]")
	fs.IntVar(&c.streamWindow, "http2-stream-window", envInt("HTTP2_STREAM_WINDOW", 256<<10), "bytes a caller may send on one stream before the gateway reads them; at least 65536, or 0 for grpc-go's dynamic window [HTTP2_STREAM_WINDOW]")
	fs.IntVar(&c.connWindow, "http2-conn-window", envInt("HTTP2_CONN_WINDOW", 4<<20), "the same for all streams of one connection [HTTP2_CONN_WINDOW]")
	fs.DurationVar(&c.finalsTimeout, "finals-timeout", envDur("FINALS_TIMEOUT", 10*time.Second), "wait for the last transcripts after a Transcribe half-close [FINALS_TIMEOUT]")
	fs.DurationVar(&c.callerIdleTimeout, "caller-idle-timeout", envDur("CALLER_IDLE_TIMEOUT", 5*time.Minute), "end streams whose caller sent nothing this long while nothing is in progress; negative disables [CALLER_IDLE_TIMEOUT]")
	fs.IntVar(&c.replayBytes, "transcribe-replay-bytes", envInt("TRANSCRIBE_REPLAY_BYTES", 2<<20), "audio kept after the last final to replay to a new upstream session; negative disables reconnecting [TRANSCRIBE_REPLAY_BYTES]")
	fs.DurationVar(&c.maxUpstreamAge, "max-upstream-session-age", envDur("MAX_UPSTREAM_SESSION_AGE", 25*time.Minute), "move a stream to a new upstream session past this age: Transcribe at the first final, Synthesize between turns; negative disables [MAX_UPSTREAM_SESSION_AGE]")
	fs.DurationVar(&c.turnTimeout, "turn-timeout", envDur("TURN_TIMEOUT", 15*time.Second), "end a Synthesize turn that makes no progress this long after its flush with turn_failed, and speak the turns behind it on a new upstream session; negative disables [TURN_TIMEOUT]")
	fs.DurationVar(&c.firstMessageTimeout, "first-message-timeout", envDur("FIRST_MESSAGE_TIMEOUT", 10*time.Second), "end a stream whose caller sent no config this long after it opened (FIRST_MESSAGE_TIMEOUT); negative disables [FIRST_MESSAGE_TIMEOUT]")
	fs.DurationVar(&c.stallTimeout, "caller-stall-timeout", envDur("CALLER_STALL_TIMEOUT", 30*time.Second), "end a stream whose caller accepts no message this long while responses wait for it (CALLER_STALLED); its SLNG session is closed and nothing counts against SLNG; negative disables [CALLER_STALL_TIMEOUT]")
	fs.IntVar(&c.streamBuffer, "stream-buffer-bytes", envInt("STREAM_BUFFER_BYTES", 3<<20), "responses (audio) that may wait for one caller that reads more slowly than SLNG speaks; beyond, the stream stops reading SLNG until the caller catches up (3 MiB: over 60 s of 24 kHz audio) [STREAM_BUFFER_BYTES]")
	fs.Int64Var(&c.totalBuffer, "total-buffer-bytes", envInt64("TOTAL_BUFFER_BYTES", 256<<20), "the same across every stream of the gateway; negative disables [TOTAL_BUFFER_BYTES]")
	fs.DurationVar(&c.clearTimeout, "clear-timeout", envDur("CLEAR_TIMEOUT", time.Second), "wait this long for SLNG to answer a Synthesize clear, then send the caller cleared anyway and move to a new upstream session; negative waits for the turn timeout [CLEAR_TIMEOUT]")
	fs.DurationVar(&c.finalizeTimeout, "finalize-timeout", envDur("FINALIZE_TIMEOUT", 5*time.Second), "wait this long for the final that answers a Transcribe finalize, then replay the audio to a new upstream session once, then warn the caller; negative disables [FINALIZE_TIMEOUT]")
	fs.DurationVar(&c.shutdownDelay, "shutdown-delay", envDur("SHUTDOWN_DELAY", 0), "on SIGTERM, report not-ready this long before draining, so that load balancers stop sending [SHUTDOWN_DELAY]")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDur("SHUTDOWN_TIMEOUT", 25*time.Second), "on SIGTERM, how long streams may take to finish before they are cut [SHUTDOWN_TIMEOUT]")
	fs.BoolVar(&c.allowCallerKey, "allow-caller-key", envBool("ALLOW_CALLER_KEY"), "let callers send their own SLNG key in x-slng-api-key metadata [ALLOW_CALLER_KEY]")
	fs.BoolVar(&c.poolWarm, "pool-warm", envBoolDef("POOL_WARM", true), "keep warm standby SLNG sessions and reuse clean ones [POOL_WARM]")
	fs.IntVar(&c.poolMaxSessions, "pool-max-sessions", envInt("POOL_MAX_SESSIONS", 256), "upstream SLNG sessions at most, in use, standby or dialling [POOL_MAX_SESSIONS]")
	fs.IntVar(&c.poolMaxIdle, "pool-max-idle", envInt("POOL_MAX_IDLE", 32), "standby sessions at most [POOL_MAX_IDLE]")
	fs.IntVar(&c.poolMaxIdlePerKey, "pool-max-idle-per-config", envInt("POOL_MAX_IDLE_PER_CONFIG", 2), "standby sessions at most per configuration [POOL_MAX_IDLE_PER_CONFIG]")
	fs.DurationVar(&c.poolMaxIdleAge, "pool-max-idle-age", envDur("POOL_MAX_IDLE_AGE", 25*time.Second), "retire standby sessions idle this long; keep below SLNG's idle timeout [POOL_MAX_IDLE_AGE]")
	fs.DurationVar(&c.poolRecentTTL, "pool-recent-ttl", envDur("POOL_RECENT_TTL", 2*time.Minute), "keep one standby for each configuration used this recently; negative disables [POOL_RECENT_TTL]")
	fs.DurationVar(&c.poolAcquireTimeout, "pool-acquire-timeout", envDur("POOL_ACQUIRE_TIMEOUT", 2*time.Second), "wait this long for a session slot at the cap, then RESOURCE_EXHAUSTED [POOL_ACQUIRE_TIMEOUT]")
	fs.DurationVar(&c.poolCheckoutPing, "pool-checkout-ping-timeout", envDur("POOL_CHECKOUT_PING_TIMEOUT", 500*time.Millisecond), "a standby not heard from in the last second proves it is alive beside its first message, not before it: without a pong or any frame within this long, the stream replays the message on a new session; negative lends standbys unproven [POOL_CHECKOUT_PING_TIMEOUT]")
	fs.IntVar(&c.dialAttempts, "dial-attempts", envInt("DIAL_ATTEMPTS", 3), "dials per stream for retryable failures, with backoff, before any output [DIAL_ATTEMPTS]")
	fs.Float64Var(&c.dialRate, "dial-rate", envFloat("DIAL_RATE", 100), "SLNG dials per second at most, of every kind, with bursts of twice as many; a stream waits up to --pool-acquire-timeout for one; negative means no limit [DIAL_RATE]")
	fs.Float64Var(&c.poolBackgroundRate, "pool-background-dial-rate", envFloat("POOL_BACKGROUND_DIAL_RATE", 5), "dials per second at most for standby and prewarm sessions, which no stream waits for, with bursts of twice as many; negative means no limit [POOL_BACKGROUND_DIAL_RATE]")
	fs.IntVar(&c.breakerFailures, "breaker-failures", envInt("BREAKER_FAILURES", 5), "consecutive upstream failures that open a model's circuit breaker [BREAKER_FAILURES]")
	fs.DurationVar(&c.breakerOpenTimeout, "breaker-open-timeout", envDur("BREAKER_OPEN_TIMEOUT", 10*time.Second), "how long an open breaker refuses before a probe [BREAKER_OPEN_TIMEOUT]")
	prewarmTTS := fs.String("prewarm-tts", env("PREWARM_TTS", ""), "SynthesisConfig JSON (or a JSON array of them) to keep warm from the start [PREWARM_TTS]")
	prewarmSTT := fs.String("prewarm-stt", env("PREWARM_STT", ""), "RecognitionConfig JSON (or a JSON array of them) to keep warm from the start [PREWARM_STT]")
	fs.StringVar(&c.logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error [LOG_LEVEL]")
	fs.StringVar(&c.logFormat, "log-format", env("LOG_FORMAT", ""), "json or console; default json, console with --dev [LOG_FORMAT]")

	fs.StringVar(&c.callerIdentity, "caller-identity", env("CALLER_IDENTITY", callers.DefaultIdentity), "where a stream's caller id comes from, first found wins: xfcc[:By=SPIFFE-ID] (Envoy/Istio x-forwarded-client-cert URI SAN, with By: only from a proxy of that identity, * matching any run), l5d (Linkerd l5d-client-id), tls (the verified client certificate's SPIFFE id, else its first DNS name; needs --tls-client-ca-file), metadata[:KEY] (default x-caller-id), peer; trust mesh headers only behind the mesh's sidecar (docs/operations.md) [CALLER_IDENTITY]")
	fs.BoolVar(&c.trustAsserted, "trust-asserted-caller-identity", envBool("TRUST_ASSERTED_CALLER_IDENTITY"), "with --access-policy or per-caller quotas, accept a metadata identity source, which any caller can set to any id; without it the gateway refuses to start so [TRUST_ASSERTED_CALLER_IDENTITY]")
	fs.StringVar(&c.accessPolicy, "access-policy", env("ACCESS_POLICY", ""), "YAML or JSON file of the callers allowed per RPC and model pattern, with per-caller quotas; re-read when it changes; empty allows every caller everything [ACCESS_POLICY]")
	fs.IntVar(&c.callerMaxStreams, "caller-max-streams", envInt("CALLER_MAX_STREAMS", 0), "concurrent streams per caller (across replicas with --redis-url); the access policy may override it per caller; 0 means no limit [CALLER_MAX_STREAMS]")
	fs.Int64Var(&c.callerCharsPerMin, "caller-characters-per-minute", int64(envInt("CALLER_CHARACTERS_PER_MINUTE", 0)), "characters a caller may synthesize per minute; 0 means no limit [CALLER_CHARACTERS_PER_MINUTE]")
	fs.Int64Var(&c.callerAudioPerMin, "caller-audio-seconds-per-minute", int64(envInt("CALLER_AUDIO_SECONDS_PER_MINUTE", 0)), "seconds of audio (synthesized plus transcribed) a caller may start streams after, per minute; 0 means no limit [CALLER_AUDIO_SECONDS_PER_MINUTE]")
	fs.IntVar(&c.callerMetricLabels, "caller-metric-labels", envInt("CALLER_METRIC_LABELS", 100), "callers with a usage metric label of their own, besides those the access policy names; the rest count as \"other\" [CALLER_METRIC_LABELS]")
	// Not defaulted from REDIS_URL: -h prints defaults, and the URL may
	// hold a password. The environment is read after parsing.
	fs.StringVar(&c.redisURL, "redis-url", "", "redis://[user:password@]host:port/db (rediss:// for TLS) shared by the replicas for the upstream session budget and the caller quotas; empty keeps every limit per process [REDIS_URL]")
	fs.StringVar(&c.redisMode, "redis-mode", env("REDIS_MODE", "single"), "single (--redis-url names the server), sentinel (it names the sentinels and ?master_name=) or cluster (it names seed nodes, more with ?addr=) [REDIS_MODE]")
	fs.StringVar(&c.redisPasswordFile, "redis-password-file", env("REDIS_PASSWORD_FILE", ""), "file holding the Redis password (a mounted Secret), used in place of one in --redis-url; with sentinel, the primary's [REDIS_PASSWORD_FILE]")
	fs.DurationVar(&c.redisTimeout, "redis-timeout", envDur("REDIS_TIMEOUT", 250*time.Millisecond), "bound on every Redis command; a slower Redis puts the limits in fallback (each replica's share) [REDIS_TIMEOUT]")
	fs.DurationVar(&c.redisStartBudget, "redis-start-budget", envDur("REDIS_START_BUDGET", 50*time.Millisecond), "bound on each Redis check when a stream starts (a caller's streams and rates, the session budget); past it this replica's share decides the check, and speech_gateway_fleet_redis_slow_total counts it [REDIS_START_BUDGET]")
	fs.IntVar(&c.fallbackReplicas, "fleet-fallback-replicas", envInt("FLEET_FALLBACK_REPLICAS", 1), "with --redis-url, the replicas each limit is divided by while Redis has not answered since start-up (then the replicas last seen alive) [FLEET_FALLBACK_REPLICAS]")
	fs.DurationVar(&c.fleetLeaseTTL, "fleet-lease-ttl", envDur("FLEET_LEASE_TTL", 10*time.Second), "with --redis-url, how long a replica's leases outlive its last heartbeat: a crashed replica's sessions and streams are free again within it [FLEET_LEASE_TTL]")
	fs.IntVar(&c.upstreamBudget, "upstream-session-budget", envInt("UPSTREAM_SESSION_BUDGET", 0), "SLNG sessions at most per SLNG key, standbys included, across every replica sharing --redis-url (per process without it); streams wait --pool-acquire-timeout for one; 0 means no limit [UPSTREAM_SESSION_BUDGET]")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.redisURL == "" {
		c.redisURL = getenv("REDIS_URL")
	}
	if *showVersion {
		return nil, errShowVersion
	}
	// The retired pprof switches: one that asked for profiles stops the
	// start-up, so that nobody finds them gone when they need them; a
	// "false" or "0" asked for nothing and is ignored.
	for _, name := range []string{"ADMIN_PPROF", "ADMIN_MEM_PROFILE_RATE"} {
		if v := strings.ToLower(getenv(name)); v != "" && v != "false" && v != "0" {
			parseErrs = append(parseErrs, fmt.Errorf("%s is no longer read: profiles are served on their own listener, DEBUG_ADDR=127.0.0.1:6060 (and DEBUG_MEM_PROFILE_RATE)", name))
		}
	}
	if len(parseErrs) > 0 {
		return nil, errors.Join(parseErrs...)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.prewarmTTS, err = parseConfigs[*speechv1.SynthesisConfig](*prewarmTTS, "--prewarm-tts"); err != nil {
		return nil, err
	}
	if c.prewarmSTT, err = parseConfigs[*speechv1.RecognitionConfig](*prewarmSTT, "--prewarm-stt"); err != nil {
		return nil, err
	}
	for _, m := range strings.Split(*models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.models = append(c.models, m)
		}
	}
	if c.logFormat == "" {
		c.logFormat = "json"
		if c.dev {
			c.logFormat = "console"
		}
	}
	// HTTP/2 windows are at most 2^31-1; grpc-go ignores one under 64 KiB,
	// and setting one alone leaves the other at 64 KiB.
	validWindow := func(n int) bool { return n >= 64<<10 && n <= math.MaxInt32 }
	if (c.streamWindow != 0 || c.connWindow != 0) && (!validWindow(c.streamWindow) || !validWindow(c.connWindow)) {
		return nil, errors.New("--http2-stream-window and --http2-conn-window must both be 0, or both from 65536 to 2147483647")
	}
	if c.maxHeaderListSize < 4<<10 || c.maxHeaderListSize > 16<<20 {
		return nil, errors.New("--max-header-list-size must be from 4096 to 16777216")
	}
	if c.memProfileRate < 0 || (c.memProfileRate > 0 && c.debugListen == "") {
		return nil, errors.New("--debug-mem-profile-rate must be 0, or positive with --debug-listen")
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"--dial-rate", c.dialRate}, {"--pool-background-dial-rate", c.poolBackgroundRate}} {
		if r.v == 0 || math.IsNaN(r.v) {
			return nil, fmt.Errorf("%s must be positive, or negative for no limit", r.name)
		}
	}
	if c.handshakeTimeout <= 0 {
		return nil, errors.New("--slng-handshake-timeout must be positive")
	}
	if c.routes != "bridge" && c.routes != "direct" {
		return nil, fmt.Errorf("--slng-routes must be bridge or direct, not %q", c.routes)
	}
	if c.callerMaxStreams < 0 || c.callerCharsPerMin < 0 || c.callerAudioPerMin < 0 || c.upstreamBudget < 0 ||
		c.callerMetricLabels < 1 || c.redisTimeout <= 0 || c.redisStartBudget <= 0 || c.fallbackReplicas < 1 || c.fleetLeaseTTL < 300*time.Millisecond {
		return nil, errors.New("--caller-max-streams, --caller-characters-per-minute, --caller-audio-seconds-per-minute and " +
			"--upstream-session-budget must be 0 or more, --caller-metric-labels and --fleet-fallback-replicas at least 1, " +
			"--redis-timeout and --redis-start-budget positive and --fleet-lease-ttl at least 300ms")
	}
	if c.redisMode != "single" && c.redisMode != "sentinel" && c.redisMode != "cluster" {
		return nil, fmt.Errorf("--redis-mode must be single, sentinel or cluster, not %q", c.redisMode)
	}
	if c.redisPasswordFile != "" {
		b, err := os.ReadFile(c.redisPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read --redis-password-file: %w", err)
		}
		if c.redisPassword = strings.TrimSpace(string(b)); c.redisPassword == "" {
			return nil, fmt.Errorf("--redis-password-file %s is empty", c.redisPasswordFile)
		}
	}
	if err := checkTLS(c); err != nil {
		return nil, err
	}
	if !c.dev {
		key, err := readKey(getenv)
		if err != nil {
			return nil, err
		}
		c.apiKey = key
		c.keyFile = getenv("SLNG_API_KEY_FILE")
	}
	if err := c.parseRegion(*legacyWorldPart); err != nil {
		return nil, err
	}
	if c.keyReload < 0 {
		c.keyReload = 0
	}
	if c.catalogReload < 0 {
		c.catalogReload = 0
	}
	return c, nil
}

// parseRegion checks the region, from --slng-region or its deprecated
// name --slng-world-part, which refuses the world parts it once meant.
// Outside --dev, a region or a base URL is required: there is no default.
func (c *config) parseRegion(legacy string) error {
	c.region = strings.ToLower(c.region)
	if legacy = strings.ToLower(legacy); legacy != "" {
		if err := slngclient.CheckRegion(legacy); err != nil {
			return fmt.Errorf("--slng-world-part (SLNG_WORLD_PART), a deprecated name of --slng-region (SLNG_REGION): %w", err)
		}
		if c.region != "" && c.region != legacy {
			return errors.New("--slng-world-part is a deprecated name of --slng-region: set one of them")
		}
		c.region, c.legacyWorldPart = legacy, true
	}
	if c.region != "" {
		if err := slngclient.CheckRegion(c.region); err != nil {
			return fmt.Errorf("--slng-region (SLNG_REGION): %w", err)
		}
	}
	if !c.dev && c.region == "" && c.baseURL == "" {
		return fmt.Errorf("no SLNG region: set --slng-region (SLNG_REGION) to one of %s, or --slng-base-url; "+
			"SLNG routes no request between regions, and not every model runs in every region",
			strings.Join(slngclient.KnownRegions, ", "))
	}
	return nil
}

// checkTLS refuses TLS settings that cannot work together: a certificate
// without its key, client CAs without a certificate, and the tls caller
// identity without client certificates to read it from.
func checkTLS(c *config) error {
	if (c.tlsCertFile == "") != (c.tlsKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together: set both or neither")
	}
	if c.tlsClientCAFile != "" && c.tlsCertFile == "" {
		return errors.New("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
	}
	for _, s := range strings.Split(c.callerIdentity, ",") {
		if strings.TrimSpace(s) == "tls" && c.tlsClientCAFile == "" {
			return errors.New("--caller-identity tls needs --tls-client-ca-file: without client certificates there is no id to read")
		}
	}
	if c.tlsReload < 0 {
		c.tlsReload = 0
	}
	return nil
}

// readKey reads the SLNG key from SLNG_API_KEY or SLNG_API_KEY_FILE (a
// mounted Kubernetes secret). The error never contains the key.
func readKey(getenv func(string) string) (string, error) {
	key, file := getenv("SLNG_API_KEY"), getenv("SLNG_API_KEY_FILE")
	switch {
	case key != "" && file != "":
		return "", errors.New("set SLNG_API_KEY or SLNG_API_KEY_FILE, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read SLNG_API_KEY_FILE: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return "", fmt.Errorf("SLNG_API_KEY_FILE %s is empty", file)
		}
	case key == "":
		return "", errors.New("no SLNG key: set SLNG_API_KEY or SLNG_API_KEY_FILE, or run with --dev to use the embedded simulator")
	}
	if strings.ContainsAny(key, " \t\r\n") {
		return "", errors.New("the SLNG key contains whitespace")
	}
	return key, nil
}

// parseConfigs reads a JSON object, or an array of them, as protobuf
// messages of type T, in the same JSON form grpcurl users send.
func parseConfigs[T proto.Message](text, flagName string) ([]T, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	var raws []json.RawMessage
	if strings.HasPrefix(text, "[") {
		if err := json.Unmarshal([]byte(text), &raws); err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
	} else {
		raws = []json.RawMessage{json.RawMessage(text)}
	}
	var out []T
	for _, raw := range raws {
		var m T
		m = m.ProtoReflect().Type().New().Interface().(T)
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		out = append(out, m)
	}
	return out, nil
}
