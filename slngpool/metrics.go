package slngpool

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Metrics are the pool's Prometheus metrics. Labels carry kinds, models,
// regions and bounded reason or code names; never keys or their
// fingerprints.
type Metrics struct {
	idle     *prometheus.GaugeVec
	inUse    *prometheus.GaugeVec
	acquires *prometheus.CounterVec
	discards *prometheus.CounterVec
	dial     *prometheus.HistogramVec
	ready    *prometheus.HistogramVec
	breaker  *prometheus.GaugeVec
	errors   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg; a nil reg
// leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &Metrics{
		idle: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_pool_idle_sessions",
			Help: "Warm standby SLNG sessions (connected, ready, unused), by kind.",
		}, []string{"kind"}),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_upstream_sessions_active",
			Help: "SLNG sessions serving a stream, by kind.",
		}, []string{"kind"}),
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_pool_acquires_total",
			Help: "Session acquisitions by kind and result: hit (a warm session), miss (dialled), " +
				"circuit_open, exhausted (no capacity in time), error (the dial failed).",
		}, []string{"kind", "result"}),
		discards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_pool_discards_total",
			Help: "Standby sessions dropped, by kind and reason: spoiled (SLNG sent something or closed while idle), " +
				"aged, ping (failed the checkout ping), evicted (room for another configuration), full, closed (pool closed).",
		}, []string{"kind", "reason"}),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speech_gateway_upstream_dial_seconds",
			Help:    "Time to open one SLNG session (handshake, init, ready), by kind and result.",
			Buckets: latency,
		}, []string{"kind", "result"}),
		ready: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speech_gateway_upstream_ready_seconds",
			Help:    "Time from init to ready on new SLNG sessions, by kind.",
			Buckets: latency,
		}, []string{"kind"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_upstream_breaker_state",
			Help: "Circuit breaker state per model and region: 0 closed, 1 half-open, 2 open.",
		}, []string{"model", "region"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_upstream_session_errors_total",
			Help: "SLNG session failures (dials and sessions), by kind and code: SLNG's error code, http_NNN, close_NNNN, transport, timeout or protocol.",
		}, []string{"kind", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.idle, m.inUse, m.acquires, m.discards, m.dial, m.ready, m.breaker, m.errors)
	}
	return m
}

func (m *Metrics) breakerState(model, region string, s gobreaker.State) {
	v := 0.0
	switch s {
	case gobreaker.StateHalfOpen:
		v = 1
	case gobreaker.StateOpen:
		v = 2
	}
	m.breaker.WithLabelValues(model, region).Set(v)
}

func (m *Metrics) forgetBreaker(model, region string) {
	m.breaker.DeleteLabelValues(model, region)
}

func (m *Metrics) observeDial(kind string, start time.Time, st slngclient.Stats, err error) {
	if err != nil {
		m.dial.WithLabelValues(kind, "error").Observe(time.Since(start).Seconds())
		m.upstreamError(kind, err)
		return
	}
	m.dial.WithLabelValues(kind, "ok").Observe(time.Since(start).Seconds())
	m.ready.WithLabelValues(kind).Observe(st.Ready.Seconds())
}

// knownCodes bounds the code label to SLNG's documented error codes.
var knownCodes = map[string]bool{
	"auth_error": true, "config_error": true, "invalid_request": true, "payload_too_large": true,
	"rate_limit": true, "rate_limit_exceeded": true, "provider_error": true,
	"backend_connection_failed": true, "backend_error": true, "not_ready": true, "backpressure": true,
	"idle_timeout_exceeded": true, "max_connection_duration_exceeded": true,
	"stt_metering_unavailable": true, "translation_error": true, "pronunciation_not_found": true,
}

func (m *Metrics) upstreamError(kind string, err error) {
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return
	}
	code := "other"
	switch {
	case ue.Code != "" && knownCodes[ue.Code]:
		code = ue.Code
	case ue.Code != "":
	case ue.Kind == slngclient.KindHandshake && ue.HTTPStatus >= 100 && ue.HTTPStatus < 600:
		code = "http_" + strconv.Itoa(ue.HTTPStatus)
	case ue.Kind == slngclient.KindClose && ue.CloseCode >= 1000 && ue.CloseCode < 5000:
		code = "close_" + strconv.Itoa(ue.CloseCode)
	case ue.Kind == slngclient.KindTransport:
		code = "transport"
	case ue.Kind == slngclient.KindTimeout:
		code = "timeout"
	case ue.Kind == slngclient.KindProtocol:
		code = "protocol"
	}
	m.errors.WithLabelValues(kind, code).Inc()
}
