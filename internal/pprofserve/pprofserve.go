// Package pprofserve serves Go's /debug/pprof on a listener of its own,
// for the programs that can be profiled (speech-gateway's --debug-listen,
// speechfloor's, for speechbench's --profile): one handler and one server
// lifecycle for both.
package pprofserve

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Serve serves Handler on lis until the returned stop is called, which
// cuts profiles in progress, closes lis and waits for the server to exit.
// failed, when not nil, receives the error of a server that stopped by
// itself.
func Serve(lis net.Listener, failed func(error)) (stop func()) {
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) && failed != nil {
			failed(err)
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}

// Handler serves the pprof index (with every named profile: heap, allocs,
// goroutine, ...), CPU profiles, execution traces and symbols.
// /debug/pprof/cmdline is left out: the command line is nobody's business.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}
