package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/service"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// run starts the gateway and blocks until ctx is cancelled (SIGTERM), then
// shuts down gracefully. ready, when not nil, receives the bound addresses
// once the gateway serves (for tests).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	return runWith(ctx, args, getenv, stderr, nil)
}

// addrs are the addresses the gateway listens on; admin and debug are ""
// when off.
type addrs struct {
	grpc, admin, debug string
}

func runWith(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready chan<- addrs) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	info := buildInfo()
	log.Info("starting", versionFields(info)...)

	var tracer trace.TracerProvider // nil: no spans
	var serverOpts []grpc.ServerOption
	tp, err := setupTracing(ctx, getenv)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	if tp != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = tp.Shutdown(sctx)
		}()
		tracer = tp
		// Spans per RPC, with no event per message: audio streams would
		// make thousands.
		serverOpts = append(serverOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp))))
		log.Info("tracing to OpenTelemetry")
	}

	if cfg.dev {
		sim, err := startSimulator(cfg, log)
		if err != nil {
			return err
		}
		defer func() { _ = sim.Close() }()
	}

	routes := slngclient.RoutesBridge
	if cfg.routes == "direct" {
		routes = slngclient.RoutesDirect
	}
	client, err := slngclient.New(slngclient.Options{
		BaseURL:           cfg.baseURL,
		WorldPart:         cfg.worldPart,
		APIKey:            cfg.apiKey,
		TokenInQuery:      cfg.tokenInQuery,
		Routes:            routes,
		RegionOverride:    cfg.regionOverride,
		WorldPartOverride: cfg.worldPartOverride,
		Logger:            log,
	})
	if err != nil {
		return fmt.Errorf("slng client: %w", err)
	}
	if cfg.legacyRegion {
		log.Warn("--slng-region (SLNG_REGION) is deprecated: use --slng-region-override (SLNG_REGION_OVERRIDE)")
	}
	// Which SLNG host the gateway talks to is the first thing to check when
	// nothing works: some regional names are reported not to resolve.
	upstreamFields := []zap.Field{zap.String("slng_host", client.Host())}
	if cfg.regionOverride != "" {
		upstreamFields = append(upstreamFields, zap.String("slng_region_override", cfg.regionOverride))
	}
	if cfg.worldPartOverride != "" {
		upstreamFields = append(upstreamFields, zap.String("slng_world_part_override", cfg.worldPartOverride))
	}
	log.Info("slng upstream", upstreamFields...)

	reg := prom.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The fleet outlives the pool, which gives its budget back on Close.
	fl, gate, err := setupFleet(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer fl.Close()
	defer gate.Close()
	pool, err := slngpool.New(client, slngpool.Options{
		DisableWarm:         !cfg.poolWarm,
		MaxSessions:         cfg.poolMaxSessions,
		MaxIdle:             cfg.poolMaxIdle,
		MaxIdlePerKey:       cfg.poolMaxIdlePerKey,
		MaxIdleAge:          cfg.poolMaxIdleAge,
		RecentTTL:           cfg.poolRecentTTL,
		AcquireTimeout:      cfg.poolAcquireTimeout,
		CheckoutPingTimeout: cfg.poolCheckoutPing,
		DialAttempts:        cfg.dialAttempts,
		DialRate:            cfg.dialRate,
		BackgroundDialRate:  cfg.poolBackgroundRate,
		BreakerFailures:     cfg.breakerFailures,
		BreakerOpenTimeout:  cfg.breakerOpenTimeout,
		Budget:              poolBudget(fl, cfg),
		Logger:              log,
		Metrics:             slngpool.NewMetrics(reg),
	})
	if err != nil {
		return fmt.Errorf("slng pool: %w", err)
	}
	// Closed after the gRPC server has stopped (defers run last first).
	defer pool.Close()
	if cfg.keyFile != "" && cfg.keyReload > 0 {
		// A rotated Secret: new sessions use the new key; the pool drops
		// standbys of the old one; streams in flight keep their sessions.
		w := newKeyWatcher(cfg.keyFile, cfg.keyReload, cfg.apiKey, func(key string) {
			client.SetAPIKey(key)
			pool.KeyChanged()
		}, log, reg)
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run(wctx)
		}()
		defer func() { stop(); <-done }()
	}
	srv, err := service.New(service.PoolUpstream(pool), log, service.NewMetrics(reg), service.Config{
		DefaultTTSModel:       cfg.defaultTTSModel,
		DefaultVoice:          cfg.defaultVoice,
		DefaultSTTModel:       cfg.defaultSTTModel,
		ModelAllowlist:        cfg.models,
		MaxTextBytes:          cfg.maxTextBytes,
		MaxAudioChunkBytes:    cfg.maxAudioChunkBytes,
		MaxStreamDuration:     cfg.maxStreamDuration,
		FinalsTimeout:         cfg.finalsTimeout,
		MaxStreams:            cfg.maxStreams,
		AllowCallerKey:        cfg.allowCallerKey,
		TracerProvider:        tracer,
		CallerIdleTimeout:     cfg.callerIdleTimeout,
		TranscribeReplayBytes: cfg.replayBytes,
		MaxUpstreamSessionAge: cfg.maxUpstreamAge,
		TurnTimeout:           cfg.turnTimeout,
		DrainGrace:            cfg.shutdownTimeout,
		Callers:               gate,
	})
	if err != nil {
		return err
	}
	profiles, err := srv.Profiles(cfg.prewarmTTS, cfg.prewarmSTT)
	if err != nil {
		return err
	}
	for _, pr := range profiles {
		if err := pool.Prewarm(pr); err != nil {
			return err
		}
	}

	grpcMetrics := prometheus.NewServerMetrics(prometheus.WithServerHandlingTimeHistogram())
	reg.MustRegister(grpcMetrics)
	gs := newGRPCServer(cfg, log, grpcMetrics, gate, serverOpts...)
	srv.Register(gs)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(gs, healthSrv)
	reflection.Register(gs)
	grpcMetrics.InitializeMetrics(gs)
	services := []string{"", speechv1.TextToSpeechService_ServiceDesc.ServiceName, speechv1.SpeechToTextService_ServiceDesc.ServiceName}
	for _, name := range services {
		healthSrv.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.listen, err)
	}
	var serving atomic.Bool
	serving.Store(true)
	var admin *http.Server
	var adminLis net.Listener
	if cfg.adminListen != "" {
		adminLis, err = net.Listen("tcp", cfg.adminListen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen %s: %w", cfg.adminListen, err)
		}
		admin = &http.Server{Handler: withReadyDetail(adminHandler(reg, &serving, pool.Rejected), fleetDetail(fl)), ReadHeaderTimeout: 5 * time.Second}
	}
	registerOpsMetrics(reg, info, cfg.maxStreams, &serving)
	debugSrv, err := startDebug(cfg, log)
	if err != nil {
		lis.Close()
		if adminLis != nil {
			adminLis.Close()
		}
		return fmt.Errorf("listen %s: %w", cfg.debugListen, err)
	}
	defer debugSrv.close()

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()
	if admin != nil {
		go func() {
			if err := admin.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin server: %w", err)
				return
			}
			errc <- nil
		}()
	}
	a := addrs{grpc: lis.Addr().String(), debug: debugSrv.address()}
	if adminLis != nil {
		a.admin = adminLis.Addr().String()
	}
	log.Info("serving", zap.String("grpc", a.grpc), zap.String("admin", a.admin), zap.String("debug", a.debug),
		zap.Bool("dev", cfg.dev), zap.String("slng_routes", cfg.routes), zap.String("version", info.Version))
	if ready != nil {
		ready <- a
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		log.Error("server failed", zap.Error(serveErr))
	}

	// Shutdown: not ready first, so that load balancers and the mesh stop
	// sending new streams; then ask streams to finish; then wait, bounded.
	log.Info("shutting down", zap.Int("active_streams", srv.ActiveStreams()))
	serving.Store(false)
	for _, name := range services {
		healthSrv.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	if cfg.shutdownDelay > 0 {
		sleep(cfg.shutdownDelay)
	}
	srv.Drain()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(cfg.shutdownTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		log.Warn("shutdown timeout: cutting remaining streams", zap.Int("active_streams", srv.ActiveStreams()))
		gs.Stop()
		<-stopped
	}
	srv.Wait()
	if admin != nil {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = admin.Shutdown(shutdownCtx)
		cancel()
	}
	log.Info("stopped")
	return serveErr
}

func sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// newGRPCServer builds the gRPC server with its interceptors and transport
// limits. Interceptor order, outermost first: metrics, session id and caller
// id (streams), logging, recovery
// (innermost, so that a panic becomes INTERNAL before it is logged and
// counted).
func newGRPCServer(cfg *config, log *zap.Logger, metrics *prometheus.ServerMetrics, callers service.Callers, extra ...grpc.ServerOption) *grpc.Server {
	recoverFn := func(ctx context.Context, p any) error {
		log.Error("panic in handler", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	}
	// The access-log line carries the stream's session_id (and trace_id,
	// span_id with tracing on), under the same names as the service's lines.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(service.LogFields)}
	maxStream := cfg.maxStreamDuration
	if maxStream <= 0 {
		maxStream = 24 * time.Hour
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			metrics.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(service.InterceptorLogger(log.Named("grpc")), logOpts...),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(recoverFn)),
		),
		grpc.ChainStreamInterceptor(
			metrics.StreamServerInterceptor(),
			service.StreamInterceptor(callers),
			logging.StreamServerInterceptor(service.InterceptorLogger(log.Named("grpc")), logOpts...),
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(recoverFn)),
		),
		// Mesh sidecars and clients ping idle connections; accept pings
		// every 10 s or slower, even with no stream open, and ping idle
		// clients ourselves to find dead peers behind NATs.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
			// Rotating connections lets the mesh rebalance long-lived
			// clients; the grace period lets the longest stream finish.
			MaxConnectionAge:      30 * time.Minute,
			MaxConnectionAgeGrace: maxStream,
		}),
		grpc.MaxConcurrentStreams(uint32(cfg.maxStreamsPerConn)),
		// Larger than any valid request, so that oversized text and audio
		// get a BadRequest naming the field rather than a transport error.
		grpc.MaxRecvMsgSize(max(cfg.maxTextBytes, cfg.maxAudioChunkBytes) + 64<<10),
		grpc.MaxSendMsgSize(4 << 20),
		grpc.ForceServerCodecV2(service.Codec()),
	}
	if cfg.streamWindow > 0 {
		// Fixed windows bound what callers can have in flight per stream and
		// per connection, and turn off grpc-go's bandwidth-delay estimation,
		// whose pings cost a write for every few audio chunks received. A
		// real-time stream needs 32 KB/s; the default 256 KiB per stream
		// carries that over any round trip shorter than 8 s.
		opts = append(opts, grpc.InitialWindowSize(int32(cfg.streamWindow)), grpc.InitialConnWindowSize(int32(cfg.connWindow)))
	}
	return grpc.NewServer(append(opts, extra...)...)
}

// adminHandler serves /metrics, /healthz (the process is alive) and /readyz
// (serving and not draining), and nothing else: profiles have their own
// listener (debug.go). /readyz also lists, after its "ok", the prewarm
// configurations that SLNG refused (rejected may be nil): they need a fix
// in the configuration, but leave the gateway ready.
func adminHandler(reg *prom.Registry, serving *atomic.Bool, rejected func() []slngpool.Rejection) http.Handler {
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
		if rejected != nil {
			for _, r := range rejected() {
				_, _ = io.WriteString(w, "prewarm configuration refused by SLNG, not kept warm: "+r.String()+"\n")
			}
		}
	})
	return mux
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

// startSimulator starts the embedded SLNG simulator for --dev and points the
// config at it, with a random key so that the auth path is exercised too.
func startSimulator(cfg *config, log *zap.Logger) (*slngsim.Server, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	key := "dev_" + hex.EncodeToString(b[:])
	profile, err := slngsim.ProfileFunc(cfg.devProfile)
	if err != nil {
		return nil, fmt.Errorf("--dev-profile: %w", err)
	}
	sim, err := slngsim.Start(slngsim.Options{
		Addr:       "127.0.0.1:0",
		APIKey:     key,
		Realtime:   cfg.devRealtime,
		ProfileFor: profile,
		Logger:     log.Named("slngsim"),
	})
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	cfg.baseURL = sim.URL()
	cfg.apiKey = key
	log.Info("dev mode: using the embedded SLNG simulator", zap.String("url", sim.URL()), zap.String("profile", cfg.devProfile))
	return sim, nil
}
