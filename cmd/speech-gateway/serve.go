package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// listeners are what a gateway serves on: gRPC, and the admin and debug
// HTTP handlers when not nil. Real ones in run, in-memory ones in tests.
type listeners struct {
	grpc, admin, debug net.Listener
}

// close closes the listeners that are open, for a gateway that will not
// serve them.
func (l listeners) close() {
	for _, lis := range []net.Listener{l.grpc, l.admin, l.debug} {
		if lis != nil {
			lis.Close()
		}
	}
}

// addr is lis's address, "" for none.
func addr(lis net.Listener) string {
	if lis == nil {
		return ""
	}
	return lis.Addr().String()
}

// serve serves the gateway on lis until ctx ends (SIGTERM) or a server
// fails, then shuts down gracefully: not ready first, so that load
// balancers and the mesh stop sending new streams; then it asks streams
// to finish and waits for them, bounded by --shutdown-timeout. It closes
// the listeners and returns once every server has stopped; the error is
// the failure of a server, nil after ctx ended.
func (g *gateway) serve(ctx context.Context, lis listeners) error {
	errc := make(chan error, 2)
	running := 1
	go func() { errc <- g.grpc.Serve(lis.grpc) }()
	var admin *http.Server
	if lis.admin != nil {
		running++
		admin = &http.Server{Handler: g.admin, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.Serve(lis.admin); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin server: %w", err)
				return
			}
			errc <- nil
		}()
	}
	if lis.debug != nil {
		stop := serveDebug(lis.debug, g.log)
		defer stop()
	}
	g.log.Info("serving", zap.String("grpc", addr(lis.grpc)), zap.String("admin", addr(lis.admin)), zap.String("debug", addr(lis.debug)), zap.String("tls", g.tls),
		zap.Bool("dev", g.cfg.serve.dev), zap.Stringer("slng_routes", g.cfg.client.Routes), zap.String("version", g.info.Version))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		running--
		g.log.Error("server failed", zap.Error(serveErr))
	}

	g.log.Info("shutting down", zap.Int("active_streams", g.srv.ActiveStreams()))
	g.serving.Store(false)
	for _, name := range healthServices {
		g.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	if g.cfg.serve.shutdownDelay > 0 {
		sleep(g.cfg.serve.shutdownDelay)
	}
	g.srv.Drain()
	stopped := make(chan struct{})
	go func() {
		g.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(g.cfg.service.DrainGrace)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		g.log.Warn("shutdown timeout: cutting remaining streams", zap.Int("active_streams", g.srv.ActiveStreams()))
		g.grpc.Stop()
		<-stopped
	}
	g.srv.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if admin != nil {
		_ = admin.Shutdown(shutdownCtx)
	}
	for ; running > 0; running-- {
		<-errc
	}
	g.log.Info("stopped")
	return serveErr
}

func sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}
