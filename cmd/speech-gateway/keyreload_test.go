package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
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
// old one, and lets a stream in flight on the old key go on, on its
// session.
func TestRunRotatesKey(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "sk_old_0123456789abcdef", "sk_new_fedcba9876543210"
	path := filepath.Join(t.TempDir(), "api-key")
	writeKey(t, path, oldKey)
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: oldKey})
	// No standbys: SLNG sees the streams' sessions and nothing else.
	g := startGateway(t, []string{"--key-reload-interval", "50ms", "--pool-warm=false"}, map[string]string{
		"SPEECH_GATEWAY_SLNG_API_KEY_FILE": path,
		"SPEECH_GATEWAY_SLNG_BASE_URL":     sim.URL(),
	})
	tts := speechv1.NewTextToSpeechServiceClient(g.dial(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A stream on the old key speaks a turn, and stays open across the
	// rotation.
	inFlight, err := tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	speakTurn := func(text string) {
		t.Helper()
		if err := inFlight.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: text, Flush: true}}}); err != nil {
			t.Fatal(err)
		}
		var audio []byte
		for {
			m, err := inFlight.Recv()
			if err != nil {
				t.Fatalf("the stream in flight: %v", err)
			}
			audio = append(audio, m.GetAudio().GetData()...)
			if m.GetAudioEnd() != nil {
				break
			}
		}
		if got, err := slngsim.Decode(audio, "linear16", 24000); err != nil || got != text {
			t.Fatalf("the stream in flight spoke %q (%v), want %q", got, err, text)
		}
	}
	if err := inFlight.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
		t.Fatal(err)
	}
	speakTurn("Before the rotation.")

	sim.SetAPIKeys(newKey)
	writeKey(t, path, newKey)
	// Wait until the gateway reports the change, then speak: SLNG now
	// accepts only the new key.
	g.logs.waitFor(ctx, t, "SLNG key changed")
	if _, m := g.get(t, g.adminLis, "/metrics"); !strings.Contains(m, `speech_gateway_key_reloads_total{result="changed"} 1`) {
		t.Error("the key change is not on /metrics")
	}
	if audio, err := synthesizeText(ctx, g.dial(t), "After the rotation."); err != nil {
		t.Fatalf("after the rotation: %v", err)
	} else if got, err := slngsim.Decode(audio, "linear16", 24000); err != nil || got != "After the rotation." {
		t.Fatalf("after the rotation: %q, %v", got, err)
	}
	// The stream in flight still speaks, on the session it had.
	speakTurn("Still on the old key.")
	if err := inFlight.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := inFlight.Recv(); err != nil {
			if err != io.EOF {
				t.Fatalf("the stream in flight ended with %v", err)
			}
			break
		}
	}
	if n := sim.Stats().Connections; n != 2 {
		t.Errorf("SLNG accepted %d connections, want 2: the stream in flight's, and one with the new key", n)
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
