package main

import (
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/speech-gateway/speech-gateway/internal/buildinfo"
)

// registerOpsMetrics registers the metrics that describe the process rather
// than its streams, which the alerts in deploy/monitoring need:
//
//   - speech_gateway_build_info: which build runs;
//   - speech_gateway_streams_limit: --max-streams, so that an alert can
//     compare speech_gateway_streams_active with it without restating it;
//   - speech_gateway_draining: 1 from SIGTERM on, while /readyz and the
//     gRPC health service say not ready.
func registerOpsMetrics(reg prom.Registerer, info buildinfo.Info, maxStreams int, serving *atomic.Bool) {
	limit := prom.NewGauge(prom.GaugeOpts{
		Name: "speech_gateway_streams_limit",
		Help: "Concurrent streams the gateway admits (--max-streams); beyond it streams fail with GATEWAY_OVERLOADED. 0 means no limit.",
	})
	limit.Set(float64(max(maxStreams, 0)))
	draining := prom.NewGaugeFunc(prom.GaugeOpts{
		Name: "speech_gateway_draining",
		Help: "1 while the gateway shuts down: not ready, finishing its streams; 0 while it serves.",
	}, func() float64 {
		if serving.Load() {
			return 0
		}
		return 1
	})
	reg.MustRegister(newBuildInfoMetric(info), limit, draining)
}
