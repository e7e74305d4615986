package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// writeKey replaces the key file atomically, as Kubernetes swaps a mounted
// Secret.
func writeKey(t *testing.T, path, key string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestKeyWatcher(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "api-key")
	writeKey(t, path, "key-one")
	var got []string
	w := newKeyWatcher(path, "key-one", func(k string) { got = append(got, k) }, zaptest.NewLogger(t), prom.NewRegistry())
	w.file.Check()
	writeKey(t, path, "key-two")
	w.file.Check()
	w.file.Check()
	// A missing, empty or malformed file keeps the key in use.
	for _, bad := range []string{"", "two words"} {
		writeKey(t, path, bad)
		w.file.Check()
	}
	os.Remove(path)
	w.file.Check()
	writeKey(t, path, "key-three")
	w.file.Check()
	if strings.Join(got, ",") != "key-two,key-three" {
		t.Errorf("changes = %v, want key-two then key-three", got)
	}
	if n := testutil.ToFloat64(w.reloads.WithLabelValues("changed")); n != 2 {
		t.Errorf("changed = %v, want 2", n)
	}
	if n := testutil.ToFloat64(w.reloads.WithLabelValues("error")); n != 3 {
		t.Errorf("errors = %v, want 3", n)
	}
}

// TestRunRotatesKey: the real gateway, given its key in a file, notices
// the file change, speaks with the new key to an SLNG that now refuses the
// old one, and lets a stream in flight on the old key finish.
func TestRunRotatesKey(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "sk_old_0123456789abcdef", "sk_new_fedcba9876543210"
	path := filepath.Join(t.TempDir(), "api-key")
	writeKey(t, path, oldKey)
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: oldKey, Realtime: true})
	g := startGateway(t, []string{"--key-reload-interval", "50ms"}, map[string]string{
		"SLNG_API_KEY_FILE": path,
		"SLNG_BASE_URL":     sim.URL(),
	})
	conn := g.dial(t)
	tts := speechv1.NewTextToSpeechServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	speakText := func(text string) (string, error) {
		stream, err := tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
		if err != nil {
			return "", err
		}
		var audio []byte
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return "", err
			}
			audio = append(audio, m.GetAudio().GetData()...)
		}
		return slngsim.Decode(audio, "linear16", 24000)
	}

	// A stream on the old key, paced in real time, spans the rotation.
	long := strings.Repeat("Spoken across the rotation. ", 6)
	var wg sync.WaitGroup
	var inFlight string
	var inFlightErr error
	started := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		stream, err := tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: long})
		if err != nil {
			inFlightErr = err
			close(started)
			return
		}
		var audio []byte
		for first := true; ; first = false {
			m, err := stream.Recv()
			if first {
				close(started)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				inFlightErr = err
				return
			}
			audio = append(audio, m.GetAudio().GetData()...)
		}
		inFlight, inFlightErr = slngsim.Decode(audio, "linear16", 24000)
	}()
	<-started

	sim.SetAPIKeys(newKey)
	writeKey(t, path, newKey)
	// Wait until the gateway reports the change, then speak: SLNG now
	// accepts only the new key.
	g.logs.waitFor(ctx, t, "SLNG key changed")
	if _, m := g.get(t, g.adminLis, "/metrics"); !strings.Contains(m, `speech_gateway_key_reloads_total{result="changed"} 1`) {
		t.Error("the key change is not on /metrics")
	}
	if got, err := speakText("After the rotation."); err != nil || got != "After the rotation." {
		t.Fatalf("after the rotation: %q, %v", got, err)
	}
	wg.Wait()
	if inFlightErr != nil || inFlight != long {
		t.Fatalf("the stream in flight: %v, decoded %d of %d bytes", inFlightErr, len(inFlight), len(long))
	}
	if n := sim.Stats().Rejected; n != 0 {
		t.Errorf("SLNG refused %d handshakes: the old key was used after the change", n)
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{oldKey, newKey} {
		if strings.Contains(g.logs.String(), k) {
			t.Errorf("a key reached the logs")
		}
	}
}
