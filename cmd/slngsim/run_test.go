package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
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
	} {
		if err := run(context.Background(), append(args, "--listen", "127.0.0.1:0"), io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
