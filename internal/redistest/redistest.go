// Package redistest runs a real redis-server (Debian's redis-server
// package) on a free loopback port for a test, and stops it at cleanup.
//
// There is no fake: the fleet-wide limits are only as good as the Redis
// commands and scripts behind them, so tests run them against Redis
// itself. A machine without redis-server fails the test with the command
// that installs it; nothing is skipped.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/redisping"
)

// Server is one redis-server process. Its methods may be called
// concurrently.
type Server struct {
	t    testing.TB
	bin  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free loopback port, without persistence,
// and stops it when the test ends. It fails the test when redis-server is
// not installed or does not answer within 10 s.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: the fleet tests need a real Redis 7; install it with "+
			"`apt-get install redis-server` (.ci/run does): %v", err)
	}
	s := &Server{t: t, bin: bin}
	// A port picked by the kernel can be taken by someone else before
	// redis-server binds it; try a few.
	var lastErr error
	for range 5 {
		if s.port, lastErr = freePort(); lastErr != nil {
			continue
		}
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start redis-server: %v", lastErr)
	}
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logs := &syncBuilder{}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning")
	cmd.Stdout = logs
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch err := redisping.Wait(ctx, s.addrLocked(), done); {
	case err == nil:
		return nil
	case errors.Is(err, redisping.ErrExited):
		s.cmd = nil
		return fmt.Errorf("redis-server exited at start-up: %s", strings.TrimSpace(logs.String()))
	default:
		_ = cmd.Process.Kill()
		<-done
		s.cmd = nil
		return fmt.Errorf("redis-server did not answer PING within 10 s")
	}
}

// syncBuilder collects redis-server's output, written by exec's copying
// goroutine, for the error that reports a failed start.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuilder) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (s *Server) addrLocked() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Addr is the server's host:port. It stays the same across Stop and
// Restart.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrLocked()
}

// URL is the server's redis:// URL, for --redis-url.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop kills redis-server and waits for it to exit; clients see their
// connections drop, as when Redis crashes. It does nothing when the server
// is already stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts a stopped server again on the same port, empty (nothing
// is persisted). It fails the test if the port cannot be had again.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis-server: %v", err)
	}
}
