// Package slngtest starts SLNG simulators for tests, upstreams that never
// answer, and proxies to simulators whose connections can vanish without
// a FIN.
package slngtest

import (
	"net"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/slngsim"
)

// NewServer starts a simulator on loopback with opts, logging to t, and
// closes it when the test ends.
func NewServer(t testing.TB, opts slngsim.Options) *slngsim.Server {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	s, err := slngsim.Start(opts)
	if err != nil {
		t.Fatalf("start simulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close simulator: %v", err)
		}
	})
	return s
}

// BlackHole listens on loopback and accepts every TCP connection without
// ever answering on it, as a hung upstream or a load balancer in front of
// a dead one would; it returns its ws:// base URL and the number of
// connections it has accepted so far. Everything closes when the test
// ends.
func BlackHole(t testing.TB) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held, never read or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "ws://" + l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}
