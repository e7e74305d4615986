// Package redisping checks that a Redis server answers, with one PING over
// a plain TCP connection: what a process that starts redis-server waits
// for before it uses it.
package redisping

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// Ping sends PING to the Redis server at addr (host:port) and returns nil
// when it answers PONG, within a second of connecting.
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
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}
