package callers

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/speech-gateway/speech-gateway/internal/certtest"
)

// handshake runs grpc-go's own TLS handshake between a client presenting
// client (nil: none) and a server that asks for client certificates with
// auth, and returns what the server's gRPC transport puts in the peer.
func handshake(ctx context.Context, t *testing.T, ca *certtest.CA, client *certtest.Issued, auth tls.ClientAuthType) credentials.AuthInfo {
	t.Helper()
	server := ca.Issue(t, certtest.Leaf{DNSNames: []string{"gateway.test"}})
	serverCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{server.TLS(t)}, ClientCAs: ca.Pool(), ClientAuth: auth})
	clientCfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "gateway.test"}
	if client != nil {
		clientCfg.Certificates = []tls.Certificate{client.TLS(t)}
	}
	clientCreds := credentials.NewTLS(clientCfg)
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	clientDone := make(chan error, 1)
	go func() {
		conn, _, err := clientCreds.ClientHandshake(ctx, "gateway.test", c)
		if err == nil {
			// TLS 1.3 sends the client's certificate after the client
			// considers the handshake done: read, so that the server's
			// side of it can finish.
			_, _ = conn.Read(make([]byte, 1))
		}
		clientDone <- err
	}()
	conn, info, err := serverCreds.ServerHandshake(s)
	if err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	conn.Close()
	if err := <-clientDone; err != nil {
		t.Logf("client after the handshake: %v", err)
	}
	return info
}

func TestIdentifyTLS(t *testing.T) {
	t.Parallel()
	const spiffe = "spiffe://cluster.local/ns/checkout/sa/web"
	ca := certtest.NewCA(t, "test client CA")
	withSPIFFE := ca.Issue(t, certtest.Leaf{Client: true, URIs: []string{spiffe}, DNSNames: []string{"web.checkout.svc"}})
	dnsOnly := ca.Issue(t, certtest.Leaf{Client: true, DNSNames: []string{"billing.internal", "billing"}})
	for _, tc := range []struct {
		name   string
		client *certtest.Issued
		auth   tls.ClientAuthType
		want   string
	}{
		{"the SPIFFE id", withSPIFFE, tls.RequireAndVerifyClientCert, spiffe},
		{"else the first DNS name", dnsOnly, tls.RequireAndVerifyClientCert, "billing.internal"},
		// A server that takes any certificate verifies none: its names
		// are the caller's claims, like metadata.
		{"an unverified certificate falls through", withSPIFFE, tls.RequireAnyClientCert, "from-metadata"},
		{"no certificate falls through", nil, tls.VerifyClientCertIfGiven, "from-metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			info := handshake(ctx, t, ca, tc.client, tc.auth)
			sources, err := parseSources("tls,metadata")
			if err != nil {
				t.Fatal(err)
			}
			ctx = peer.NewContext(metadata.NewIncomingContext(ctx, metadata.Pairs("x-caller-id", "from-metadata")),
				&peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}, AuthInfo: info})
			if got := identify(ctx, sources); got != tc.want {
				t.Errorf("identify = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("a connection without TLS", func(t *testing.T) {
		t.Parallel()
		sources, err := parseSources("tls")
		if err != nil {
			t.Fatal(err)
		}
		ctx := peer.NewContext(testContext(t), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}})
		if got := identify(ctx, sources); got != Unknown {
			t.Errorf("identify = %q, want %q", got, Unknown)
		}
	})
}
