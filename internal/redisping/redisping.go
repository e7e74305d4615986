// Package redisping checks that a Redis server answers, with one PING over
// a plain TCP connection: what a process that starts redis-server waits
// for before it uses it.
package redisping

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/poll"
)

// Ping sends PING to the Redis server at addr (host:port) and returns nil
// when it answers PONG (or, having a password, NOAUTH), within a second of
// connecting.
func Ping(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server with a password answers NOAUTH: it is up all the same.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// ErrExited is Wait's error when the server exited before it answered.
var ErrExited = errors.New("redis-server exited before it answered PING")

// Wait pings the Redis server at addr every 20 ms until it answers (nil),
// exited is closed (ErrExited: the server process has ended) or ctx ends
// (ctx's error). It is how a process that has just started redis-server
// waits for it.
func Wait(ctx context.Context, addr string, exited <-chan struct{}) error {
	gone := false
	err := poll.Until(ctx, 20*time.Millisecond, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		return Ping(ctx, addr) == nil
	})
	if gone {
		return ErrExited
	}
	return err
}
