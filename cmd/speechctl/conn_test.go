package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/internal/certtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// healthServer answers health checks over TLS on loopback, recording the
// x-caller-id each call claims; a check of the service "slow" waits until
// its caller gives up.
type healthServer struct {
	*grpchealth.Server
	claims chan string
}

func (h *healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.claims <- strings.Join(md.Get(callerHeader), ",")
	if req.GetService() == "slow" {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return h.Server.Check(ctx, req)
}

// startHealthServer serves h with a certificate for 127.0.0.1 that ca
// signed, requiring no client certificate, until the test ends.
func startHealthServer(t *testing.T, ca *certtest.CA) (addr string, h *healthServer) {
	t.Helper()
	cert := ca.Issue(t, certtest.Leaf{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"gateway.test"}})
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert.TLS(t)}})))
	h = &healthServer{Server: grpchealth.NewServer(), claims: make(chan string, 10)}
	healthpb.RegisterHealthServer(srv, h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String(), h
}

// TestConnectionFlags: --ca trusts a private CA (and implies TLS),
// --server-name checks the certificate against another name than --addr,
// --caller-id arrives as x-caller-id, and --timeout bounds the call.
func TestConnectionFlags(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "test CA")
	addr, h := startHealthServer(t, ca)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	certtest.WriteFile(t, caFile, ca.PEM)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	healthCmd := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(ctx, append([]string{"health", "--addr", addr}, args...), strings.NewReader(""), &out, io.Discard)
		return out.String(), err
	}
	claim := func() string {
		t.Helper()
		select {
		case c := <-h.claims:
			return c
		case <-ctx.Done():
			t.Fatal("the server saw no call")
			return ""
		}
	}

	if out, err := healthCmd("--ca", caFile, "--caller-id", "billing"); err != nil || out != "SERVING\n" {
		t.Fatalf("health over TLS: %q, %v", out, err)
	}
	if got := claim(); got != "billing" {
		t.Errorf("x-caller-id = %q, want billing", got)
	}
	if _, err := healthCmd("--ca", caFile, "--server-name", "gateway.test"); err != nil {
		t.Errorf("--server-name gateway.test: %v", err)
	}
	claim()
	if _, err := healthCmd("--ca", caFile, "--server-name", "elsewhere.test"); status.Code(err) != codes.Unavailable {
		t.Errorf("--server-name not in the certificate: err %v, want UNAVAILABLE", err)
	}
	// The system's CAs do not know the test CA; cleartext meets TLS.
	for _, args := range [][]string{{"--tls"}, nil} {
		if _, err := healthCmd(args...); status.Code(err) != codes.Unavailable {
			t.Errorf("%q: err %v, want UNAVAILABLE", args, err)
		}
	}
	if _, err := healthCmd("--ca", caFile); err != nil {
		t.Errorf("health over TLS without --caller-id: %v", err)
	}
	if got := claim(); got != "" {
		t.Errorf("x-caller-id without --caller-id = %q, want none", got)
	}
	// The call may end before it reaches the server, on a busy machine:
	// the deadline covers the TLS handshake too.
	start := time.Now()
	if _, err := healthCmd("--ca", caFile, "--service", "slow", "--timeout", "200ms"); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("--timeout 200ms on a call that never ends: err %v, want DEADLINE_EXCEEDED", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("--timeout 200ms took %v", elapsed)
	}
}

func TestConnectionFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not-pem")
	certtest.WriteFile(t, notPEM, []byte("not a certificate"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert", "c.crt"}, errTLSFlags.Error()},
		{[]string{"--key", "c.key"}, errTLSFlags.Error()},
		{[]string{"--ca", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"--ca", notPEM}, "no PEM certificate"},
		{[]string{"--cert", notPEM, "--key", notPEM}, "--cert and --key"},
	} {
		fs, cf := flags("health", io.Discard, 0)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := cf.dialOptions()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one saying %q", tc.args, err, tc.want)
		}
		if errors.Is(err, errUsage) {
			t.Errorf("%q: a usage error", tc.args)
		}
	}
}
