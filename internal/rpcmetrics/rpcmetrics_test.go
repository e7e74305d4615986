package rpcmetrics

import (
	"context"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// calls makes the same calls on a server, after init has seen its services:
// two unary (one fails with NOT_FOUND) and a server stream cancelled after
// its first message.
func calls(t *testing.T, init func(*grpc.Server), opts ...grpc.ServerOption) func() {
	t.Helper()
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	init(gs)
	lis := bufconn.Listen(1 << 16)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///x",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); err == nil {
		t.Fatal("want NOT_FOUND")
	}
	wctx, wcancel := context.WithCancel(ctx)
	w, err := c.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	wcancel()
	_, _ = w.Recv()
	return func() {
		conn.Close()
		gs.Stop() // waits for the handlers, which record the end of their RPC
		<-served
	}
}

// series lists a registry's series with their counts, histograms by their
// sample count only (their durations differ from run to run).
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			v := m.GetCounter().GetValue()
			if mf.GetType() == dto.MetricType_HISTOGRAM {
				v = float64(m.GetHistogram().GetSampleCount())
			}
			out = append(out, mf.GetName()+"{"+strings.Join(l, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	sort.Strings(out)
	return out
}

// TestSameAsTheProvider: for the same calls, the series and their counts
// are those of go-grpc-middleware's Prometheus provider.
func TestSameAsTheProvider(t *testing.T) {
	theirs := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	theirReg := prometheus.NewRegistry()
	theirReg.MustRegister(theirs)
	stop := calls(t, func(s *grpc.Server) { theirs.InitializeMetrics(s) }, grpc.ChainUnaryInterceptor(theirs.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(theirs.StreamServerInterceptor()))
	stop()

	ours := New()
	ourReg := prometheus.NewRegistry()
	ourReg.MustRegister(ours)
	stop = calls(t, func(s *grpc.Server) { ours.InitializeMetrics(s) }, grpc.ChainUnaryInterceptor(ours.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(ours.StreamServerInterceptor()))
	stop()

	want, got := series(t, theirReg), series(t, ourReg)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("series differ:\nours:\n%s\n\nthe provider's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(got) < 8 {
		t.Fatalf("only %d series: %v", len(got), got)
	}
}
