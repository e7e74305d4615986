// Command slngsim serves a simulator of SLNG's streaming speech WebSocket API
// on loopback, for integration tests of anything that speaks to SLNG. It
// prints the URL it listens on as its first line and stops on SIGTERM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "slngsim:", err)
		os.Exit(1)
	}
}
