package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
)

func mustDefault(t *testing.T) *Catalog {
	t.Helper()
	c, err := Default()
	if err != nil {
		t.Fatalf("Default() = %v", err)
	}
	return c
}

// TestDefault: the built-in catalog parses, and holds what its sources
// say of the models the gateway uses by default.
func TestDefault(t *testing.T) {
	t.Parallel()
	c := mustDefault(t)
	if c.Len() < 40 {
		t.Errorf("Default() has %d models, want the 40 or more SLNG documents", c.Len())
	}
	aura := c.Lookup("deepgram/aura:2")
	if aura == nil || aura.Kind != TTS || !aura.VoicesComplete || len(aura.Voices) != 91 || aura.DefaultVoice != "aura-2-thalia-en" {
		t.Fatalf("deepgram/aura:2 = %+v, want a TTS model with its 91 voices, complete, default aura-2-thalia-en", aura)
	}
	nova := c.Lookup("deepgram/nova:3")
	if nova == nil || nova.Kind != STT || !nova.EncodingsComplete || !slices.Equal(nova.Encodings, []string{"linear16", "mp3", "opus"}) {
		t.Fatalf("deepgram/nova:3 = %+v, want an STT model taking linear16, mp3 and opus only", nova)
	}
	if p := nova.Sends.Partials; p == nil || !*p {
		t.Error("deepgram/nova:3 does not say it sends partials")
	}
	if u := c.Lookup("soniox/speech-ai:rt-v4").Sends.UtteranceEnd; u == nil || !*u {
		t.Error("soniox/speech-ai:rt-v4 does not say it sends utterance_end")
	}
	for _, m := range c.Models() {
		if m.Kind == TTS && (!m.SampleRatesComplete || !m.EncodingsComplete) {
			t.Errorf("%s: the bridge's formats are not complete lists", m.Model)
		}
		if m.Kind == TTS && len(m.Voices) == 0 && !strings.Contains(m.Notes, "oices") {
			t.Errorf("%s: no voices and no note saying why", m.Model)
		}
	}
	if c.Lookup("no/such:model") != nil {
		t.Error("Lookup found a model that is not there")
	}
	if got := c.Models(); !slices.IsSortedFunc(got, func(a, b *Model) int { return strings.Compare(a.Model, b.Model) }) {
		t.Error("Models() is not ordered by id")
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	const ok = "  - model: a/b:c\n    kind: tts\n    source: s\n"
	tests := []struct {
		name, file, want string
	}{
		{"unknown field", ok + "    voice_complete: true\n", "unknown field"},
		{"bad id", "models:\n  - model: nope\n    kind: tts\n    source: s\n", "not a model id"},
		{"twice", "models:\n" + ok + ok, "listed twice"},
		{"kind", "models:\n  - model: a/b:c\n    kind: asr\n    source: s\n", "neither tts nor stt"},
		{"no source", "models:\n  - model: a/b:c\n    kind: tts\n", "no source"},
		{"encoding", "models:\n" + ok + "    encodings: [pcm]\n", `encoding "pcm"`},
		{"rate", "models:\n" + ok + "    sample_rates_hz: [96000]\n", "outside 8000-48000"},
		{"empty complete", "models:\n" + ok + "    voices_complete: true\n", "voices is said to be complete but is empty"},
		{"stt voices", "models:\n  - model: a/b:c\n    kind: stt\n    source: s\n    voices: [{id: v}]\n", "no voices"},
		{"tts partials", "models:\n" + ok + "    sends: {partials: true}\n", "speech-to-text models only"},
		{"voice twice", "models:\n" + ok + "    voices: [{id: v}, {id: V}]\n", `voice "V" listed twice`},
		{"no models", "models:\n", "lists no models"},
		{"empty", "models: []\n", "lists no models"},
		{"default voice", "models:\n" + ok + "    voices: [{id: v}]\n    voices_complete: true\n    default_voice: w\n", "not among its voices"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := tt.file
			if !strings.HasPrefix(file, "models:") {
				file = "models:\n" + file
			}
			_, err := Parse([]byte(file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`models:
  - model: a/tts:1
    kind: tts
    source: s
    encodings: [linear16, mulaw]
    encodings_complete: true
    sample_rates_hz: [8000, 24000]
    sample_rates_complete: true
    voices: [{id: aura-2-thalia-en}, {id: aura-2-zeus-en}]
    voices_complete: true
  - model: a/open:1
    kind: tts
    source: s
    encodings: [linear16]
    sample_rates_hz: [24000]
    voices: [{id: v}]
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, model string
		req         Request
		want        []Field
		msg         string
	}{
		{"offered", "a/tts:1", Request{"aura-2-thalia-en", "mulaw", 8000}, nil, ""},
		{"voice in another case", "a/tts:1", Request{"Aura-2-Thalia-EN", "linear16", 24000}, nil, ""},
		{"the model's default voice", "a/tts:1", Request{"", "linear16", 24000}, nil, ""},
		{"typo", "a/tts:1", Request{"aura-2-thalai-en", "linear16", 24000}, []Field{FieldVoice}, `did you mean "aura-2-thalia-en"?`},
		{"unknown voice", "a/tts:1", Request{"bob", "linear16", 24000}, []Field{FieldVoice}, `model a/tts:1 has no voice "bob" (CatalogService.ListVoices lists its voices)`},
		{"everything wrong", "a/tts:1", Request{"bob", "opus", 16000}, []Field{FieldVoice, FieldEncoding, FieldSampleRate}, "offers no 16000 Hz; it offers 8000, 24000 Hz"},
		{"open lists", "a/open:1", Request{"bob", "opus", 16000}, nil, ""},
		{"a long voice, cut", "a/tts:1", Request{strings.Repeat("aura-2-thalia-en", 10000), "linear16", 24000}, []Field{FieldVoice},
			`has no voice "aura-2-thalia-enaura-2-thalia-en`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := c.Lookup(tt.model).Check(tt.req)
			var fields []Field
			var msgs []string
			for _, p := range got {
				fields = append(fields, p.Field)
				msgs = append(msgs, p.Message)
			}
			if !slices.Equal(fields, tt.want) {
				t.Errorf("Check(%+v) fields = %v, want %v (%q)", tt.req, fields, tt.want, msgs)
			}
			if len(strings.Join(msgs, "")) > 1000 {
				t.Errorf("Check(...) says %d bytes: a caller's value must be cut", len(strings.Join(msgs, "")))
			}
			if tt.msg != "" && !strings.Contains(strings.Join(msgs, "\n"), tt.msg) {
				t.Errorf("Check(%+v) = %q, want a message containing %q", tt.req, msgs, tt.msg)
			}
		})
	}
}

func TestVoicesFor(t *testing.T) {
	t.Parallel()
	m := &Model{Voices: []Voice{{ID: "a", Language: "en"}, {ID: "b", Language: "en-US"}, {ID: "c", Language: "en-GB"}, {ID: "d", Language: "es"}, {ID: "e"}}}
	tests := []struct{ lang, want string }{
		{"", "abcde"}, {"en", "abc"}, {"EN-us", "ab"}, {"es-MX", "d"}, {"fr", ""},
	}
	for _, tt := range tests {
		var got string
		for _, v := range m.VoicesFor(tt.lang) {
			got += v.ID
		}
		if got != tt.want {
			t.Errorf("VoicesFor(%q) = %q, want %q", tt.lang, got, tt.want)
		}
	}
}

// writeRenamed writes s to path aside and renames it into place, as a
// ConfigMap update is: a reader never sees half a file.
func writeRenamed(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// entry is a catalog file's entry for an STT model id.
func entry(id string) string { return "  - model: " + id + "\n    kind: stt\n    source: test\n" }

// TestWatch: a changed file is in force at once; one that does not parse
// leaves the previous catalog, and both are counted.
func TestWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	write := func(s string) { writeRenamed(t, path, s) }
	if _, err := Watch(path, Options{}); err == nil {
		t.Error("Watch of a missing file succeeded")
	}
	write("models:\n" + entry("a/first:1"))
	m := NewMetrics(nil)
	l, err := Watch(path, Options{Reload: 5 * time.Millisecond, Logger: zaptest.NewLogger(t), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Current().Lookup("a/first:1") == nil || testutil.ToFloat64(m.models) != 1 {
		t.Fatal("the first catalog is not in force")
	}
	write("models:\n" + entry("a/second:1") + entry("a/third:1"))
	if poll.Until(ctx, 5*time.Millisecond, func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("ok")) == 1 }) != nil {
		t.Fatal("the changed file was not reloaded")
	}
	if l.Current().Lookup("a/second:1") == nil || l.Current().Lookup("a/first:1") != nil || testutil.ToFloat64(m.models) != 2 {
		t.Fatal("the changed catalog is not in force")
	}
	write("models:\n  - model: a/b:c\n")
	if poll.Until(ctx, 5*time.Millisecond, func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("error")) == 1 }) != nil {
		t.Fatal("the invalid file was not counted")
	}
	if l.Current().Lookup("a/second:1") == nil {
		t.Error("an invalid file replaced the catalog in force")
	}
}

// TestWatchChecks: a catalog Options.Check refuses is not put in force,
// at start or on a reload, which is counted as an error.
func TestWatchChecks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	write := func(s string) { writeRenamed(t, path, s) }
	needs := func(c *Catalog) error {
		if c.Lookup("a/needed:1") == nil {
			return errors.New("a/needed:1 is missing")
		}
		return nil
	}
	write("models:\n" + entry("a/other:1"))
	if _, err := Watch(path, Options{Check: needs, Logger: zaptest.NewLogger(t)}); err == nil || !strings.Contains(err.Error(), "a/needed:1 is missing") {
		t.Fatalf("Watch of a file Check refuses = %v", err)
	}
	write("models:\n" + entry("a/needed:1"))
	m := NewMetrics(nil)
	l, err := Watch(path, Options{Reload: 5 * time.Millisecond, Check: needs, Logger: zaptest.NewLogger(t), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	write("models:\n" + entry("a/other:1"))
	if poll.Until(ctx, 5*time.Millisecond, func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("error")) == 1 }) != nil {
		t.Fatal("the refused file was not counted")
	}
	if l.Current().Lookup("a/needed:1") == nil || l.Current().Lookup("a/other:1") != nil {
		t.Error("a refused file replaced the catalog in force")
	}
}

// TestWatchNeverRereads: by default the file is checked every 5 s; with a
// negative Reload it is read once and never again: no watcher runs. Not
// parallel, so that goleak sees only this test's goroutines.
func TestWatchNeverRereads(t *testing.T) {
	if got := DefaultOptions().Reload; got != 5*time.Second {
		t.Errorf("DefaultOptions().Reload = %v, want 5s", got)
	}
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(path, []byte("models:\n  - model: a/first:1\n    kind: stt\n    source: test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Watch(path, Options{Reload: -1, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	goleak.VerifyNone(t) // a watcher would be a goroutine of l's until Close
	if l.Current().Lookup("a/first:1") == nil {
		t.Error("the file is not in force")
	}
}

func TestMap(t *testing.T) {
	t.Parallel()
	c := mustDefault(t)
	dev, err := c.Map(func(m Model) Model {
		m.Source = "simulated: " + m.Source
		for i := range m.Voices {
			m.Voices[i].Name = "changed"
		}
		return m
	})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Len() != c.Len() || !strings.HasPrefix(dev.Lookup("deepgram/aura:2").Source, "simulated: ") {
		t.Errorf("Map did not map every model")
	}
	if c.Lookup("deepgram/aura:2").Voices[0].Name != "Amalthea" {
		t.Error("Map changed the catalog it mapped")
	}
	if _, err := c.Map(func(m Model) Model { m.Source = ""; return m }); err == nil {
		t.Error("Map accepted models without a source")
	}
}
