package main

import (
	"errors"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/buildinfo"
)

// version and revision are set at link time by the Makefile and the
// Dockerfile (-ldflags "-X main.version=... -X main.revision=..."); empty,
// they come from the build information go build stamps.
var version, revision string

// errShowVersion is what parsing returns for --version, like flag.ErrHelp
// for -h: main prints the version line and exits 0.
var errShowVersion = errors.New("version requested")

// buildInfo is this binary's version, revision and Go version.
func buildInfo() buildinfo.Info { return buildinfo.Read(version, revision) }

// versionFields are the start-up log fields that say which build runs.
func versionFields(info buildinfo.Info) []zap.Field {
	return []zap.Field{zap.String("version", info.Version), zap.String("revision", info.Revision),
		zap.String("go_version", info.GoVersion)}
}

// newBuildInfoMetric is speech_gateway_build_info, always 1, whose labels
// say which build a replica runs: dashboards join on it, and a rollout shows
// as two versions side by side.
func newBuildInfoMetric(info buildinfo.Info) prom.Collector {
	g := prom.NewGauge(prom.GaugeOpts{
		Name: "speech_gateway_build_info",
		Help: "Always 1; the labels say which build of the gateway is running.",
		ConstLabels: prom.Labels{
			"version":    info.Version,
			"revision":   info.Revision,
			"go_version": info.GoVersion,
		},
	})
	g.Set(1)
	return g
}
