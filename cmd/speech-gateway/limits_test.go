package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redistest"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
)

// sendHeaders writes, as a raw HTTP/2 client on c, the preface and one
// Synthesize stream whose request headers carry extra metadata, in HEADERS
// and CONTINUATION frames of 16 KiB: what a client that ignores the
// SETTINGS_MAX_HEADER_LIST_SIZE the gateway advertises would send (grpc-go's
// own clients honour it). A write the gateway has stopped reading fails;
// that error is returned.
func sendHeaders(c net.Conn, extra map[string]string) error {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/slng.speech.v1.TextToSpeechService/Synthesize"}, {Name: ":authority", Value: "gateway"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}
	for k, v := range extra {
		fields = append(fields, hpack.HeaderField{Name: k, Value: v})
	}
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			return err
		}
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	block := buf.Bytes()
	const frame = 16 << 10
	first := block[:min(frame, len(block))]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(block) <= frame}); err != nil {
		return err
	}
	for off := frame; off < len(block); off += frame {
		end := min(off+frame, len(block))
		if err := fr.WriteContinuation(1, end == len(block), block[off:end]); err != nil {
			return err
		}
	}
	return nil
}

// refusal reads what the gateway answers on c after sendHeaders, until it
// resets the stream or ends the connection (what it did, "" if neither
// within ctx), or answers the stream (an error).
func refusal(ctx context.Context, c net.Conn) (string, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	fr := http2.NewFramer(c, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return "", nil
			}
			return "connection closed", nil
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			return "stream reset: " + f.ErrCode.String(), nil
		case *http2.GoAwayFrame:
			return "connection closed: " + f.ErrCode.String(), nil
		case *http2.HeadersFrame:
			return "", fmt.Errorf("stream %d was answered: the gateway took it", f.StreamID)
		}
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestLargeMetadataRefusedAtTransport: streams with 1 MiB of request
// metadata each are reset by the HTTP/2 transport (FRAME_SIZE_ERROR)
// while their headers are decoded, before the gateway sees them, and the
// heap does not grow with them; metadata under the bound still serves,
// and a grpc-go client is told the bound before it sends anything.
//
// Not parallel: it measures the process's heap.
func TestLargeMetadataRefusedAtTransport(t *testing.T) {
	// On loopback TCP: in-memory connections would put the clients'
	// buffers in the heap that is measured.
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startGatewayOn(t, tcp, []string{"--dev"}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// Under the bound (32 KiB of 64): served.
	health := healthpb.NewHealthClient(dial(t, tcp.Addr().String()))
	small := metadata.AppendToOutgoingContext(ctx, "x-padding", strings.Repeat("a", 32<<10))
	if _, err := health.Check(small, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("32 KiB of metadata: %v", err)
	}
	// Over it (1 MiB), from grpc-go: refused by the client's transport.
	big := metadata.MD{}
	for i := range 32 {
		big.Set("x-padding-"+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("b", 32<<10))
	}
	_, err = health.Check(metadata.NewOutgoingContext(ctx, big), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "header list size") {
		t.Fatalf("1 MiB of metadata from grpc-go: %v, want INTERNAL about the header list size", err)
	}

	// Over it, from clients that send it anyway: 30 connections with one
	// stream of 1 MiB each, held open by the clients.
	extra := map[string]string{}
	for k, v := range big {
		extra[k] = v[0]
	}
	before := heapInUse()
	const streams = 30
	for i := range streams {
		// Each its own deadline: on a busy machine, thirty of them take
		// more than one test's.
		sctx, scancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer scancel()
		var d net.Dialer
		c, err := d.DialContext(sctx, "tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		werr := sendHeaders(c, extra)
		how, err := refusal(sctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if how == "" {
			t.Fatalf("stream %d with 1 MiB of metadata: neither reset nor its connection closed (write: %v)", i, werr)
		}
		if i == 0 {
			t.Logf("refused: %s", how)
		}
	}
	after := heapInUse()
	grew := int64(after) - int64(before)
	t.Logf("heap before %.1f MiB, after %d streams of 1 MiB metadata %.1f MiB (%+.1f MiB)",
		float64(before)/(1<<20), streams, float64(after)/(1<<20), float64(grew)/(1<<20))
	if grew > 8<<20 {
		t.Fatalf("the heap grew by %d bytes for %d refused streams: their metadata was kept", grew, streams)
	}
}

// TestHungUpstreamOpensBreaker: with SLNG accepting connections and never
// answering, streams fail after --slng-handshake-timeout with
// UPSTREAM_UNAVAILABLE rather than at their own deadlines, and after
// --breaker-failures of them the next fails at once with
// UPSTREAM_CIRCUIT_OPEN, without a dial.
func TestHungUpstreamOpensBreaker(t *testing.T) {
	t.Parallel()
	url, accepted := slngtest.BlackHole(t)
	g := startGateway(t, []string{"--slng-base-url", url, "--slng-handshake-timeout", "100ms", "--breaker-failures", "2",
		"--dial-attempts", "1", "--pool-warm=false"}, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k"})
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for i, want := range []string{"UPSTREAM_UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "UPSTREAM_CIRCUIT_OPEN"} {
		_, err := synthesizeText(ctx, conn, "Hello.")
		if status.Code(err) != codes.Unavailable || reasonOf(err) != want {
			t.Fatalf("stream %d: %v (%s), want UNAVAILABLE / %s", i+1, err, reasonOf(err), want)
		}
	}
	if n := accepted(); n != 2 {
		t.Fatalf("connections to SLNG = %d, want 2", n)
	}
}

// TestServesWhileRedisIsDown: a gateway whose Redis does not answer starts
// anyway and serves at its share of each limit, says so on /readyz, and
// shares its limits once Redis is up.
func TestServesWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	rds := redistest.Start(t)
	rds.Stop()
	g := startGateway(t, []string{"--dev", "--redis-url", rds.URL(), "--redis-timeout", "5s", "--fleet-lease-ttl", "900ms",
		"--caller-max-streams", "2", "--caller-identity", "peer"}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := synthesizeText(ctx, g.dial(t), "Hello."); err != nil {
		t.Fatalf("a stream with Redis down: %v", err)
	}
	if code, body := g.get(t, g.adminLis, "/readyz"); code != 200 || !strings.Contains(body, "local share of each limit") {
		t.Fatalf("/readyz = %d %q, want ready, in fallback", code, body)
	}
	rds.Restart()
	if err := poll.Until(ctx, 20*time.Millisecond, func() bool {
		_, body := g.get(t, g.adminLis, "/readyz")
		return strings.Contains(body, "shared limits in redis")
	}); err != nil {
		t.Fatalf("the limits are not shared once Redis is up: %v", err)
	}
}
