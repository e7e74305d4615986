package main

import (
	"context"
	"math"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/speech-gateway/speech-gateway/internal/rpcmetrics"
	"github.com/speech-gateway/speech-gateway/service"
)

// newGRPCServer builds the gRPC server with its interceptors and transport
// limits. Interceptor order, outermost first: metrics, session id and caller
// id (streams), logging, recovery (so that a panic becomes INTERNAL before
// it is logged and counted), and for streams the messages bypass, which
// lets a stream's messages skip logging's and recovery's wrappers: both
// act only when a call starts and ends (logging logs finished calls only).
func newGRPCServer(cfg *config, log *zap.Logger, metrics *rpcmetrics.Metrics, callers service.Callers, extra ...grpc.ServerOption) *grpc.Server {
	recoverFn := func(ctx context.Context, p any) error {
		log.Error("panic in handler", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	}
	// The access-log line carries the stream's session_id (and trace_id,
	// span_id with tracing on), under the same names as the service's lines.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(service.LogFields)}
	maxStream := cfg.service.MaxStreamDuration
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
			service.MessagesBypass(),
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
		grpc.MaxConcurrentStreams(maxConcurrentStreams(cfg.serve.maxStreamsPerConn)),
		// Larger than any valid request, so that oversized text and audio
		// get a BadRequest naming the field rather than a transport error.
		grpc.MaxRecvMsgSize(max(cfg.service.MaxTextBytes, cfg.service.MaxAudioChunkBytes) + 64<<10),
		grpc.MaxSendMsgSize(4 << 20),
		// grpc-go accepts 16 MiB of metadata per stream by default and
		// keeps it for the stream's life: a few hundred such streams would
		// take the heap past a pod's memory limit. Past this bound the
		// transport resets the stream (FRAME_SIZE_ERROR) while decoding, and
		// the header fields beyond it are never stored.
		grpc.MaxHeaderListSize(uint32(cfg.serve.maxHeaderListSize)),
		grpc.ForceServerCodecV2(service.Codec()),
	}
	if cfg.serve.streamWindow > 0 {
		// Fixed windows bound what callers can have in flight per stream and
		// per connection, and turn off grpc-go's bandwidth-delay estimation,
		// whose pings cost a write for every few audio chunks received. A
		// real-time stream needs 32 KB/s; the default 256 KiB per stream
		// carries that over any round trip shorter than 8 s.
		opts = append(opts, grpc.InitialWindowSize(int32(cfg.serve.streamWindow)), grpc.InitialConnWindowSize(int32(cfg.serve.connWindow)))
	}
	return grpc.NewServer(append(opts, extra...)...)
}

// maxConcurrentStreams is --max-streams-per-conn for grpc-go: negative is
// no limit, as grpc-go's own default.
func maxConcurrentStreams(n int) uint32 {
	if n < 0 {
		return math.MaxUint32
	}
	return uint32(n)
}
