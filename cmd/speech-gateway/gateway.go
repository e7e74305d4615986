package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/buildinfo"
	"github.com/speech-gateway/speech-gateway/internal/rpcmetrics"
	"github.com/speech-gateway/speech-gateway/service"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// gateway is the speech gateway with everything wired and nothing served
// yet: the gRPC server, the admin handler, the SLNG client and pool (and
// the simulator in --dev), the key reload and the fleet. serve serves it
// on listeners it is given; close releases what newGateway started.
type gateway struct {
	cfg  *config
	log  *zap.Logger
	info buildinfo.Info

	grpc    *grpc.Server
	health  *health.Server
	srv     *service.Server
	admin   http.Handler
	serving *atomic.Bool // false from the start of shutdown on
	tls     string       // the gRPC port's TLS: off, on or mutual

	// closers release, last first, what newGateway started.
	closers []func()
}

// healthServices are the names the gRPC health service answers for.
var healthServices = []string{"", speechv1.TextToSpeechService_ServiceDesc.ServiceName, speechv1.SpeechToTextService_ServiceDesc.ServiceName,
	speechv1.CatalogService_ServiceDesc.ServiceName}

// newGateway wires the gateway that cfg describes. ctx bounds only what
// start-up does (a first Redis round trip); the gateway runs until close.
// getenv supplies the OTEL_* variables. On error, everything started so far
// is released. The caller must close the gateway.
func newGateway(ctx context.Context, cfg *config, log *zap.Logger, getenv func(string) string) (_ *gateway, err error) {
	g := &gateway{cfg: cfg, log: log, info: buildInfo(), serving: &atomic.Bool{}, tls: "off"}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	log.Info("starting", versionFields(g.info)...)
	for _, w := range cfg.warnings {
		log.Warn(w)
	}

	var tracer trace.TracerProvider // nil: no spans
	var serverOpts []grpc.ServerOption
	tr, err := setupTracing(ctx, getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if tr != nil {
		tp := tr.provider
		g.onClose(func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = tp.Shutdown(sctx)
		})
		tracer = tp
		// Spans per RPC, with no event per message: audio streams would
		// make thousands.
		serverOpts = append(serverOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(tr.propagator))))
		log.Info("tracing to OpenTelemetry", tr.fields...)
	}

	if cfg.serve.dev {
		sim, err := startSimulator(cfg, log)
		if err != nil {
			return nil, err
		}
		g.onClose(func() { _ = sim.Close() })
	}
	client, err := newSLNGClient(cfg, log)
	if err != nil {
		return nil, err
	}

	reg := prom.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The fleet outlives the pool, which gives its budget back on Close.
	fl, gate, err := setupFleet(ctx, cfg, log, reg)
	if err != nil {
		return nil, err
	}
	g.onClose(fl.Close)
	g.onClose(gate.Close)
	models, err := setupCatalog(cfg, log, reg)
	if err != nil {
		return nil, err
	}
	g.onClose(models.Close)
	if s := cfg.serve; s.tlsCertFile != "" {
		st, err := newServerTLS(s.tlsCertFile, s.tlsKeyFile, s.tlsClientCAFile, log, reg)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(st.config())))
		if s.tlsReload > 0 {
			g.onClose(st.file.Start(s.tlsReload))
		}
		g.tls = "on"
		if st.mutual() {
			g.tls = "mutual"
		}
	}
	po := cfg.pool
	po.Budget, po.Logger, po.Metrics = poolBudget(fl, cfg.fleet.sessionBudget), log, slngpool.NewMetrics(reg)
	pool, err := slngpool.New(client, po)
	if err != nil {
		return nil, fmt.Errorf("slng pool: %w", err)
	}
	// Closed after the gRPC server has stopped: serve returns only then.
	g.onClose(pool.Close)
	if s := cfg.serve; s.keyFile != "" && s.keyReload > 0 {
		// A rotated Secret: new sessions use the new key; the pool drops
		// standbys of the old one; streams in flight keep their sessions.
		g.onClose(startKeyWatcher(s.keyFile, s.keyReload, cfg.client.APIKey, func(key string) {
			client.SetAPIKey(key)
			pool.KeyChanged()
		}, log, reg))
	}
	sc := cfg.service
	sc.TracerProvider, sc.Callers, sc.Catalog, sc.Region = tracer, gate, models.Current, client.Region()
	g.srv, err = service.New(service.PoolUpstream(pool), log, service.NewMetrics(reg), sc)
	if err != nil {
		return nil, err
	}
	profiles, err := g.srv.Profiles(cfg.prewarmTTS, cfg.prewarmSTT)
	if err != nil {
		return nil, err
	}
	for _, pr := range profiles {
		if err := pool.Prewarm(pr); err != nil {
			return nil, err
		}
	}

	grpcMetrics := rpcmetrics.New()
	reg.MustRegister(grpcMetrics)
	g.grpc = newGRPCServer(cfg, log, grpcMetrics, gate, serverOpts...)
	g.srv.Register(g.grpc)
	g.health = health.NewServer()
	healthpb.RegisterHealthServer(g.grpc, g.health)
	reflection.Register(g.grpc)
	grpcMetrics.InitializeMetrics(g.grpc)
	for _, name := range healthServices {
		g.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	g.serving.Store(true)
	g.admin = adminHandler(reg, g.serving, rejectedDetail(pool.Rejected), fleetDetail(fl))
	registerOpsMetrics(reg, g.info, cfg.service.MaxStreams, g.serving)
	return g, nil
}

// onClose has close run fn, before everything registered earlier.
func (g *gateway) onClose(fn func()) { g.closers = append(g.closers, fn) }

// close releases what newGateway started, last first: the key watcher,
// the pool, the TLS files' watcher, the catalog's watcher, the callers'
// gate, the fleet, the simulator, tracing. Call it once, after serve has
// returned (or instead of serve).
func (g *gateway) close() {
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
	g.closers = nil
}

// newSLNGClient is the client for SLNG that cfg describes, and logs which
// host it talks to: the first thing to check when nothing works, since
// some regional names are reported not to resolve.
func newSLNGClient(cfg *config, log *zap.Logger) (*slngclient.Client, error) {
	opts := cfg.client
	opts.Logger = log
	client, err := slngclient.New(opts)
	if err != nil {
		return nil, fmt.Errorf("slng client: %w", err)
	}
	if cfg.legacyWorldPart != "" {
		log.Warn("--slng-world-part (" + envName("slng-world-part") + ") is deprecated: use --slng-region (" + envName("slng-region") + ")")
	}
	if r := cfg.client.Region; r != "" && cfg.client.BaseURL == "" && !slngclient.IsKnownRegion(r) {
		// Regions are added: an unknown one is used as it is.
		log.Warn("the SLNG region is not one SLNG's region page lists; if nothing connects, check it "+
			"(hosts take a prefix such as us-east, not a region id such as us-east-1)",
			zap.String("slng_region", r), zap.Strings("known_regions", slngclient.KnownRegions))
	}
	fields := []zap.Field{zap.String("slng_host", client.Host()), zap.String("slng_region", client.Region())}
	if o := cfg.client.RegionOverride; o != "" {
		fields = append(fields, zap.String("slng_region_override", o))
	}
	if o := cfg.client.WorldPartOverride; o != "" {
		fields = append(fields, zap.String("slng_world_part_override", o))
	}
	log.Info("slng upstream", fields...)
	return client, nil
}
