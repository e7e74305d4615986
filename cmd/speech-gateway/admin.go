package main

import (
	"io"
	"net/http"
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/speech-gateway/speech-gateway/fleet"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// adminHandler serves /metrics, /healthz (the process is alive) and /readyz
// (serving and not draining), and nothing else: profiles have their own
// listener (debug.go). A ready /readyz lists, after its "ok", the lines
// each of details returns: things an operator should see that leave the
// gateway ready (rejectedDetail, fleetDetail).
func adminHandler(reg *prom.Registry, serving *atomic.Bool, details ...func() []string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !serving.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
		for _, detail := range details {
			for _, line := range detail() {
				_, _ = io.WriteString(w, line+"\n")
			}
		}
	})
	return mux
}

// rejectedDetail lists the prewarm configurations that SLNG refused:
// they need a fix in the configuration, but leave the gateway ready.
func rejectedDetail(rejected func() []slngpool.Rejection) func() []string {
	return func() []string {
		var lines []string
		for _, r := range rejected() {
			lines = append(lines, "prewarm configuration refused by SLNG, not kept warm: "+r.String())
		}
		return lines
	}
}

// fleetDetail is the line of a fleet sharing its limits through Redis:
// whether they are shared or in fallback. A fallback leaves the gateway
// ready; the line and speech_gateway_fleet_mode say so. A local fleet has
// none.
func fleetDetail(f *fleet.Fleet) func() []string {
	return func() []string {
		if st := f.Status(); st.Mode != fleet.ModeLocal {
			return []string{st.String()}
		}
		return nil
	}
}
