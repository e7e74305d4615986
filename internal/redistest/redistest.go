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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redisping"
)

// Options configure a test Redis. The zero value is a plain server.
type Options struct {
	// Password, when set, is required of every client (--requirepass).
	Password string
	// Cluster runs the server as a Cluster of one node that owns every
	// slot: Redis then refuses any command or script whose keys are in
	// different slots, as a Cluster of many nodes does.
	Cluster bool
}

// Server is one redis-server process. Its methods may be called
// concurrently.
type Server struct {
	t    testing.TB
	bin  string
	port int
	opts Options
	// args are the arguments after the port, the server's role: a config
	// file and --sentinel for a sentinel; none for a server.
	args []string
	dir  string // for the files a sentinel or a Cluster node writes

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free loopback port, without persistence,
// and stops it when the test ends. It fails the test when redis-server is
// not installed or does not answer within 10 s.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{t: t, bin: lookPath(t), opts: opts, dir: t.TempDir()}
	s.launch()
	if opts.Cluster {
		s.ownAllSlots()
	}
	return s
}

func lookPath(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: the fleet tests need a real Redis 7; install it with "+
			"`apt-get install redis-server` (.ci/run does): %v", err)
	}
	return bin
}

// StartSentinel runs a Sentinel (redis-server --sentinel) on a free
// loopback port that watches primary as the primary named MasterName,
// with primary's password, and stops it when the test ends. Its URL is
// what a client of the Sentinel deployment is given.
func StartSentinel(t testing.TB, primary *Server) *Server {
	t.Helper()
	s := &Server{t: t, bin: lookPath(t), dir: t.TempDir()}
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf("bind 127.0.0.1\nprotected-mode no\nsentinel monitor %s 127.0.0.1 %d 1\n", MasterName, primary.port)
	if primary.opts.Password != "" {
		text += fmt.Sprintf("sentinel auth-pass %s %s\n", MasterName, primary.opts.Password)
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{conf, "--sentinel"}
	s.launch()
	return s
}

// MasterName is the name under which a Sentinel of StartSentinel knows its
// primary.
const MasterName = "speech-gateway"

// launch starts the process on a free port and registers its Stop.
func (s *Server) launch() {
	t := s.t
	t.Helper()
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
	args := append(append([]string(nil), s.args...), "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--protected-mode", "no", "--loglevel", "warning")
	if len(s.args) == 0 { // a server, not a sentinel
		args = append(args, "--save", "", "--appendonly", "no", "--dir", s.dir)
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", s.port))
	}
	cmd := exec.Command(s.bin, args...)
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
	case err == nil && s.answersAsLocked(ctx, cmd.Process.Pid):
		return nil
	case err == nil:
		// Another test process's server took the port first: ours fails
		// to bind and exits, and the PING was that server's answer.
		_ = cmd.Process.Kill()
		<-done
		s.cmd = nil
		return fmt.Errorf("port %d answers for another redis-server", s.port)
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

// answersAsLocked reports whether the server on s.port is process pid:
// INFO's process_id, asked with s's password.
func (s *Server) answersAsLocked(ctx context.Context, pid int) bool {
	c := redis.NewClient(&redis.Options{Addr: s.addrLocked(), Password: s.opts.Password, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	return err == nil && strings.Contains(info, "\r\nprocess_id:"+strconv.Itoa(pid)+"\r\n")
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

// URL is the server's redis:// URL, for --redis-url, without its
// password; a Sentinel's names MasterName.
func (s *Server) URL() string {
	if len(s.args) > 0 {
		return "redis://" + s.Addr() + "/0?master_name=" + MasterName
	}
	if s.opts.Cluster {
		return "redis://" + s.Addr()
	}
	return "redis://" + s.Addr() + "/0"
}

// Password is the password clients must give, "" for none.
func (s *Server) Password() string { return s.opts.Password }

// ownAllSlots gives the one node of a Cluster every slot and waits until
// the Cluster says it is ok.
func (s *Server) ownAllSlots() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
		s.t.Fatalf("cluster addslotsrange: %v", err)
	}
	err := poll.Until(ctx, 20*time.Millisecond, func() bool {
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	if err != nil {
		s.t.Fatalf("the cluster did not become ok: %v", err)
	}
}

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
	if s.opts.Cluster {
		s.ownAllSlots()
	}
}
