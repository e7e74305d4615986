package main

import (
	"strings"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// knownRegions are the regions SLNG lists, as -h and the README show them.
var knownRegions = "`" + strings.Join(slngclient.KnownRegions, "`, `") + "`"

// setting is one line of the gateway's configuration: a flag, the
// environment variable behind it, and the field of config it sets. -h and
// the README's table are made from these lines (usage.go); the defaults
// they show are the packages' own (defaultConfig).
type setting struct {
	// name is the flag's; its environment variable is envName(name).
	name string
	// old is the environment variable read before envName(name) was, and
	// still read, with a warning, for one release.
	old string
	// field is where the setting goes: a pointer to a field of c (see
	// value), or a flag.Value of its own.
	field func(c *config) any
	// usage says what it does, in Markdown: `code`, [text](link).
	usage string
	// off, for a duration or a limit, is what a negative value means
	// ("no limit", "off"); empty, a negative value is refused. 0 means
	// the default on every one of them.
	off string
	// def, when set, is shown as the default in place of the field's
	// value in the defaults.
	def string
	// envOnly: a secret, read from the environment only, never a flag.
	envOnly bool
}

// settings are every setting of the gateway, in the order -h and the
// README list them.
var settings = []setting{
	{name: "listen", old: "LISTEN_ADDR", field: func(c *config) any { return &c.serve.listen },
		usage: "gRPC address"},
	{name: "admin-listen", old: "ADMIN_ADDR", field: func(c *config) any { return &c.serve.adminListen },
		usage: "`/metrics`, `/healthz`, `/readyz`; empty disables"},
	{name: "tls-cert-file", old: "TLS_CERT_FILE", field: func(c *config) any { return &c.serve.tlsCertFile },
		usage: "serve gRPC over TLS with this PEM certificate (with its chain); empty serves cleartext, for a mesh that brings its own TLS ([operations](docs/operations.md#tls-without-a-mesh))"},
	{name: "tls-key-file", old: "TLS_KEY_FILE", field: func(c *config) any { return &c.serve.tlsKeyFile },
		usage: "the PEM private key of `--tls-cert-file`"},
	{name: "tls-client-ca-file", old: "TLS_CLIENT_CA_FILE", field: func(c *config) any { return &c.serve.tlsClientCAFile },
		usage: "require client certificates that chain to a CA of this PEM bundle (mutual TLS); the caller identity source `tls` names callers by them"},
	{name: "tls-reload-interval", old: "TLS_RELOAD_INTERVAL", field: func(c *config) any { return &c.serve.tlsReload }, off: "never",
		usage: "re-read the three TLS files this often: changed ones that load (a renewed certificate) serve new connections, open connections keep theirs"},
	{name: "debug-listen", old: "DEBUG_ADDR", field: func(c *config) any { return &c.serve.debugListen },
		usage: "serve Go's `/debug/pprof` on this address, apart from the admin port; bind it to loopback (`127.0.0.1:6060`) and reach it with `kubectl port-forward`; empty disables"},
	{name: "debug-mem-profile-rate", old: "DEBUG_MEM_PROFILE_RATE", field: func(c *config) any { return &c.serve.memProfileRate }, off: "no memory profile",
		usage: "with `--debug-listen`, sample one allocation per this many bytes (the default is Go's); 1 counts every allocation (exact, and slow)"},
	{name: "dev", field: func(c *config) any { return &c.serve.dev },
		usage: "run the SLNG simulator in-process on loopback and use it; no key needed"},
	{name: "dev-realtime", field: func(c *config) any { return &c.serve.devRealtime },
		usage: "with `--dev`, pace simulated audio at playback speed"},
	{name: "dev-profile", field: func(c *config) any { return &c.serve.devProfile },
		usage: "with `--dev`, how the simulated SLNG routes behave: `realistic` (per provider, as SLNG's own clients report it), `rich` (the kindest) or another profile of [docs/simulator.md](docs/simulator.md)"},
	{name: "slng-api-key", old: "SLNG_API_KEY", envOnly: true, field: func(c *config) any { return &c.client.APIKey },
		usage: "the SLNG key; required without `--dev` unless `--slng-api-key-file` names one; never logged, and never a flag, which any process could read"},
	{name: "slng-api-key-file", old: "SLNG_API_KEY_FILE", field: func(c *config) any { return &c.serve.keyFile },
		usage: "a file holding the SLNG key (a mounted Secret), in place of `SPEECH_GATEWAY_SLNG_API_KEY`, re-read every `--key-reload-interval`"},
	{name: "key-reload-interval", old: "KEY_RELOAD_INTERVAL", field: func(c *config) any { return &c.serve.keyReload }, off: "never",
		usage: "re-read `--slng-api-key-file` this often: a changed key (a rotated Secret) serves new sessions, standbys holding the old key are retired, streams in flight keep their sessions"},
	{name: "slng-region", old: "SLNG_REGION", field: func(c *config) any { return &c.client.Region },
		usage: "the SLNG region, whose host `wss://{region}.api.slng.ai` the gateway dials: " + knownRegions + "; required without `--dev` unless `--slng-base-url` is set (there is no default: SLNG routes no request between regions, and not every model runs in every region); `na`, `eu` and `ap` are refused (world parts, not hosts), a prefix SLNG does not list is used with a warning"},
	{name: "slng-world-part", old: "SLNG_WORLD_PART", field: func(c *config) any { return &c.legacyWorldPart },
		usage: "deprecated name of `--slng-region`; `na`, `eu` and `ap` are refused: they are world parts, not hosts"},
	{name: "slng-base-url", old: "SLNG_BASE_URL", field: func(c *config) any { return &c.client.BaseURL },
		usage: "SLNG endpoint, e.g. `wss://us-east.api.slng.ai`, in place of the host of `--slng-region`. The host in use is logged at start-up (`slng_host`)"},
	{name: "slng-routes", old: "SLNG_ROUTES", field: func(c *config) any { return &c.client.Routes },
		usage: "`bridge` (`/v1/bridges/unmute/{tts,stt}/{model}`) or `direct` (`/v1/{tts,stt}/{model}`)"},
	{name: "slng-region-override", old: "SLNG_REGION_OVERRIDE", field: func(c *config) any { return &c.client.RegionOverride },
		usage: "send `X-Region-Override`, e.g. `eu-north-1`; not sent unless set (retired for speech by SLNG's current clients)"},
	{name: "slng-world-part-override", old: "SLNG_WORLD_PART_OVERRIDE", field: func(c *config) any { return &c.client.WorldPartOverride },
		usage: "send `X-World-Part-Override` (`na`, `eu` or `ap`); not sent unless set"},
	{name: "slng-handshake-timeout", old: "SLNG_HANDSHAKE_TIMEOUT", field: func(c *config) any { return &c.client.HandshakeTimeout },
		usage: "bound on each SLNG WebSocket handshake (TCP, TLS, HTTP upgrade): an upstream that takes the connection and never answers fails the dial as SLNG being unwell, which counts against the breaker, instead of holding streams to their deadlines"},
	{name: "slng-token-in-query", old: "SLNG_TOKEN_IN_QUERY", field: func(c *config) any { return &c.client.TokenInQuery },
		usage: "send the key as `?token=` instead of an `Authorization` header"},
	{name: "default-tts-model", old: "DEFAULT_TTS_MODEL", field: func(c *config) any { return &c.service.DefaultTTSModel },
		usage: "model for Synthesize streams that name none"},
	{name: "default-voice", old: "DEFAULT_VOICE", field: func(c *config) any { return &c.service.DefaultVoice },
		usage: "voice for streams that name neither model nor voice"},
	{name: "default-stt-model", old: "DEFAULT_STT_MODEL", field: func(c *config) any { return &c.service.DefaultSTTModel },
		usage: "model for Transcribe streams that name none"},
	{name: "models", old: "MODEL_ALLOWLIST", field: func(c *config) any { return &c.service.ModelAllowlist },
		usage: "comma-separated models callers may name; empty allows any well-formed name"},
	{name: "catalog-file", old: "CATALOG_FILE", field: func(c *config) any { return &c.catalog.file },
		usage: "YAML file of the models and voices `CatalogService` lists, against which streams' voices, encodings and sample rates are checked before any SLNG dial; empty uses the built-in catalog of SLNG's documented models (with `--dev`, as the simulator plays them) ([operations](docs/operations.md#the-model-catalog))"},
	{name: "catalog-reload-interval", old: "CATALOG_RELOAD_INTERVAL", field: func(c *config) any { return &c.catalog.opts.Reload }, off: "never",
		usage: "re-read `--catalog-file` this often and put a changed file that parses in force"},
	{name: "max-text-bytes", old: "MAX_TEXT_BYTES", field: func(c *config) any { return &c.service.MaxTextBytes },
		usage: "largest text in one request"},
	{name: "max-audio-chunk-bytes", old: "MAX_AUDIO_CHUNK_BYTES", field: func(c *config) any { return &c.service.MaxAudioChunkBytes },
		usage: "largest audio chunk in one request"},
	{name: "max-stream-duration", old: "MAX_STREAM_DURATION", field: func(c *config) any { return &c.service.MaxStreamDuration }, off: "no limit",
		usage: "longest stream, `OUT_OF_RANGE` after it"},
	{name: "max-streams", old: "MAX_STREAMS", field: func(c *config) any { return &c.service.MaxStreams }, off: "no limit",
		usage: "concurrent streams in the gateway, `RESOURCE_EXHAUSTED` beyond"},
	{name: "max-streams-per-conn", old: "MAX_STREAMS_PER_CONN", field: func(c *config) any { return &c.serve.maxStreamsPerConn }, off: "no limit",
		usage: "HTTP/2 `MaxConcurrentStreams` per client connection"},
	{name: "max-header-list-size", old: "MAX_HEADER_LIST_SIZE", field: func(c *config) any { return &c.serve.maxHeaderListSize },
		usage: "bytes of request metadata (uncompressed headers) one stream may send, from 4096 to 16777216; a stream with more is reset by the HTTP/2 transport (grpc-go's clients see `INTERNAL`) and the gateway never holds it"},
	{name: "http2-stream-window", old: "HTTP2_STREAM_WINDOW", field: func(c *config) any { return &c.serve.streamWindow }, off: "grpc-go's dynamic windows, with a negative `--http2-conn-window`",
		usage: "bytes a caller may send on one stream before the gateway reads them (at least 65536)"},
	{name: "http2-conn-window", old: "HTTP2_CONN_WINDOW", field: func(c *config) any { return &c.serve.connWindow }, off: "grpc-go's dynamic windows, with a negative `--http2-stream-window`",
		usage: "the same for all the streams of one connection"},
	{name: "finals-timeout", old: "FINALS_TIMEOUT", field: func(c *config) any { return &c.service.FinalsTimeout },
		usage: "how long a Transcribe half-close waits for the last finals"},
	{name: "caller-idle-timeout", old: "CALLER_IDLE_TIMEOUT", field: func(c *config) any { return &c.service.CallerIdleTimeout }, off: "off",
		usage: "end a stream whose caller sent nothing this long while nothing is in progress (`OUT_OF_RANGE`)"},
	{name: "first-message-timeout", old: "FIRST_MESSAGE_TIMEOUT", field: func(c *config) any { return &c.service.FirstMessageTimeout }, off: "off",
		usage: "end a stream whose caller sent no config this long after it opened (`OUT_OF_RANGE`, `FIRST_MESSAGE_TIMEOUT`)"},
	{name: "caller-stall-timeout", old: "CALLER_STALL_TIMEOUT", field: func(c *config) any { return &c.service.CallerStallTimeout }, off: "off",
		usage: "end a stream whose caller accepts no message this long while responses wait for it (`RESOURCE_EXHAUSTED`, `CALLER_STALLED`); its SLNG session is closed and nothing counts against SLNG"},
	{name: "stream-buffer-bytes", old: "STREAM_BUFFER_BYTES", field: func(c *config) any { return &c.service.StreamBufferBytes },
		usage: "responses (audio) that may wait for one caller that reads more slowly than SLNG speaks (3 MiB: over 60 s of 24 kHz audio); beyond, the stream stops reading SLNG until the caller catches up"},
	{name: "total-buffer-bytes", old: "TOTAL_BUFFER_BYTES", field: func(c *config) any { return &c.service.BufferBytes }, off: "no limit",
		usage: "the same across every stream of the gateway (256 MiB)"},
	{name: "transcribe-replay-bytes", old: "TRANSCRIBE_REPLAY_BYTES", field: func(c *config) any { return &c.service.TranscribeReplayBytes }, off: "no reconnecting",
		usage: "audio kept after the last final, replayed to a new upstream session when the old one fails"},
	{name: "max-upstream-session-age", old: "MAX_UPSTREAM_SESSION_AGE", field: func(c *config) any { return &c.service.MaxUpstreamSessionAge }, off: "off",
		usage: "move a stream to a new upstream session past this age, before SLNG's 30-minute limit: Transcribe at the first final, Synthesize between turns"},
	{name: "turn-timeout", old: "TURN_TIMEOUT", field: func(c *config) any { return &c.service.TurnTimeout }, off: "off",
		usage: "end a Synthesize turn that makes no progress this long after its flush with `turn_failed`, and speak the turns behind it on a new upstream session"},
	{name: "clear-timeout", old: "CLEAR_TIMEOUT", field: func(c *config) any { return &c.service.ClearTimeout }, off: "wait for `--turn-timeout`",
		usage: "wait this long for SLNG to answer a Synthesize `clear`, then send the caller `cleared` anyway and move to a new upstream session"},
	{name: "finalize-timeout", old: "FINALIZE_TIMEOUT", field: func(c *config) any { return &c.service.FinalizeTimeout }, off: "off",
		usage: "wait this long for the final that answers a Transcribe `finalize`, then replay the audio no final covers to a new upstream session once, then warn the caller (`finalize_timeout`)"},
	{name: "shutdown-delay", old: "SHUTDOWN_DELAY", field: func(c *config) any { return &c.serve.shutdownDelay }, off: "none",
		usage: "on SIGTERM, report not-ready this long before draining"},
	{name: "shutdown-timeout", old: "SHUTDOWN_TIMEOUT", field: func(c *config) any { return &c.service.DrainGrace },
		usage: "on SIGTERM, how long streams may take to finish before they are cut"},
	{name: "allow-caller-key", old: "ALLOW_CALLER_KEY", field: func(c *config) any { return &c.service.AllowCallerKey },
		usage: "accept a caller's own SLNG key in `x-slng-api-key` request metadata; otherwise such a request is `INVALID_ARGUMENT`"},
	{name: "pool-warm", old: "POOL_WARM", field: func(c *config) any { return notBool{&c.pool.DisableWarm} },
		usage: "keep warm standby SLNG sessions and hand clean ones back for reuse"},
	{name: "pool-max-sessions", old: "POOL_MAX_SESSIONS", field: func(c *config) any { return &c.pool.MaxSessions },
		usage: "SLNG sessions at most (in use, standby, dialling); SLNG limits connections per key"},
	{name: "pool-max-idle", old: "POOL_MAX_IDLE", field: func(c *config) any { return &c.pool.MaxIdle },
		usage: "standby sessions at most"},
	{name: "pool-max-idle-per-config", old: "POOL_MAX_IDLE_PER_CONFIG", field: func(c *config) any { return &c.pool.MaxIdlePerKey },
		usage: "standby sessions at most per configuration"},
	{name: "pool-max-idle-age", old: "POOL_MAX_IDLE_AGE", field: func(c *config) any { return &c.pool.MaxIdleAge },
		usage: "retire standbys idle this long (below SLNG's idle timeout, about 30 s)"},
	{name: "pool-recent-ttl", old: "POOL_RECENT_TTL", field: func(c *config) any { return &c.pool.RecentTTL }, off: "off",
		usage: "keep one standby for each configuration used this recently"},
	{name: "pool-acquire-timeout", old: "POOL_ACQUIRE_TIMEOUT", field: func(c *config) any { return &c.pool.AcquireTimeout },
		usage: "at the session cap, wait this long, then `RESOURCE_EXHAUSTED`"},
	{name: "pool-checkout-ping-timeout", old: "POOL_CHECKOUT_PING_TIMEOUT", field: func(c *config) any { return &c.pool.CheckoutPingTimeout }, off: "standbys lent unproven",
		usage: "a standby not heard from in the last second is lent at once and proves SLNG is there beside its first message (a ping right after it, no wait); without a pong or any frame within this long, the stream replays the message on a new session"},
	{name: "prewarm-tts", old: "PREWARM_TTS", field: func(c *config) any { return protoList[*speechv1.SynthesisConfig]{&c.prewarmTTS} },
		usage: "`SynthesisConfig` JSON, or an array of them, kept warm from the start"},
	{name: "prewarm-stt", old: "PREWARM_STT", field: func(c *config) any { return protoList[*speechv1.RecognitionConfig]{&c.prewarmSTT} },
		usage: "`RecognitionConfig` JSON, or an array of them, kept warm from the start"},
	{name: "dial-attempts", old: "DIAL_ATTEMPTS", field: func(c *config) any { return &c.pool.DialAttempts },
		usage: "dials per session for retryable failures, 100 ms doubling to 2 s with jitter, within the caller's deadline"},
	{name: "dial-rate", old: "DIAL_RATE", field: func(c *config) any { return &c.pool.DialRate }, off: "no limit",
		usage: "SLNG dials per second at most, of every kind, with bursts of twice as many: a guard against hammering SLNG that streams should never meet; a stream waits up to `--pool-acquire-timeout` for one, then `RESOURCE_EXHAUSTED`"},
	{name: "pool-background-dial-rate", old: "POOL_BACKGROUND_DIAL_RATE", field: func(c *config) any { return &c.pool.BackgroundDialRate }, off: "no limit",
		usage: "dials per second at most for standby and prewarm sessions, which no stream waits for, with bursts of twice as many; they also leave half of `--dial-rate`'s burst to streams"},
	{name: "breaker-failures", old: "BREAKER_FAILURES", field: func(c *config) any { return &c.pool.BreakerFailures },
		usage: "consecutive failures that say SLNG is unwell (dial failures, 5xx, provider errors, abnormal closes) that open a model's breaker"},
	{name: "breaker-open-timeout", old: "BREAKER_OPEN_TIMEOUT", field: func(c *config) any { return &c.pool.BreakerOpenTimeout },
		usage: "how long an open breaker answers `UNAVAILABLE` before one probe goes through"},
	{name: "log-level", old: "LOG_LEVEL", field: func(c *config) any { return &c.serve.logLevel },
		usage: "`debug`, `info`, `warn` or `error`"},
	{name: "log-format", old: "LOG_FORMAT", field: func(c *config) any { return &c.serve.logFormat }, def: "`json`; `console` with `--dev`",
		usage: "`json` or `console`"},
	{name: "caller-identity", old: "CALLER_IDENTITY", field: func(c *config) any { return &c.callers.Identity },
		usage: "where a stream's caller id comes from, the first source that has one winning: `xfcc` (Envoy/Istio `x-forwarded-client-cert` URI SAN, the SPIFFE id; `xfcc:By=SPIFFE-ID` takes it only from a proxy of that identity, `*` matching any run), `l5d` (Linkerd `l5d-client-id`), `tls` (the SPIFFE id, else the first DNS name, of the client certificate the gateway verified; needs `--tls-client-ca-file`), `metadata[:KEY]` (default `x-caller-id`), `peer` (the address); mesh headers are to be trusted only behind the mesh's sidecar ([operations](docs/operations.md#callers-quotas-and-the-fleet))"},
	{name: "trust-asserted-caller-identity", old: "TRUST_ASSERTED_CALLER_IDENTITY", field: func(c *config) any { return &c.callers.TrustAssertedIdentity },
		usage: "with `--access-policy` or per-caller quotas, accept a `metadata` identity source, which any caller can set to any id; without it the gateway refuses to start with that combination"},
	{name: "access-policy", old: "ACCESS_POLICY", field: func(c *config) any { return &c.callers.PolicyFile },
		usage: "YAML or JSON file of the callers allowed per RPC and model pattern, and their quotas; re-read when it changes; empty allows every caller everything"},
	{name: "caller-max-streams", old: "CALLER_MAX_STREAMS", field: func(c *config) any { return &c.callers.Defaults.MaxStreams }, off: "no limit",
		usage: "concurrent streams per caller, across the replicas with `--redis-url`; the policy may override it per caller"},
	{name: "caller-characters-per-minute", old: "CALLER_CHARACTERS_PER_MINUTE", field: func(c *config) any { return &c.callers.Defaults.CharactersPerMinute }, off: "no limit",
		usage: "characters a caller may synthesize per minute"},
	{name: "caller-audio-seconds-per-minute", old: "CALLER_AUDIO_SECONDS_PER_MINUTE", field: func(c *config) any { return &c.callers.Defaults.AudioSecondsPerMinute }, off: "no limit",
		usage: "audio seconds (synthesized plus transcribed) per minute after which a caller's new streams wait for the next minute"},
	{name: "caller-metric-labels", old: "CALLER_METRIC_LABELS", field: func(c *config) any { return &c.callers.MetricLabels },
		usage: "callers with a usage metric label of their own besides those the policy names; the others count as `other`"},
	{name: "redis-url", old: "REDIS_URL", field: func(c *config) any { return &c.fleet.redis.URL },
		usage: "the Redis that the replicas share for the upstream session budget and the caller quotas (6.2 or later): `redis://[user:password@]host:port/db` (`rediss://` for TLS); with `--redis-mode sentinel` the sentinels, `redis://[user:password@]sentinel:port/db?master_name=NAME&addr=sentinel2:port`; with `cluster` seed nodes, `redis://host:port?addr=host2:port`. Empty keeps every limit per process. While Redis does not answer the gateway starts and serves at its share of each limit; it refuses to start when Redis answers but refuses it (password, version)"},
	{name: "redis-mode", old: "REDIS_MODE", field: func(c *config) any { return &c.fleet.redis.Mode },
		usage: "`single`, `sentinel` or `cluster`"},
	{name: "redis-password-file", old: "REDIS_PASSWORD_FILE", field: func(c *config) any { return &c.fleet.passwordFile },
		usage: "file holding the Redis password (a mounted Secret), in place of one in the URL; with Sentinel, the primary's (the sentinels' goes in the URL)"},
	{name: "redis-timeout", old: "REDIS_TIMEOUT", field: func(c *config) any { return &c.fleet.opts.OpTimeout },
		usage: "bound on every Redis command; slower means fallback"},
	{name: "redis-start-budget", old: "REDIS_START_BUDGET", field: func(c *config) any { return &c.fleet.opts.StartBudget },
		usage: "bound on each Redis check when a stream starts; past it the replica's share decides that check (counted in `speech_gateway_fleet_redis_slow_total`) and the limits stay shared"},
	{name: "fleet-fallback-replicas", old: "FLEET_FALLBACK_REPLICAS", field: func(c *config) any { return &c.fleet.opts.FallbackReplicas },
		usage: "the replicas each limit is divided by while Redis has not answered since start-up"},
	{name: "fleet-lease-ttl", old: "FLEET_LEASE_TTL", field: func(c *config) any { return &c.fleet.opts.LeaseTTL },
		usage: "how long a replica's leases outlive its last heartbeat (every third of it): a crashed replica's sessions and streams are free within it; at least 300ms"},
	{name: "upstream-session-budget", old: "UPSTREAM_SESSION_BUDGET", field: func(c *config) any { return &c.fleet.sessionBudget }, off: "no limit",
		usage: "SLNG sessions at most per SLNG key, standbys included, across every replica sharing `--redis-url` (per process without it); streams wait `--pool-acquire-timeout` for one, then `RESOURCE_EXHAUSTED` / `UPSTREAM_BUDGET_EXHAUSTED`"},
}
