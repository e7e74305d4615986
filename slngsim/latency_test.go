package slngsim

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLatencyOnEveryMessage: with Latency, every exchange costs at least
// a round trip (the dial two and more: TCP's handshake and the upgrade),
// pings included, while frames in flight overlap instead of queueing behind
// each other's delays.
func TestLatencyOnEveryMessage(t *testing.T) {
	t.Parallel()
	const oneWay = 40 * time.Millisecond
	rtt := 2 * oneWay
	s := startSim(t, Options{Latency: oneWay, Profile: new(ProfileRich())})

	start := time.Now()
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
	if d := time.Since(start); d < 2*rtt {
		t.Errorf("dial took %v, want at least two round trips (%v): TCP's handshake and the upgrade", d, 2*rtt)
	}
	start = time.Now()
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", m, err)
	}
	if d := time.Since(start); d < rtt {
		t.Errorf("init to ready took %v, want at least a round trip (%v)", d, rtt)
	}

	// A ping waits for its pong one round trip: control frames cross
	// the same network.
	start = time.Now()
	pong := make(chan error, 1)
	go func() { pong <- c.Ping(ctx) }()
	text := strings.Repeat("Every frame crosses the network. ", 8)
	for _, m := range []string{`{"type":"text","text":"` + text + `"}`, `{"type":"flush"}`} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var audio []byte
	var first time.Duration
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ == websocket.MessageBinary {
			if audio == nil {
				first = time.Since(start)
			}
			audio = append(audio, b...)
			continue
		}
		if bytes.Contains(b, []byte(`"audio_end"`)) {
			break
		}
	}
	total := time.Since(start)
	if err := <-pong; err != nil {
		t.Fatalf("ping: %v", err)
	}
	if first < rtt {
		t.Errorf("first audio after %v, want at least a round trip (%v)", first, rtt)
	}
	// The turn is many frames; had each waited for the one before it,
	// the turn would have taken a delay per frame.
	chunks := len(audio) / 960
	if chunks < 20 {
		t.Fatalf("turn of %d chunks; the test needs more", chunks)
	}
	if total > time.Duration(chunks/2)*oneWay {
		t.Errorf("turn of %d chunks took %v: frames wait for each other's delays", chunks, total)
	}
	if got, err := Decode(audio, "linear16", 24000); err != nil || got != text {
		t.Errorf("audio decodes to %q, %v; want the text in order", got, err)
	}
}

// TestPingRoundTrip: a ping's pong comes back one round trip later.
func TestPingRoundTrip(t *testing.T) {
	t.Parallel()
	const oneWay = 30 * time.Millisecond
	s := startSim(t, Options{Latency: oneWay})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/stt/deepgram/nova:3", `{"type":"init","config":{}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message %v, %v; want ready", m, err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := readType(ctx, t, c) // reads the pong; ends at the close
		read <- err
	}()
	start := time.Now()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if d := time.Since(start); d < 2*oneWay {
		t.Errorf("pong after %v, want at least a round trip (%v)", d, 2*oneWay)
	}
	if got := s.Sessions()[0].Pings; got != 1 {
		t.Errorf("Pings = %d, want 1", got)
	}
	c.CloseNow()
	<-read
}

// TestJitterNeverReorders: with a jitter as large as the latency, audio
// sent to the simulator and audio it sends arrive in order, every byte:
// the recognizer hears exactly the text, and the synthesized turn decodes
// to it.
func TestJitterNeverReorders(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Latency: 4 * time.Millisecond, Jitter: 4 * time.Millisecond, Profile: new(ProfileRich())})

	frames, code := sttExchange(t, s, "deepgram/nova:3")
	var finals []string
	for _, f := range frames {
		if f.msg != nil && f.msg["type"] == "final_transcript" && f.msg["transcript"] != "" {
			finals = append(finals, f.msg["transcript"].(string))
		}
	}
	if got := strings.Join(finals, "|"); got != "Hello there, world.|Second one" || code != websocket.StatusNormalClosure {
		t.Errorf("finals %q, close %v; want the utterances in order and a normal close", got, code)
	}

	text := strings.Repeat("Order is kept. ", 10)
	_, frames, _ = ttsTurn(t, s, "deepgram/aura:2", `{"type":"init","config":{}}`, text)
	if got, err := Decode(audioIn(t, frames), "linear16", 24000); err != nil || got != text {
		t.Errorf("audio decodes to %q, %v; want %q", got, err, text)
	}
}

// TestLatencyCloseArrivesAfterData: a close frame the simulator sends, and
// the end of the connection after it, reach the client after everything
// sent before them.
func TestLatencyCloseArrivesAfterData(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Latency: 20 * time.Millisecond, Faults: MustFaults("*=error:provider_error@ready,fatal,close=1011")})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
	frames, code := readFrames(ctx, t, c, nil)
	if got := summary(frames, code); got != "ready error:provider_error close:1011" {
		t.Errorf("got %q, want ready, the error frame and the close", got)
	}
}

// TestDelayConnStreamsInOrder drives one delayed connection directly:
// bytes written by the peer in many small writes come out of Read in
// order, no sooner than the latency, and a Read deadline stops a waiting
// Read (net/http relies on that to hand a connection over).
func TestDelayConnStreamsInOrder(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dl := newDelayListener(lis, netDelay{latency: 5 * time.Millisecond, jitter: 5 * time.Millisecond})
	defer func() {
		_ = lis.Close()
		dl.closeAll()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	peer, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := dl.Accept()
	if err != nil {
		t.Fatal(err)
	}

	// A deadline stops a Read that waits.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err == nil || !isTimeout(err) {
		t.Fatalf("Read past its deadline = %v, want a timeout", err)
	}
	_ = conn.SetReadDeadline(time.Time{})

	var want bytes.Buffer
	go func() {
		for i := range 300 {
			b := []byte{byte(i), byte(i >> 8), 0xAB}
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
		_ = peer.(*net.TCPConn).CloseWrite()
	}()
	for i := range 300 {
		want.Write([]byte{byte(i), byte(i >> 8), 0xAB})
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, not the %d written, in order", len(got), want.Len())
	}

	// What was written before Close still arrives, then the end.
	for range 50 {
		if _, err := conn.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.Close()
	back, err := io.ReadAll(peer)
	if err != nil || string(back) != strings.Repeat("late", 50) {
		t.Fatalf("peer read %q, %v; want every write, then the end", back, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestLatencyRefusedHandshake: a refusal crosses the delay lines whole,
// status and body.
func TestLatencyRefusedHandshake(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Latency: 10 * time.Millisecond, APIKey: "right"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, s.URL()+"/v1/bridges/unmute/tts/deepgram/aura:2?token=wrong", nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("dial = %v, %v; want 401", resp, err)
	}
	if body, _ := io.ReadAll(resp.Body); !bytes.Contains(body, []byte("Invalid or missing API key")) {
		t.Fatalf("body %q", body)
	}
}

// TestNegativeLatencyRefused: New validates the latency options.
func TestNegativeLatencyRefused(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{Latency: -time.Millisecond}, {Jitter: -time.Millisecond}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted a negative delay", o)
		}
	}
}
