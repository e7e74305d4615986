package slngsim

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// dialSim opens a raw WebSocket to the simulator and sends init.
func dialSim(t *testing.T, s *Server, path string, init string) (context.Context, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, s.URL()+path, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte(init)); err != nil {
		t.Fatalf("write init: %v", err)
	}
	return ctx, c
}

func readType(ctx context.Context, t *testing.T, c *websocket.Conn) (map[string]any, error) {
	t.Helper()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ != websocket.MessageText {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("bad JSON %q", b)
		}
		return m, nil
	}
}

func startSim(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestInitFaultReplacesReady(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Faults: MustFaults("*=error:auth_error@init,fatal,close=1008")})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
	m, err := readType(ctx, t, c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if m["type"] != "error" || m["code"] != "auth_error" {
		t.Fatalf("first message = %v, want an auth_error frame instead of ready", m)
	}
	_, err = readType(ctx, t, c)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("close = %v (%v), want 1008", got, err)
	}
}

func TestTTSTextTimeoutDropsSessionWithoutText(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{TTSTextTimeout: 100 * time.Millisecond})
	ctx, c := dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message = %v, %v; want ready", m, err)
	}
	start := time.Now()
	_, err := readType(ctx, t, c)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("close = %v (%v), want 1008 without an error frame", got, err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("closed after %v, before the text timeout", d)
	}

	// A session that gets text in time keeps going.
	ctx, c = dialSim(t, s, "/v1/bridges/unmute/tts/deepgram/aura:2", `{"type":"init","config":{}}`)
	if m, err := readType(ctx, t, c); err != nil || m["type"] != "ready" {
		t.Fatalf("first message = %v, %v; want ready", m, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"text","text":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := readType(pctx, t, c); pctx.Err() == nil {
		t.Fatalf("session with text ended or spoke unflushed text: %v", err)
	}
}

func TestHandshakeFaultRetryAfter(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Faults: MustFaults("*=handshake:429,retry-after=7")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, s.URL()+"/v1/bridges/unmute/tts/deepgram/aura:2", nil)
	if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("dial = %v, %v; want 429 with Retry-After 7", resp, err)
	}
	if _, _, err := ParseFault("*=drop@ready,retry-after=3"); err == nil {
		t.Error("retry-after accepted on a fault that is not a handshake")
	}
}
