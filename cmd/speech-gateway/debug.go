package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// debugServer serves Go's /debug/pprof on its own listener (--debug-listen),
// apart from the admin port that the Kubernetes Service exposes: profiles
// show memory contents and cost CPU, so they are for an operator on the
// pod (kubectl port-forward), never for the cluster.
type debugServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// startDebug starts the debug listener when cfg asks for one, or returns
// nil. It also sets runtime.MemProfileRate, once, before the gateway
// allocates anything worth profiling. The caller must close it.
func startDebug(cfg *config, log *zap.Logger) (*debugServer, error) {
	if cfg.debugListen == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", cfg.debugListen)
	if err != nil {
		return nil, err
	}
	if cfg.memProfileRate > 0 {
		runtime.MemProfileRate = cfg.memProfileRate
	}
	d := &debugServer{
		srv:  &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 5 * time.Second},
		addr: lis.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(d.done)
		// A failing debug listener is no reason to stop serving speech.
		if err := d.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug server failed", zap.Error(err))
		}
	}()
	return d, nil
}

// address is the bound address, "" for a nil server.
func (d *debugServer) address() string {
	if d == nil {
		return ""
	}
	return d.addr
}

// close stops the server, cutting profiles in progress, and waits for it;
// a nil server does nothing.
func (d *debugServer) close() {
	if d == nil {
		return
	}
	_ = d.srv.Close()
	<-d.done
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
