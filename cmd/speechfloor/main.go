// Command speechfloor is the floor that speechbench measures speech-gateway
// against: the cheapest relay from gRPC to SLNG that grpc-go and
// coder/websocket allow. It serves SynthesizeText and Transcribe, the calls
// speechbench drives, and for each stream dials SLNG (the simulator), speaks
// the SLNG protocol (init, ready, text and flush, binary audio, close) and
// copies frames between the socket and the gRPC stream. It has none of the
// gateway's work: no validation, pool, breaker, retries, turn bookkeeping,
// limits, interceptors, logs or metrics. It keeps the gateway's library
// settings that make a relay cheaper (the pooled codec, fixed HTTP/2
// windows, reads and audio writes without a cancellable context), so that
// the difference between the two is the gateway's own work.
//
// It prints its gRPC address on stdout once it serves, and stops on SIGINT
// or SIGTERM. The SLNG key comes from SLNG_API_KEY.
//
//	speechfloor --slng-base-url ws://127.0.0.1:9000
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/pprofserve"
	"github.com/speech-gateway/speech-gateway/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "speechfloor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("speechfloor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "gRPC listen address")
	r := &relay{}
	fs.StringVar(&r.base, "slng-base-url", "ws://127.0.0.1:9000", "SLNG (or simulator) base URL")
	fs.StringVar(&r.ttsModel, "tts-model", "deepgram/aura:2", "TTS model for streams that name none")
	fs.StringVar(&r.voice, "voice", "aura-2-thalia-en", "voice for streams that name none")
	fs.StringVar(&r.sttModel, "stt-model", "deepgram/nova:3", "STT model for streams that name none")
	maxStreams := fs.Uint("max-streams-per-conn", 10000, "HTTP/2 MaxConcurrentStreams per client connection")
	streamWindow := fs.Int("http2-stream-window", 256<<10, "HTTP/2 stream receive window, as the gateway's default")
	connWindow := fs.Int("http2-conn-window", 4<<20, "HTTP/2 connection receive window, as the gateway's default")
	debugListen := fs.String("debug-listen", "", "serve pprof on this address too (the benchmark's --profile); printed after the gRPC address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r.header = http.Header{}
	if key := os.Getenv("SLNG_API_KEY"); key != "" {
		r.header.Set("Authorization", "Bearer "+key)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	if *debugListen != "" {
		dl, err := net.Listen("tcp", *debugListen)
		if err != nil {
			_ = l.Close()
			return err
		}
		stop := pprofserve.Serve(dl, nil)
		defer stop()
		addr += " " + dl.Addr().String()
	}
	srv := newServer(r, uint32(*maxStreams), int32(*streamWindow), int32(*connWindow))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	fmt.Println(addr)
	select {
	case <-ctx.Done():
		srv.Stop()
		<-served
		return nil
	case err := <-served:
		return err
	}
}

// newServer is a gRPC server for r with the gateway's library settings and
// nothing else: no interceptors, stats handlers or keepalive policy.
func newServer(r *relay, maxStreams uint32, streamWindow, connWindow int32) *grpc.Server {
	srv := grpc.NewServer(
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.ForceServerCodecV2(service.Codec()),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
	)
	speechv1.RegisterTextToSpeechServiceServer(srv, r)
	speechv1.RegisterSpeechToTextServiceServer(srv, r)
	return srv
}
