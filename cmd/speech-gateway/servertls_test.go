package main

import (
	"context"
	"crypto/tls"
	"io"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/certtest"
	"github.com/speech-gateway/speech-gateway/internal/poll"
)

const (
	tlsServerName = "gateway.test"
	tlsSPIFFE     = "spiffe://cluster.local/ns/checkout/sa/web"
)

// tlsFiles are a server CA and a certificate for the gateway, and a
// separate CA for client certificates, as files in a test directory.
type tlsFiles struct {
	dir                             string
	serverCA, clientCA              *certtest.CA
	server                          *certtest.Issued
	certFile, keyFile, clientCAFile string
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	f := &tlsFiles{dir: t.TempDir(), serverCA: certtest.NewCA(t, "server CA"), clientCA: certtest.NewCA(t, "client CA")}
	f.server = f.serverCA.Issue(t, certtest.Leaf{DNSNames: []string{tlsServerName}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	f.certFile, f.keyFile = f.server.WriteFiles(t, f.dir, "server")
	f.clientCAFile = filepath.Join(f.dir, "client-ca.crt")
	certtest.WriteFile(t, f.clientCAFile, f.clientCA.PEM)
	return f
}

// args are the gateway's TLS flags; mutual adds the client CA.
func (f *tlsFiles) args(mutual bool) []string {
	a := []string{"--tls-cert-file", f.certFile, "--tls-key-file", f.keyFile}
	if mutual {
		a = append(a, "--tls-client-ca-file", f.clientCAFile)
	}
	return a
}

// clientConfig trusts the server CA and presents client (nil: nothing).
func (f *tlsFiles) clientConfig(t *testing.T, client *certtest.Issued) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: f.serverCA.Pool(), ServerName: tlsServerName}
	if client != nil {
		c.Certificates = []tls.Certificate{client.TLS(t)}
	}
	return c
}

// dialWith connects to the gateway's in-memory gRPC listener with creds.
func (g *testGateway) dialWith(t *testing.T, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///gateway", grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.grpcLis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// callerOf starts a SynthesizeText stream on conn, claiming claim as
// x-caller-id, and returns the caller id in started.
func callerOf(ctx context.Context, conn *grpc.ClientConn, claim string) (string, error) {
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "x-caller-id", claim))
	defer cancel()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Hello."})
	if err != nil {
		return "", err
	}
	m, err := stream.Recv()
	if err != nil {
		return "", err
	}
	return m.GetStarted().GetCallerId(), nil
}

// TestRunServesMutualTLS: with a certificate, a key and a client CA, the
// gateway serves only callers whose certificate that CA signed, and the
// tls identity source names them by the certificate's SPIFFE id, or its
// DNS name, ahead of what they claim in metadata.
func TestRunServesMutualTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	g := startGateway(t, append([]string{"--dev", "--caller-identity", "tls,metadata"}, f.args(true)...), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	g.logs.waitFor(ctx, t, `"tls": "mutual"`) // on the serving line

	web := f.clientCA.Issue(t, certtest.Leaf{Client: true, URIs: []string{tlsSPIFFE}, DNSNames: []string{"web.checkout.svc"}})
	billing := f.clientCA.Issue(t, certtest.Leaf{Client: true, DNSNames: []string{"billing.internal"}})
	noNames := f.clientCA.Issue(t, certtest.Leaf{Client: true, CommonName: "no SANs"})
	stranger := f.serverCA.Issue(t, certtest.Leaf{Client: true, URIs: []string{tlsSPIFFE}})
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		want  string // the caller id; "" for a refused connection
	}{
		{"the SPIFFE id", credentials.NewTLS(f.clientConfig(t, web)), tlsSPIFFE},
		{"the DNS name", credentials.NewTLS(f.clientConfig(t, billing)), "billing.internal"},
		{"a certificate without names falls through to metadata", credentials.NewTLS(f.clientConfig(t, noNames)), "claimed"},
		{"a certificate from another CA", credentials.NewTLS(f.clientConfig(t, stranger)), ""},
		{"no certificate", credentials.NewTLS(f.clientConfig(t, nil)), ""},
		{"cleartext", insecure.NewCredentials(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := callerOf(ctx, g.dialWith(t, tc.creds), "claimed")
			switch {
			case tc.want == "" && status.Code(err) != codes.Unavailable:
				t.Errorf("caller %q, err %v; want the connection refused (UNAVAILABLE)", got, err)
			case tc.want != "" && (err != nil || got != tc.want):
				t.Errorf("caller %q, err %v; want %q", got, err, tc.want)
			}
		})
	}
	_, metrics := g.get(t, g.adminLis, "/metrics")
	m := regexp.MustCompile(`(?m)^speech_gateway_tls_certificate_expiry_timestamp_seconds (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatal("no speech_gateway_tls_certificate_expiry_timestamp_seconds in the metrics")
	}
	if v, err := strconv.ParseFloat(m[1], 64); err != nil || int64(v) != f.server.Cert.NotAfter.Unix() {
		t.Errorf("certificate expiry = %s, want %d", m[1], f.server.Cert.NotAfter.Unix())
	}
}

// TestRunServesTLS: with a certificate and no client CA, callers need no
// certificate, and their caller id comes from the other sources.
func TestRunServesTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	g := startGateway(t, append([]string{"--dev", "--caller-identity", "metadata"}, f.args(false)...), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if got, err := callerOf(ctx, g.dialWith(t, credentials.NewTLS(f.clientConfig(t, nil))), "billing"); err != nil || got != "billing" {
		t.Errorf("caller %q, err %v; want billing", got, err)
	}
	if _, err := callerOf(ctx, g.dialWith(t, insecure.NewCredentials()), "billing"); status.Code(err) != codes.Unavailable {
		t.Errorf("cleartext: err %v, want UNAVAILABLE", err)
	}
}

// servedSerial makes a new connection with cfg and returns the serial of
// the certificate the gateway served it, or the connection's error.
func servedSerial(ctx context.Context, t *testing.T, g *testGateway, cfg *tls.Config) (*big.Int, error) {
	t.Helper()
	conn := g.dialWith(t, credentials.NewTLS(cfg))
	defer conn.Close() // now, not at the end of the test
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber, nil
}

// TestRunReloadsTLS: a renewed certificate serves new connections while
// open ones keep theirs; a certificate swapped before its key is refused
// until the key follows, the old pair serving meanwhile; and a changed
// client CA decides which client certificates new connections accept.
func TestRunReloadsTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	g := startGateway(t, append([]string{"--dev", "--tls-reload-interval", "20ms"}, f.args(true)...), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	client := f.clientCA.Issue(t, certtest.Leaf{Client: true, URIs: []string{tlsSPIFFE}})
	cfg := f.clientConfig(t, client)
	metric := func(result string) string {
		_, body := g.get(t, g.adminLis, "/metrics")
		m := regexp.MustCompile(`speech_gateway_tls_reloads_total\{result="` + result + `"\} (\S+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no speech_gateway_tls_reloads_total{result=%q} in the metrics", result)
		}
		return m[1]
	}

	open := g.dialWith(t, credentials.NewTLS(cfg))
	health := healthpb.NewHealthClient(open)
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if s, err := servedSerial(ctx, t, g, cfg); err != nil || s.Cmp(f.server.Cert.SerialNumber) != 0 {
		t.Fatalf("served serial %v, err %v; want the first certificate's", s, err)
	}

	// The new certificate first, with the old key: refused, and the old
	// pair goes on serving.
	renewed := f.serverCA.Issue(t, certtest.Leaf{DNSNames: []string{tlsServerName}})
	certtest.WriteFile(t, f.certFile, renewed.CertPEM)
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool { return metric("error") == "1" }); err != nil {
		t.Fatalf("the half-swapped pair was not reported: %v\n%s", err, g.logs)
	}
	if s, err := servedSerial(ctx, t, g, cfg); err != nil || s.Cmp(f.server.Cert.SerialNumber) != 0 {
		t.Fatalf("half swapped: served serial %v, err %v; want the first certificate's", s, err)
	}
	certtest.WriteFile(t, f.keyFile, renewed.KeyPEM)
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool {
		s, err := servedSerial(ctx, t, g, cfg)
		return err == nil && s.Cmp(renewed.Cert.SerialNumber) == 0
	}); err != nil {
		t.Fatalf("the renewed certificate is not served: %v\n%s", err, g.logs)
	}
	if got := metric("changed"); got != "1" {
		t.Errorf("changed = %s, want 1", got)
	}
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a connection opened before the renewal: %v", err)
	}

	// A new client CA: its certificates are accepted from now on, the old
	// CA's refused.
	newCA := certtest.NewCA(t, "new client CA")
	certtest.WriteFile(t, f.clientCAFile, newCA.PEM)
	newClient := f.clientConfig(t, newCA.Issue(t, certtest.Leaf{Client: true, URIs: []string{tlsSPIFFE}}))
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool {
		_, err := servedSerial(ctx, t, g, newClient)
		return err == nil
	}); err != nil {
		t.Fatalf("the new client CA is not used: %v\n%s", err, g.logs)
	}
	if _, err := servedSerial(ctx, t, g, cfg); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate of the old client CA: err %v, want UNAVAILABLE", err)
	}
}

func TestParseConfigTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert-file", "c"}, "set both or neither"},
		{[]string{"--tls-key-file", "k"}, "set both or neither"},
		{[]string{"--tls-client-ca-file", "ca"}, "needs --tls-cert-file"},
		{[]string{"--caller-identity", "metadata, tls"}, "needs --tls-client-ca-file"},
		{[]string{"--tls-cert-file", "c", "--tls-key-file", "k", "--caller-identity", "tls"}, "needs --tls-client-ca-file"},
	} {
		_, err := parseConfig(append([]string{"--dev"}, tc.args...), envFrom(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one saying %q", tc.args, err, tc.want)
		}
	}
	c, err := parseConfig([]string{"--dev"}, envFrom(map[string]string{
		"SPEECH_GATEWAY_TLS_CERT_FILE": "c", "SPEECH_GATEWAY_TLS_KEY_FILE": "k", "SPEECH_GATEWAY_TLS_CLIENT_CA_FILE": "ca", "SPEECH_GATEWAY_TLS_RELOAD_INTERVAL": "1m", "SPEECH_GATEWAY_CALLER_IDENTITY": "tls",
	}), io.Discard)
	if s := c.serve; err != nil || s.tlsCertFile != "c" || s.tlsKeyFile != "k" || s.tlsClientCAFile != "ca" || s.tlsReload != time.Minute {
		t.Errorf("from the environment: %+v, %v", c, err)
	}
}

// TestRunRefusesBadTLSFiles: files that do not make a TLS configuration
// stop the start-up, rather than serving cleartext or nothing.
func TestRunRefusesBadTLSFiles(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	other := f.serverCA.Issue(t, certtest.Leaf{DNSNames: []string{tlsServerName}})
	otherKey := filepath.Join(f.dir, "other.key")
	certtest.WriteFile(t, otherKey, other.KeyPEM)
	notPEM := filepath.Join(f.dir, "not-pem")
	certtest.WriteFile(t, notPEM, []byte("not a certificate"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a key of another certificate", []string{"--tls-cert-file", f.certFile, "--tls-key-file", otherKey}, "private key does not match"},
		{"a missing file", []string{"--tls-cert-file", f.certFile + ".missing", "--tls-key-file", f.keyFile}, "no such file"},
		{"a client CA file without certificates", append(f.args(false), "--tls-client-ca-file", notPEM), "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := run(ctx, append([]string{"--dev", "--listen", "127.0.0.1:0", "--admin-listen", ""}, tc.args...), envFrom(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestSpeechctlOverMutualTLS: the speechctl binary calls a gateway that
// requires client certificates, with its certificate and a claimed caller
// id, and prints the caller id the gateway's started message gives: the
// certificate's SPIFFE id, or the claim when the certificate names no one.
// The audio it wrote is transcribed back by speechctl too.
func TestSpeechctlOverMutualTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // includes building speechctl
	defer cancel()
	dir := t.TempDir()
	speechctl := filepath.Join(dir, "speechctl")
	build := exec.CommandContext(ctx, "go", append(append([]string{"build", "-o", speechctl}, raceFlag()...), "../speechctl")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build speechctl: %v\n%s", err, out)
	}

	f := newTLSFiles(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startGatewayOn(t, lis, append([]string{"--dev", "--caller-identity", "tls,metadata"}, f.args(true)...), nil)
	caFile := filepath.Join(dir, "server-ca.crt")
	certtest.WriteFile(t, caFile, f.serverCA.PEM)
	webCert, webKey := f.clientCA.Issue(t, certtest.Leaf{Client: true, URIs: []string{tlsSPIFFE}}).WriteFiles(t, dir, "web")
	anonCert, anonKey := f.clientCA.Issue(t, certtest.Leaf{Client: true, CommonName: "no SANs"}).WriteFiles(t, dir, "anon")

	speech := func(args ...string) (stdout, stderr string) {
		t.Helper()
		var out, errOut strings.Builder
		cmd := exec.CommandContext(ctx, speechctl, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("speechctl %q: %v\n%s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	conn := []string{"--addr", lis.Addr().String(), "--ca", caFile, "--timeout", "30s", "--caller-id", "billing"}
	wav := filepath.Join(dir, "hello.wav")
	_, said := speech(append(append([]string{"synthesize"}, conn...), "--cert", webCert, "--key", webKey, "--text", "Hello over TLS.", "--out", wav)...)
	if !strings.Contains(said, "as caller "+tlsSPIFFE+" ") {
		t.Errorf("synthesize with a SPIFFE certificate said:\n%s\nwant the caller %s", said, tlsSPIFFE)
	}
	heard, said := speech(append(append([]string{"transcribe"}, conn...), "--cert", anonCert, "--key", anonKey, wav)...)
	if !strings.Contains(said, "as caller billing ") {
		t.Errorf("transcribe with a certificate naming no one said:\n%s\nwant the caller billing", said)
	}
	if strings.TrimSpace(heard) != "Hello over TLS." {
		t.Errorf("transcribed %q, want the text spoken", heard)
	}
	// Without a client certificate the gateway refuses the connection.
	cmd := exec.CommandContext(ctx, speechctl, append([]string{"health"}, conn...)...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "Unavailable") {
		t.Errorf("health without a client certificate: %v\n%s", err, out)
	}
}
