package service

import (
	"context"
)

// runPumps runs the two pumps of one stream: up (gRPC -> SLNG) in a new
// goroutine and down (SLNG -> gRPC) in the caller's. The first error cancels
// ctx for both; runPumps returns that first error, or nil when both
// finished cleanly.
//
// The one exception to "both are joined" is the up pump blocked in the gRPC
// stream's Recv: grpc-go unblocks it only when the handler returns, so
// runPumps does not wait for it after a failure. It is tracked by s.pumps
// (Server.Wait) and exits as soon as the RPC ends, because it stops at the
// first Recv error and does nothing after ctx is cancelled.
func (s *Server) runPumps(ctx context.Context, up, down func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	upErr := make(chan error, 1)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		err := up(ctx)
		if err != nil {
			cancel(err)
		}
		upErr <- err
	}()

	if err := down(ctx); err != nil {
		cancel(err)
		return context.Cause(ctx)
	}
	// The down pump finishes cleanly only after the up pump has seen the
	// caller's half-close, so this wait is short.
	select {
	case err := <-upErr:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
