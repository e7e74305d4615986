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
	dials    *prometheus.CounterVec
	deaths   *prometheus.CounterVec
	lifetime *prometheus.HistogramVec
	pauses   *prometheus.CounterVec
	routes   *prometheus.GaugeVec
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
				"aged, ping (lent, and failed its proof of life), suspect (not heard from since another standby of its configuration failed its proof), " +
				"evicted (room for another configuration), full, closed (pool closed).",
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
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_pool_dials_total",
			Help: "SLNG dials by kind, purpose (caller, rollover, standby, prewarm) and result: ok, error, " +
				"or throttled (a caller's dial that the dial rate limit refused).",
		}, []string{"kind", "purpose", "result"}),
		deaths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_pool_standby_deaths_total",
			Help: "Standby sessions that SLNG ended or spoiled before any caller used them, by kind and cause: " +
				"closed, dropped, rate_limit, auth, idle_timeout, error (another error frame), protocol, message (SLNG sent something), ping (lent, and neither a pong nor any frame came within the checkout ping timeout of its first message), other.",
		}, []string{"kind", "cause"}),
		lifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speech_gateway_pool_standby_lifetime_seconds",
			Help:    "How long standby sessions that died unused had been idle, by kind.",
			Buckets: []float64{.1, .5, 1, 2.5, 5, 7.5, 10, 15, 20, 30},
		}, []string{"kind"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_pool_background_pauses_total",
			Help: "Times SLNG turned a key away and the pool paused its own dials for that key, by reason: " +
				"rate_limit, http_429, auth, retry_after.",
		}, []string{"reason"}),
		routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_pool_configurations",
			Help: "Configurations kept warm, by kind and state: keep (standbys kept up to the idle age), " +
				"refresh (SLNG ends idle standbys: one kept, replaced within their lifetime), none (SLNG ends idle standbys " +
				"and callers are too rare to pay for one), stopped (failing; no background dials until a caller), rejected (SLNG refused it).",
		}, []string{"kind", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.idle, m.inUse, m.acquires, m.discards, m.dial, m.ready, m.breaker, m.errors,
			m.dials, m.deaths, m.lifetime, m.pauses, m.routes)
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

func (m *Metrics) observeDial(kind, purpose string, start time.Time, st slngclient.Stats, err error) {
	if err != nil {
		m.dial.WithLabelValues(kind, "error").Observe(time.Since(start).Seconds())
		m.dials.WithLabelValues(kind, purpose, "error").Inc()
		m.upstreamError(kind, err)
		return
	}
	m.dial.WithLabelValues(kind, "ok").Observe(time.Since(start).Seconds())
	m.dials.WithLabelValues(kind, purpose, "ok").Inc()
	m.ready.WithLabelValues(kind).Observe(st.Ready.Seconds())
}

func (m *Metrics) upstreamError(kind string, err error) {
	ue, ok := slngclient.AsUpstreamError(err)
	if !ok {
		return
	}
	m.errors.WithLabelValues(kind, errorCode(ue)).Inc()
}

// errorCode names an upstream failure with a bounded code: SLNG's error
// code when it is a documented one, http_NNN, close_NNNN, transport,
// timeout, protocol or other.
func errorCode(ue *slngclient.UpstreamError) string {
	switch {
	case slngclient.KnownCode(ue.Code): // a bounded set
		return ue.Code
	case ue.Code != "":
	case ue.Kind == slngclient.KindHandshake && ue.HTTPStatus >= 100 && ue.HTTPStatus < 600:
		return "http_" + strconv.Itoa(ue.HTTPStatus)
	case ue.Kind == slngclient.KindClose && ue.CloseCode >= 1000 && ue.CloseCode < 5000:
		return "close_" + strconv.Itoa(ue.CloseCode)
	case ue.Kind == slngclient.KindTransport:
		return "transport"
	case ue.Kind == slngclient.KindTimeout:
		return "timeout"
	case ue.Kind == slngclient.KindProtocol:
		return "protocol"
	}
	return "other"
}
