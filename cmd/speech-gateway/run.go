package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// run starts the gateway on the addresses cfg names and blocks until ctx
// is cancelled (SIGTERM), then shuts down gracefully (gateway.serve).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if cfg.debugListen != "" && cfg.memProfileRate > 0 {
		// Once, before the gateway allocates anything worth profiling.
		runtime.MemProfileRate = cfg.memProfileRate
	}
	g, err := newGateway(ctx, cfg, log, getenv)
	if err != nil {
		return err
	}
	defer g.close()
	lis, err := listen(cfg)
	if err != nil {
		return err
	}
	return g.serve(ctx, lis)
}

// listen opens the TCP listeners cfg names: gRPC always, admin and debug
// when their addresses are not empty. On error it closes those it opened.
func listen(cfg *config) (listeners, error) {
	var lis listeners
	for _, l := range []struct {
		addr string
		to   *net.Listener
	}{{cfg.listen, &lis.grpc}, {cfg.adminListen, &lis.admin}, {cfg.debugListen, &lis.debug}} {
		if l.addr == "" && l.to != &lis.grpc {
			continue
		}
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, open := range []net.Listener{lis.grpc, lis.admin, lis.debug} {
				if open != nil {
					open.Close()
				}
			}
			return listeners{}, fmt.Errorf("listen %s: %w", l.addr, err)
		}
		*l.to = nl
	}
	return lis, nil
}

func newLogger(cfg *config, stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var enc zapcore.Encoder
	switch cfg.logFormat {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("--log-format must be json or console, not %q", cfg.logFormat)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), level)
	return zap.New(core, zap.AddCaller()), nil
}
