package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testKey   = "sk_test_secret_key_0123456789"
	callerKey = "sk_caller_own_key_987654321"
)

// secrets must never appear in a log line, a status or a metric: every
// test through the harness checks.
var secrets = []string{testKey, callerKey}

// sentinelLogger logs to t and fails the test if an entry carries a secret.
func sentinelLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &secretCheck{Core: c, t: t}
	})))
}

type secretCheck struct {
	zapcore.Core
	t testing.TB
}

func (s *secretCheck) check(e zapcore.Entry, fields []zapcore.Field) {
	buf, err := zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()).EncodeEntry(e, fields)
	if err != nil {
		return
	}
	defer buf.Free()
	for _, secret := range secrets {
		if strings.Contains(buf.String(), secret) {
			s.t.Errorf("a key leaked into a log line: %s", buf.String())
		}
	}
}

func (s *secretCheck) With(fields []zapcore.Field) zapcore.Core {
	s.check(zapcore.Entry{}, fields)
	return &secretCheck{Core: s.Core.With(fields), t: s.t}
}

func (s *secretCheck) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if s.Enabled(e.Level) {
		return ce.AddCore(e, s)
	}
	return ce
}

func (s *secretCheck) Write(e zapcore.Entry, fields []zapcore.Field) error {
	s.check(e, fields)
	return s.Core.Write(e, fields)
}

// checkMetricsForSecrets fails the test if a metric name, label or value
// carries a secret.
func checkMetricsForSecrets(t testing.TB, reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		t.Errorf("gather metrics: %v", err)
		return
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Errorf("encode metrics: %v", err)
		}
	}
	for _, secret := range secrets {
		if strings.Contains(b.String(), secret) {
			t.Errorf("a key leaked into the metrics")
		}
	}
}

// harness is a real gateway (the Server on an in-memory gRPC transport)
// in front of a real SLNG simulator on loopback, joined by the real client.
type harness struct {
	sim  *slngsim.Server
	srv  *Server
	pool *slngpool.Pool
	// metrics are the gateway's, for tests that show a metric moves; reg
	// holds them and the pool's.
	metrics *Metrics
	reg     *prometheus.Registry
	tts     speechv1.TextToSpeechServiceClient
	stt     speechv1.SpeechToTextServiceClient
	catalog speechv1.CatalogServiceClient
}

// newHarness runs the gateway without standby sessions, dial retries or
// breakers, so that every stream dials exactly once; newPooledHarness
// chooses the pool's options.
func newHarness(t testing.TB, simOpts slngsim.Options, cfg Config) *harness {
	t.Helper()
	return newPooledHarness(t, simOpts, cfg, slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 1 << 20})
}

func newPooledHarness(t testing.TB, simOpts slngsim.Options, cfg Config, poolOpts slngpool.Options) *harness {
	t.Helper()
	return newHarnessWith(t, simOpts, cfg, poolOpts, sentinelLogger(t))
}

// newHarnessWith also takes the service's logger and more gRPC server
// options, e.g. interceptors.
func newHarnessWith(t testing.TB, simOpts slngsim.Options, cfg Config, poolOpts slngpool.Options, log *zap.Logger, extra ...grpc.ServerOption) *harness {
	t.Helper()
	return newHarnessClient(t, simOpts, slngclient.Options{}, cfg, poolOpts, log, extra...)
}

// newHarnessClient also takes the SLNG client's options.
func newHarnessClient(t testing.TB, simOpts slngsim.Options, clientOpts slngclient.Options, cfg Config, poolOpts slngpool.Options,
	log *zap.Logger, extra ...grpc.ServerOption) *harness {
	t.Helper()
	if simOpts.APIKey == "" {
		simOpts.APIKey = testKey
	}
	sim := slngtest.NewServer(t, simOpts)
	clientOpts.BaseURL = sim.URL()
	h := gatewayVia(t, clientOpts, cfg, poolOpts, log, extra...)
	h.sim = sim
	return h
}

// gatewayVia runs a gateway on a pool whose client has opts and the test
// key; the harness it returns has no simulator.
func gatewayVia(t testing.TB, opts slngclient.Options, cfg Config, poolOpts slngpool.Options, log *zap.Logger, extra ...grpc.ServerOption) *harness {
	t.Helper()
	opts.APIKey = testKey
	opts.Logger = sentinelLogger(t).Named("client")
	client, err := slngclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	poolOpts.Logger = sentinelLogger(t).Named("pool")
	poolOpts.Metrics = slngpool.NewMetrics(reg)
	pool, err := slngpool.New(client, poolOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the gateway's cleanup: they run last first
	h := serveGateway(t, PoolUpstream(pool), cfg, reg, log, extra...)
	h.pool = pool
	return h
}

// serveGateway runs a Server on up behind an in-memory gRPC transport; the
// harness it returns has no simulator or pool.
func serveGateway(t testing.TB, up Upstream, cfg Config, reg *prometheus.Registry, log *zap.Logger, extra ...grpc.ServerOption) *harness {
	t.Helper()
	metrics := NewMetrics(reg)
	srv, err := New(up, log, metrics, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	serverOpts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec()),
		// Stop then waits for the handlers too, whose last log line must
		// come before the test ends.
		grpc.WaitForHandlers(true),
	}
	serverOpts = append(serverOpts, extra...)
	if cfg.TracerProvider != nil {
		serverOpts = append(serverOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(cfg.TracerProvider))))
	}
	gs := grpc.NewServer(serverOpts...)
	srv.Register(gs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Fixed windows, as the gateway's own: grpc-go's dynamic ones grow
		// to 16 MiB a stream, which would hide a caller that stops
		// reading behind megabytes of its own buffers.
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-served
		srv.Wait()
		checkMetricsForSecrets(t, reg)
	})
	return &harness{srv: srv, metrics: metrics, reg: reg,
		tts:     speechv1.NewTextToSpeechServiceClient(conn),
		stt:     speechv1.NewSpeechToTextServiceClient(conn),
		catalog: speechv1.NewCatalogServiceClient(conn)}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recvAll reads a response stream to its end.
func recvAll[T any](t *testing.T, recv func() (T, error)) ([]T, error) {
	t.Helper()
	var out []T
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// wantStatus asserts a status code and ErrorInfo reason ("" = no ErrorInfo).
func wantStatus(t *testing.T, err error, code codes.Code, reason string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), code)
	}
	for _, secret := range secrets {
		if strings.Contains(st.String(), secret) || strings.Contains(fmt.Sprint(st.Proto()), secret) {
			t.Fatalf("a key leaked into a status: %v", st.Proto())
		}
	}
	info, _ := details(st)
	got := info.GetReason()
	if got != reason {
		t.Fatalf("reason = %q, want %q (status %v)", got, reason, st)
	}
	if info != nil && info.GetDomain() != ErrorDomain {
		t.Fatalf("domain = %q", info.GetDomain())
	}
	return st
}

// fieldViolations returns the BadRequest fields of a status.
func fieldViolations(st *status.Status) []string {
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// synthesizeText runs SynthesizeText and returns its responses.
func (h *harness) synthesizeText(t *testing.T, ctx context.Context, req *speechv1.SynthesizeTextRequest) ([]*speechv1.SynthesizeResponse, error) {
	t.Helper()
	stream, err := h.tts.SynthesizeText(ctx, req)
	if err != nil {
		return nil, err
	}
	return recvAll(t, stream.Recv)
}

// audioOf concatenates the audio of responses.
func audioOf(resps []*speechv1.SynthesizeResponse) []byte {
	var b []byte
	for _, r := range resps {
		b = append(b, r.GetAudio().GetData()...)
	}
	return b
}

// transcribe sends audio in chunks of chunk bytes, half-closes, and returns
// every response.
func (h *harness) transcribe(t *testing.T, ctx context.Context, cfg *speechv1.RecognitionConfig, audio []byte, chunk int) ([]*speechv1.TranscribeResponse, error) {
	t.Helper()
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: cfg}}); err != nil {
		return nil, err
	}
	for len(audio) > 0 {
		n := min(chunk, len(audio))
		if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: audio[:n]}}); err != nil {
			break // the status comes from Recv
		}
		audio = audio[n:]
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return recvAll(t, stream.Recv)
}

// finalText joins the final transcripts of responses.
func finalText(resps []*speechv1.TranscribeResponse) string {
	var s string
	for _, r := range resps {
		if f := r.GetFinalTranscript(); f != nil && f.GetText() != "" {
			if s != "" {
				s += " "
			}
			s += f.GetText()
		}
	}
	return s
}

// counter sums the samples of the counter name in h.reg whose labels
// include want.
func (h *harness) counter(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// onFirstConnection is a simulator script that applies fault (in
// --fault syntax) to the first connection only, so that the session that
// replaces it works.
func onFirstConnection(fault string) func(slngsim.ConnInfo) slngsim.Fault {
	_, f, err := slngsim.ParseFault(fault)
	if err != nil {
		panic(err)
	}
	return func(ci slngsim.ConnInfo) slngsim.Fault {
		if ci.Seq == 1 {
			return f
		}
		return slngsim.Fault{}
	}
}
