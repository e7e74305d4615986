package redisping

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestWaitStopsWhenTheServerExits: with nothing listening, Wait gives up
// as soon as it is told the server has exited, and at ctx's end otherwise.
func TestWaitStopsWhenTheServerExits(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	exited := make(chan struct{})
	close(exited)
	if err := Wait(ctx, addr, exited); !errors.Is(err, ErrExited) {
		t.Errorf("Wait with the server exited = %v, want ErrExited", err)
	}
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if err := Wait(short, addr, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past its deadline = %v, want context.DeadlineExceeded", err)
	}
}
