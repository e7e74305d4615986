package service

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Metrics are the service's own Prometheus metrics; RPC-level metrics come
// from the go-grpc-middleware interceptors. Labels never carry keys, texts
// or ids: only RPC names, codes, reasons and model names from the allowlist
// or defaults.
type Metrics struct {
	streamsActive   *prometheus.GaugeVec
	streamsTotal    *prometheus.CounterVec
	upstreamAcquire *prometheus.HistogramVec
	upstreamErrors  *prometheus.CounterVec
	warnings        *prometheus.CounterVec
	audioBytes      *prometheus.CounterVec
	// The two audioBytes counters, looked up once: they count every chunk.
	synthesizedBytes, recognizedBytes prometheus.Counter
	firstAudio                        prometheus.Histogram
	transcriptDelay                   prometheus.Histogram
	reconnects                        *prometheus.CounterVec
	turnsFailed                       *prometheus.CounterVec
	violations                        *prometheus.CounterVec
	finalsDropped                     *prometheus.CounterVec
	finalsEstimated                   prometheus.Counter
	unknownFrames                     *prometheus.CounterVec
	keyRefused                        *prometheus.CounterVec
	// buffered counts the bytes waiting for callers in every stream's
	// outbox (Config.BufferBytes); bufferedGauge exports it.
	buffered      atomic.Int64
	bufferedGauge prometheus.GaugeFunc
	// pauses counts the times a stream stopped reading SLNG because its
	// caller was behind.
	pauses prometheus.Counter
	// unanswered counts requests SLNG did not answer in time: clear
	// (ClearTimeout) and finalize (FinalizeTimeout).
	unanswered *prometheus.CounterVec
	// partialsDropped counts partials a route sent although the caller
	// turned them off.
	partialsDropped prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg; a nil reg
// leaves them unregistered (for tests and embedding).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		streamsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_streams_active",
			Help: "Streams being served, by RPC.",
		}, []string{"rpc"}),
		streamsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_streams_total",
			Help: "Finished streams, by RPC and gRPC status code.",
		}, []string{"rpc", "code"}),
		upstreamAcquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "speech_gateway_upstream_acquire_seconds",
			Help: "Time for a stream to get its SLNG session, by kind and result: warm (a standby), " +
				"dialled, or error.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"kind", "result"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_errors_total",
			Help: "Upstream failures that ended a stream, by ErrorInfo reason.",
		}, []string{"reason"}),
		warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_warnings_total",
			Help: "Non-fatal upstream errors relayed as warnings, by kind.",
		}, []string{"kind"}),
		audioBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_audio_bytes_total",
			Help: "Audio bytes relayed: direction=synthesized (to callers) or recognized (from callers).",
		}, []string{"direction"}),
		firstAudio: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "speech_gateway_tts_first_audio_seconds",
			Help:    "Time from a turn's flush to its first audio chunk sent to the caller.",
			Buckets: []float64{.01, .025, .05, .1, .2, .35, .5, 1, 2.5},
		}),
		transcriptDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "speech_gateway_stt_finalize_seconds",
			Help:    "Time from a finalize or half-close to the final transcript that answers it.",
			Buckets: []float64{.01, .025, .05, .1, .2, .35, .5, 1, 2.5},
		}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_reconnects_total",
			Help: "Upstream sessions replaced inside a stream, by kind and reason (SLNG's error code, connection_lost, closed or rollover).",
		}, []string{"kind", "reason"}),
		turnsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_tts_turns_failed_total",
			Help: "Synthesize turns ended with turn_failed (or SynthesizeText ended) because the upstream could not finish them, by ErrorInfo reason.",
		}, []string{"reason"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_protocol_violations_total",
			Help: "Upstream frames that broke the route's own protocol and were dropped with a warning, by kind and violation " +
				"(audio_outside_turn, end_outside_turn, final_without_audio, undecodable_audio, audio_after_cleared).",
		}, []string{"kind", "violation"}),
		finalsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_stt_finals_dropped_total",
			Help: "Final transcripts not delivered, by reason (duplicate: already delivered from the session before a reconnect; " +
				"fragment: a new session's first final, from audio before a final it repeats, delivered already; no_audio: a final for audio never sent).",
		}, []string{"reason"}),
		finalsEstimated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "speech_gateway_stt_finals_estimated_total",
			Help: "Final transcripts delivered with estimated offsets, because the upstream route reported no timing.",
		}),
		keyRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_key_refused_total",
			Help: "Streams ended because SLNG refused the key, by whose key: gateway (the operator's Secret; " +
				"callers see INTERNAL) or caller (x-slng-api-key; callers see UNAUTHENTICATED).",
		}, []string{"credential"}),
		unknownFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_unknown_frames_total",
			Help: "Upstream messages of a type the gateway does not know, ignored, by kind.",
		}, []string{"kind"}),
	}
	m.bufferedGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "speech_gateway_caller_buffered_bytes",
		Help: "Bytes of responses, audio above all, waiting for callers that read more slowly than SLNG speaks, across streams.",
	}, func() float64 { return float64(m.buffered.Load()) })
	m.unanswered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "speech_gateway_upstream_unanswered_total",
		Help: "Requests SLNG did not answer in time, by kind and request: tts clear (--clear-timeout; the session was retired) " +
			"and stt finalize (--finalize-timeout; the audio went to a new session, or the caller was warned).",
	}, []string{"kind", "request"})
	m.partialsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "speech_gateway_stt_partials_dropped_total",
		Help: "Partial transcripts a route sent although the caller turned partials off, dropped.",
	})
	m.pauses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "speech_gateway_caller_pauses_total",
		Help: "Times a stream stopped reading SLNG because its caller was behind by the stream's or the gateway's buffer bound.",
	})
	// Series that alerts watch exist from the start at 0, so that
	// increase() sees their first failure.
	for _, c := range []string{"gateway", "caller"} {
		m.keyRefused.WithLabelValues(c)
	}
	for _, r := range []string{ReasonUpstreamAuthFailed, ReasonUpstreamUnavailable, ReasonUpstreamSessionExpired,
		ReasonUpstreamRateLimited, ReasonUpstreamCircuitOpen, ReasonUpstreamProtocolError, ReasonUpstreamTurnTimeout} {
		m.upstreamErrors.WithLabelValues(r)
	}
	m.synthesizedBytes = m.audioBytes.WithLabelValues("synthesized")
	m.recognizedBytes = m.audioBytes.WithLabelValues("recognized")
	if reg != nil {
		reg.MustRegister(m.streamsActive, m.streamsTotal, m.upstreamAcquire, m.upstreamErrors,
			m.warnings, m.audioBytes, m.firstAudio, m.transcriptDelay, m.reconnects,
			m.turnsFailed, m.violations, m.finalsDropped, m.finalsEstimated, m.unknownFrames, m.keyRefused,
			m.bufferedGauge, m.pauses, m.unanswered, m.partialsDropped)
	}
	return m
}

func (m *Metrics) observeAcquire(kind string, start time.Time, warm bool, err error) {
	result := "dialled"
	switch {
	case err != nil:
		result = "error"
	case warm:
		result = "warm"
	}
	m.upstreamAcquire.WithLabelValues(kind, result).Observe(time.Since(start).Seconds())
}

// reconnect counts a replaced upstream session; SLNG's codes outside
// slngclient's table count as "other", to bound the label.
func (m *Metrics) reconnect(kind, reason string) {
	switch reason {
	case "rollover", "connection_lost", "closed", "reaped", "turn_timeout", "caller_behind", "clear_unanswered", "finalize_unanswered":
	default:
		if !slngclient.KnownCode(reason) {
			reason = "other"
		}
	}
	m.reconnects.WithLabelValues(kind, reason).Inc()
}

// turnFailed counts a turn the upstream could not finish.
func (m *Metrics) turnFailed(reason string) {
	m.turnsFailed.WithLabelValues(reason).Inc()
}

// protocolViolation counts an upstream frame that broke its route's
// protocol.
func (m *Metrics) protocolViolation(kind, violation string) {
	m.violations.WithLabelValues(kind, violation).Inc()
}
