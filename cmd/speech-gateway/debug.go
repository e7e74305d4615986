package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
)

// serveDebug serves Go's /debug/pprof on lis (--debug-listen), apart from
// the admin port that the Kubernetes Service exposes: profiles show memory
// contents and cost CPU, so they are for an operator on the pod (kubectl
// port-forward), never for the cluster. The returned stop cuts profiles in
// progress, closes lis and waits for the server to exit.
func serveDebug(lis net.Listener, log *zap.Logger) (stop func()) {
	srv := &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A failing debug listener is no reason to stop serving speech.
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug server failed", zap.Error(err))
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}

// debugHandler serves the pprof index (with every named profile: heap,
// allocs, goroutine, ...), CPU profiles, execution traces and symbols.
// /debug/pprof/cmdline is left out: the command line is nobody's business.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}
