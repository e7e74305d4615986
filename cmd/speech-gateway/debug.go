package main

import (
	"net"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/pprofserve"
)

// serveDebug serves Go's /debug/pprof on lis (--debug-listen), apart from
// the admin port that the Kubernetes Service exposes: profiles show memory
// contents and cost CPU, so they are for an operator on the pod (kubectl
// port-forward), never for the cluster. The returned stop cuts profiles in
// progress, closes lis and waits for the server to exit.
func serveDebug(lis net.Listener, log *zap.Logger) (stop func()) {
	// A failing debug listener is no reason to stop serving speech.
	return pprofserve.Serve(lis, func(err error) { log.Warn("debug server failed", zap.Error(err)) })
}
