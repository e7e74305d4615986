package fleet

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a Fleet's Prometheus metrics. Labels carry semaphore names
// and Redis operations, never keys or callers.
type Metrics struct {
	mode         *prometheus.GaugeVec
	fallbacks    prometheus.Counter
	replicas     prometheus.Gauge
	redisErrors  *prometheus.CounterVec
	redisSeconds *prometheus.HistogramVec
	slow         *prometheus.CounterVec
	leases       *prometheus.GaugeVec
	refused      *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg; a nil reg
// leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_fleet_mode",
			Help: "1 for the mode the fleet limits are in: local (no Redis), shared (Redis), fallback (Redis unreachable: local share).",
		}, []string{"mode"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "speech_gateway_fleet_fallbacks_total",
			Help: "Times Redis became unreachable and the fleet limits fell back to this replica's share.",
		}),
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "speech_gateway_fleet_replicas",
			Help: "Replicas last seen alive in Redis; a fallback divides each limit by it.",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_fleet_redis_errors_total",
			Help: "Redis commands that failed or timed out, by operation (connect, acquire, release, count, read, heartbeat).",
		}, []string{"op"}),
		redisSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speech_gateway_fleet_redis_seconds",
			Help:    "Redis round trips, by operation (acquire, release, count, read, heartbeat).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"op"}),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_fleet_redis_slow_total",
			Help: "Redis checks at stream start (acquire, read) that took longer than the start budget (--redis-start-budget), which the local share decided instead.",
		}, []string{"op"}),
		leases: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speech_gateway_fleet_leases",
			Help: "Leases this replica holds, by semaphore (upstream: SLNG sessions; caller_streams).",
		}, []string{"semaphore"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_fleet_refused_total",
			Help: "Leases refused because the limit was reached within the wait, by semaphore.",
		}, []string{"semaphore"}),
	}
	for _, mode := range []Mode{ModeLocal, ModeShared, ModeFallback} {
		m.mode.WithLabelValues(string(mode))
	}
	for _, op := range []string{"acquire", "read"} {
		m.slow.WithLabelValues(op)
	}
	m.replicas.Set(1)
	if reg != nil {
		reg.MustRegister(m.mode, m.fallbacks, m.replicas, m.redisErrors, m.redisSeconds, m.slow, m.leases, m.refused)
	}
	return m
}

func (m *Metrics) setMode(mode Mode) {
	for _, each := range []Mode{ModeLocal, ModeShared, ModeFallback} {
		v := 0.0
		if each == mode {
			v = 1
		}
		m.mode.WithLabelValues(string(each)).Set(v)
	}
}
