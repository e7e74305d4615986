package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunPrintsURLAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--api-key", "k", "--fault", "x/y=handshake:503"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ws://127.0.0.1:") {
		t.Fatalf("first line %q, %v", line, err)
	}
	url := strings.TrimSpace(line)

	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, _, err := websocket.Dial(dctx, url+"/v1/bridges/unmute/tts/deepgram/aura:2?token=k", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.CloseNow()
	if _, resp, err := websocket.Dial(dctx, url+"/v1/bridges/unmute/tts/x/y?token=k", nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("fault flag not applied: %v", err)
	}

	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--audio-form", "xml"},
		{"--fault", "nonsense"},
		{"--fault", "*=error"},
		{"--log-level", "chatty"},
		{"--profile", "kindest"},
		{"--model-profile", "rime/arcana"},
		{"--model-profile", "rime/arcana=kindest"},
		{"--latency", "-5ms"},
		{"--jitter", "-5ms"},
	} {
		// A flag wrongly accepted starts a simulator: the deadline stops
		// it, and the test fails instead of hanging.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := run(ctx, append(args, "--listen", "127.0.0.1:0"), io.Discard, io.Discard)
		cancel()
		if err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// startRun runs the command with args and returns its URL; the command
// stops when the test ends.
func startRun(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--listen", "127.0.0.1:0", "--log-level", "error"}, args...), pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("first line %q, %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // run prints nothing more; never block it
	return strings.TrimSpace(line)
}

// ttsTurnEnd speaks one turn on model and returns the types of the text
// frames after ready, ending with "close:N" if the socket closed, or with
// the answer to an unknown message sent after the turn.
func ttsTurnEnd(t *testing.T, url, model string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url+"/v1/bridges/unmute/tts/"+model, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", model, err)
	}
	defer c.CloseNow()
	for _, m := range []string{`{"type":"init","config":{}}`, `{"type":"text","text":"Hi."}`, `{"type":"flush"}`, `{"type":"sentinel"}`} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var types []string
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != -1 {
				return append(types, "close:"+code.String())
			}
			t.Fatalf("read: %v after %v", err, types)
		}
		if typ == websocket.MessageBinary {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("bad JSON %q", b)
		}
		if m["type"] == "ready" {
			continue
		}
		types = append(types, m["type"].(string))
		if m["type"] == "error" {
			return types
		}
	}
}

// TestRunProfiles: --profile applies to every model, --model-profile to
// one, and the default is the realistic rule.
func TestRunProfiles(t *testing.T) {
	t.Parallel()
	var url string
	for _, tc := range []struct {
		args  []string
		turns map[string]string // model: what follows its audio
	}{
		{[]string{"--profile", "flushed-only", "--model-profile", "cartesia/sonic:3=close-after-audio", "--model-profile", "x/y=realistic"},
			map[string]string{
				"deepgram/aura:2":  "segment_start segment_end flushed error",
				"cartesia/sonic:3": "segment_start close:StatusNormalClosure",
				"x/y":              "flushed error",
			}},
		{nil, map[string]string{ // realistic
			"deepgram/aura:2":  "flushed audio_end error",
			"soniox/tts-rt:v1": "audio_end error",
			"slng/rime/arcana": "close:StatusNormalClosure",
			"cartesia/sonic:3": "close:StatusNormalClosure",
		}},
	} {
		url = startRun(t, tc.args...)
		for model, want := range tc.turns {
			if got := strings.Join(ttsTurnEnd(t, url, model), " "); got != want {
				t.Errorf("%v %s: %q, want %q", tc.args, model, got, want)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, url+"/v1/bridges/unmute/tts/slng/deepgram/aura:2-en",
		&websocket.DialOptions{HTTPHeader: http.Header{"X-Slng-Provider-Key": {"pk_test"}}})
	if err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("BYOK on slng/ with the realistic default: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); !bytes.Contains(body, []byte("BYOK is only supported")) {
		t.Fatalf("BYOK refusal body %q", body)
	}
}

// TestRunLatency: --latency puts its delay on every message: a ping's
// pong comes back no sooner than a round trip.
func TestRunLatency(t *testing.T) {
	t.Parallel()
	url := startRun(t, "--latency", "25ms", "--jitter", "5ms")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url+"/v1/bridges/unmute/tts/deepgram/aura:2", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.Read(ctx) // reads the pong; ends at CloseNow
		readErr <- err
	}()
	start := time.Now()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("pong after %v, want at least the round trip of --latency 25ms --jitter 5ms (40ms)", d)
	}
	c.CloseNow()
	<-readErr
}

// TestRunHelpListsProfiles: -h names every profile.
func TestRunHelpListsProfiles(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_ = run(context.Background(), []string{"-h"}, io.Discard, &out)
	for _, name := range slngsim.ProfileNames() {
		if !strings.Contains(out.String(), " "+name) {
			t.Errorf("-h does not list %q", name)
		}
	}
	if !strings.Contains(out.String(), "-model-profile") {
		t.Error("-h does not document --model-profile")
	}
}
