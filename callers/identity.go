package callers

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Unknown is the caller id of a stream for which no source had an id.
const Unknown = "unknown"

// DefaultIdentity is the default order of identity sources: the caller's
// own x-caller-id, then its address. Neither is authenticated; behind a
// mesh, use the mesh's identity instead (xfcc or l5d), and only it.
const DefaultIdentity = "metadata,peer"

// DefaultCallerHeader is the metadata key of the "metadata" source.
const DefaultCallerHeader = "x-caller-id"

// maxIDLen bounds a caller id; longer values are not ids.
const maxIDLen = 256

// source is where a caller id may come from.
type source struct {
	kind string // xfcc, l5d, tls, metadata, peer
	key  string // the metadata key, for kind metadata
	// by, for kind xfcc, is the pattern (see match) that the By= of the
	// header's last element must match: the identity of the proxy that
	// set it, the gateway's own sidecar. "" accepts any.
	by string
}

// asserted reports a source whose id the caller states itself: any
// caller can claim any id through it, so an access policy or quota that
// relies on it relies on nothing. Every other source is vouched for by
// the transport or the mesh.
func (s source) asserted() bool { return s.kind == "metadata" }

// String is the source as --caller-identity names it.
func (s source) String() string {
	switch {
	case s.kind == "metadata":
		return "metadata:" + s.key
	case s.by != "":
		return s.kind + ":By=" + s.by
	}
	return s.kind
}

// trust says, for the start-up log, what vouches for the ids of s.
func (s source) trust() string {
	switch {
	case s.asserted():
		return "asserted by the caller: any caller can claim any id"
	case s.kind == "xfcc" && s.by != "":
		return "the mesh: only a client certificate reported by a proxy whose identity matches By"
	case s.kind == "xfcc" || s.kind == "l5d":
		return "the mesh: trustworthy only when every request comes through the gateway's own sidecar over mutual TLS"
	case s.kind == "tls":
		return "the gateway: a client certificate it verified against --tls-client-ca-file"
	case s.kind == "peer":
		return "the connection's address"
	}
	return "verified by the gateway"
}

// parseSources reads an identity order such as "xfcc,metadata:x-team,peer".
func parseSources(spec string) ([]source, error) {
	var out []source
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		kind, key, hasKey := strings.Cut(item, ":")
		switch {
		case item == "":
			continue
		case kind == "metadata" && !hasKey:
			key = DefaultCallerHeader
		case kind == "metadata":
			key = strings.ToLower(strings.TrimSpace(key))
			if key == "" || strings.HasPrefix(key, "grpc-") || strings.HasPrefix(key, ":") {
				return nil, fmt.Errorf("caller identity %q: not a usable metadata key", item)
			}
			// The caller id reaches logs, spans, metric labels and Redis
			// keys: never take it from a header that carries a secret.
			if key == "authorization" || key == "cookie" || key == "x-slng-api-key" || key == "x-api-key" {
				return nil, fmt.Errorf("caller identity %q: that header carries credentials", item)
			}
		case kind == "xfcc" && hasKey:
			// xfcc:By=PATTERN pins the proxy that reports the certificate.
			name, by, _ := strings.Cut(key, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "By") || strings.TrimSpace(by) == "" {
				return nil, fmt.Errorf("caller identity %q: want xfcc or xfcc:By=SPIFFE-ID", item)
			}
			out = append(out, source{kind: kind, by: strings.TrimSpace(by)})
			continue
		case hasKey || (kind != "xfcc" && kind != "l5d" && kind != "tls" && kind != "peer"):
			return nil, fmt.Errorf("caller identity %q: want xfcc[:By=SPIFFE-ID], l5d, tls, metadata[:KEY] or peer", item)
		}
		out = append(out, source{kind: kind, key: key})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("caller identity %q names no source", spec)
	}
	return out, nil
}

// identify returns the first id a source has for the stream of ctx, or
// Unknown.
func identify(ctx context.Context, sources []source) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, s := range sources {
		var id string
		switch s.kind {
		case "xfcc":
			id = xfccURI(lastValue(md, "x-forwarded-client-cert"), s.by)
		case "l5d":
			id = lastValue(md, "l5d-client-id")
		case "tls":
			id = tlsID(ctx)
		case "metadata":
			id = lastValue(md, s.key)
		case "peer":
			if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
				id = p.Addr.String()
				if host, _, err := net.SplitHostPort(id); err == nil {
					id = host
				}
			}
		}
		if validID(id) {
			return id
		}
	}
	return Unknown
}

// lastValue is the last value of a metadata key: a proxy that sets a
// header appends its value after any the caller sent.
func lastValue(md metadata.MD, key string) string {
	vals := md.Get(key)
	if len(vals) == 0 {
		return ""
	}
	return vals[len(vals)-1]
}

// validID accepts printable ASCII without spaces, at most maxIDLen bytes:
// SPIFFE ids, DNS names, addresses and service names all are.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// xfccURI returns the SPIFFE id (the URI SAN) of the client certificate
// that Envoy reports in x-forwarded-client-cert, e.g.
// `By=spiffe://a;Hash=…;URI=spiffe://cluster.local/ns/app/sa/web`. With
// several elements (one per proxy, comma-separated) the last is the one
// the nearest proxy, the gateway's own sidecar, appended. Values may be
// quoted. With by set, that element's By= (the identity of the proxy that
// verified the certificate) must match it, or there is no id. See Envoy's
// docs on the header:
// https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-client-cert
func xfccURI(h, by string) string {
	if h == "" {
		return ""
	}
	elems := splitQuoted(h, ',')
	var uri, proxy string
	for _, pair := range splitQuoted(elems[len(elems)-1], ';') {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
		}
		switch k = strings.TrimSpace(k); {
		case strings.EqualFold(k, "URI") && uri == "":
			uri = v
		case strings.EqualFold(k, "By") && proxy == "":
			proxy = v
		}
	}
	if by != "" && (proxy == "" || !match(by, proxy)) {
		return ""
	}
	return uri
}

// splitQuoted splits s at sep outside double quotes.
func splitQuoted(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
