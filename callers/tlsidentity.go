package callers

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// tlsID is the id in the client certificate of the stream's connection,
// when the gateway itself verified it (mutual TLS on the gRPC port): the
// SPIFFE id (its one spiffe:// URI SAN, as grpc-go reads it), else its
// first DNS SAN. A certificate that was not verified against the client
// CAs, or a connection without TLS, has none.
func tlsID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	if info.SPIFFEID != nil {
		return info.SPIFFEID.String()
	}
	if names := info.State.PeerCertificates[0].DNSNames; len(names) > 0 {
		return names[0]
	}
	return ""
}
