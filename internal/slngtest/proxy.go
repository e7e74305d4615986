package slngtest

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards TCP connections on loopback to a simulator. Freeze makes
// the connections open at that moment stop forwarding in both directions
// without closing either side: to both ends, the other has vanished
// without a FIN, as when a NAT or a load balancer forgets a connection.
// Connections made after Freeze forward normally.
type Proxy struct {
	lis    net.Listener
	target string

	wg     sync.WaitGroup
	mu     sync.Mutex
	links  map[*link]struct{}
	closed bool
}

// link is one proxied connection; frozen is closed by Freeze.
type link struct {
	client, server net.Conn
	frozen         chan struct{}
	once           sync.Once
}

func (l *link) freeze() { l.once.Do(func() { close(l.frozen) }) }

// NewProxy starts a proxy to the simulator at url (ws://host:port) and
// stops it, closing every connection, when the test ends.
func NewProxy(t testing.TB, url string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &Proxy{lis: lis, target: strings.TrimPrefix(url, "ws://"), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's base URL, to dial instead of the simulator's.
func (p *Proxy) URL() string { return "ws://" + p.lis.Addr().String() }

// Freeze stops forwarding on every connection open now and reports how
// many it froze.
func (p *Proxy) Freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.freeze()
	}
	return len(p.links)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s, frozen: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, c, s)
		go p.pipe(l, s, c)
	}
}

// pipe copies from src to dst until src ends, then ends the link; once
// frozen, it reads and drops, and ends nothing.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-l.frozen:
			if err != nil {
				return // closed by close
			}
			continue
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			p.mu.Lock()
			delete(p.links, l)
			p.mu.Unlock()
			return
		}
	}
}

// close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	for l := range p.links {
		l.client.Close()
		l.server.Close()
	}
	p.mu.Unlock()
	p.lis.Close()
	p.wg.Wait()
}
