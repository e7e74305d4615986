package service

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// pumps are the goroutines of one stream.
type pumps struct {
	// up relays the caller's requests (gRPC -> SLNG) and down SLNG's
	// events (SLNG -> gRPC).
	up, down func(context.Context) error
	// own owns the upstream session for the whole stream: it runs in a
	// goroutine of its own and is joined before runPumps returns.
	own func(context.Context) error
	// abort is called with the stream's error (nil if it ended well)
	// before the owner is joined, so that a write it has in progress ends.
	abort func(err error)
}

// runPumps runs the pumps of one stream: up in a new goroutine, down in the
// caller's and the owner in another. The first error cancels ctx
// for all; runPumps returns that first error, or nil when the pumps
// finished cleanly.
//
// The one exception to "all are joined" is the up pump blocked in the gRPC
// stream's Recv: grpc-go unblocks it only when the handler returns, so
// runPumps does not wait for it after a failure. It is tracked by s.pumps
// (Server.Wait) and exits as soon as the RPC ends, because it stops at the
// first Recv error and does nothing after ctx is cancelled.
func (s *Server) runPumps(ctx context.Context, p pumps) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	owned := make(chan struct{})
	go func() {
		defer close(owned)
		if err := p.own(ctx); err != nil {
			cancel(err)
		}
	}()
	defer func() {
		cancel(err)
		p.abort(err)
		<-owned
	}()

	upErr := make(chan error, 1)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		err := p.up(ctx)
		if err != nil {
			cancel(err)
		}
		upErr <- err
	}()

	if err := p.down(ctx); err != nil {
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

// offer sends v on ch, unless ctx ends first: how the pumps ask a stream's
// owner, and how it answers them.
func offer[T any](ctx context.Context, ch chan<- T, v T) error {
	// An owner already waiting takes v without a select over ctx: per
	// audio chunk, the common case.
	select {
	case ch <- v:
		return nil
	default:
	}
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// await receives from ch, unless ctx ends first.
func await[T any](ctx context.Context, ch <-chan T) (T, error) {
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, context.Cause(ctx)
	}
}

// roundTrip offers op on ch and waits for its answer on reply, unless ctx
// ends first: how a pump asks its stream's owner to do something and waits
// for the outcome.
func roundTrip[T, R any](ctx context.Context, ch chan<- T, op T, reply <-chan R) (R, error) {
	if err := offer(ctx, ch, op); err != nil {
		var zero R
		return zero, err
	}
	return await(ctx, reply)
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// warningOf turns a non-fatal upstream error into a Warning, bounding the
// message so that an upstream cannot stuff the caller's stream.
func warningOf(ue *slngclient.UpstreamError) *speechv1.Warning {
	if ue == nil {
		return &speechv1.Warning{Code: "unknown"}
	}
	return &speechv1.Warning{Code: truncate(ue.Code, 64), Message: truncate(ue.Message, 256)}
}

// maxReconnects bounds reconnects that bring no final transcript: a
// session that fails again at once will not be saved by another.
const maxReconnects = 3

// reconnectReason names why a session was replaced, for the caller.
func reconnectReason(cause error) string {
	if cause == nil {
		return "rollover"
	}
	if errors.Is(cause, errTurnTimeout) {
		return "turn_timeout"
	}
	if ue, ok := slngclient.AsUpstreamError(cause); ok {
		switch {
		case ue.Code != "":
			return ue.Code
		case ue.Kind == slngclient.KindClose && ue.CloseCode == 1000:
			return "closed"
		case ue.Reaped():
			return "reaped"
		}
	}
	return "connection_lost"
}
