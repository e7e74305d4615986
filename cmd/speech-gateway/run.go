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
	if cfg.serve.debugListen != "" && cfg.serve.memProfileRate != runtime.MemProfileRate {
		// Once, before the gateway allocates anything worth profiling;
		// negative: no memory profile.
		runtime.MemProfileRate = max(cfg.serve.memProfileRate, 0)
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
	var err error
	open := func(addr string, optional bool) net.Listener {
		if err != nil || (optional && addr == "") {
			return nil
		}
		l, lerr := net.Listen("tcp", addr)
		if lerr != nil {
			err = fmt.Errorf("listen %s: %w", addr, lerr)
		}
		return l
	}
	lis.grpc = open(cfg.serve.listen, false)
	lis.admin = open(cfg.serve.adminListen, true)
	lis.debug = open(cfg.serve.debugListen, true)
	if err != nil {
		lis.close()
		return listeners{}, err
	}
	return lis, nil
}

// newLogger is the logger --log-level and --log-format ask for, writing
// to stderr.
func newLogger(cfg *config, stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.serve.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var enc zapcore.Encoder
	switch cfg.serve.logFormat {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("--log-format must be json or console, not %q", cfg.serve.logFormat)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), level)
	return zap.New(core, zap.AddCaller()), nil
}
