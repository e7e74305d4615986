// Command speech-gateway serves streaming text-to-speech and speech-to-text
// over gRPC, backed by SLNG's WebSocket API. Run it with -h for its flags;
// every flag also reads an environment variable (README.md lists them).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, errShowVersion) {
		fmt.Println(buildInfo().Line("speech-gateway"))
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "speech-gateway:", err)
		os.Exit(1)
	}
}
