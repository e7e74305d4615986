package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/service"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

const (
	readmeFile     = "../../README.md"
	operationsFile = "../../docs/operations.md"
)

// generated is a part of a documentation file that the settings table
// generates, between two marker lines.
type generated struct {
	file, begin, end string
	text             func() string
}

var generatedDocs = []generated{
	{readmeFile, "<!-- settings: generated from cmd/speech-gateway/settings.go by `make docs` -->", "<!-- /settings -->",
		func() string { return readmeTable(defaultConfig()) }},
	{operationsFile, "<!-- renamed: generated from cmd/speech-gateway/settings.go by `make docs` -->", "<!-- /renamed -->", renamedTable},
}

// TestGeneratedDocs: the README's configuration table and the table of
// renamed variables in docs/operations.md are what the settings table
// generates, defaults included. `make docs` (go test -run this -update)
// rewrites them.
func TestGeneratedDocs(t *testing.T) {
	t.Parallel()
	for _, g := range generatedDocs {
		doc := string(readFile(t, g.file))
		before, rest, ok := strings.Cut(doc, g.begin+"\n")
		_, after, ok2 := strings.Cut(rest, g.end)
		if !ok || !ok2 {
			t.Fatalf("%s lacks the lines %q and %q around its generated table", g.file, g.begin, g.end)
		}
		want := before + g.begin + "\n" + g.text() + g.end + after
		if *update {
			if err := os.WriteFile(g.file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if doc != want {
			t.Errorf("%s: its generated table differs from the settings: run make docs", g.file)
		}
	}
}

// TestSettingsTable: every setting has its own field, its own flag and an
// environment variable named by the one rule, and -h lists them all with
// their defaults.
func TestSettingsTable(t *testing.T) {
	t.Parallel()
	c := defaultConfig()
	fields := map[any]string{}
	names := map[string]bool{}
	for _, s := range settings {
		p := s.field(c)
		if _, isValue := p.(flag.Value); !isValue {
			if other, ok := fields[p]; ok {
				t.Errorf("--%s and --%s set the same field", s.name, other)
			}
			fields[p] = s.name
		}
		if names[s.name] {
			t.Errorf("--%s twice", s.name)
		}
		names[s.name] = true
		if want := "SPEECH_GATEWAY_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_")); envName(s.name) != want {
			t.Errorf("--%s reads %s, want %s", s.name, envName(s.name), want)
		}
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		if err := bind(fs, s.name, p); err != nil {
			t.Error(err)
		} else if err := fs.Set(s.name, show(p)); err != nil {
			t.Errorf("--%s does not read back its own default: %v", s.name, err)
		}
	}
	var usage bytes.Buffer
	if _, err := parseConfig([]string{"-h"}, envFrom(nil), &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"--max-streams [SPEECH_GATEWAY_MAX_STREAMS]", "(default no limit; negative: no limit)",
		"--pool-max-sessions [SPEECH_GATEWAY_POOL_MAX_SESSIONS]", "(default 256)",
		"--max-stream-duration [SPEECH_GATEWAY_MAX_STREAM_DURATION]", "(default 1h; negative: no limit)",
		"(environment only) [SPEECH_GATEWAY_SLNG_API_KEY]", "0 means the default"} {
		if !strings.Contains(strings.Join(strings.Fields(usage.String()), " "), want) {
			t.Errorf("-h lacks %q:\n%s", want, usage.String())
		}
	}
}

// TestZeroMeansTheDefault: 0 sets every duration and limit to its
// default, including the ones where it used to mean none
// (--key-reload-interval, the HTTP/2 windows, --dial-rate).
func TestZeroMeansTheDefault(t *testing.T) {
	t.Parallel()
	def := defaultConfig()
	for _, s := range settings {
		zero := "0"
		if _, number := sign(s.field(def)); !number || s.envOnly {
			continue
		}
		if _, isDuration := s.field(def).(*time.Duration); isDuration {
			zero = "0s"
		}
		c, err := parseConfig([]string{"--dev", "--" + s.name, zero}, envFrom(nil), io.Discard)
		if err != nil {
			t.Errorf("--%s %s: %v", s.name, zero, err)
			continue
		}
		if got, want := show(s.field(c)), show(s.field(def)); got != want {
			t.Errorf("--%s %s = %s, want the default %s", s.name, zero, got, want)
		}
	}
	// The defaults are the packages' own.
	c, err := parseConfig([]string{"--dev", "--max-stream-duration", "0", "--pool-max-sessions", "0"}, envFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.service.MaxStreamDuration != service.DefaultConfig().MaxStreamDuration || c.pool.MaxSessions != slngpool.DefaultOptions().MaxSessions {
		t.Errorf("0 gave %v and %d, want the packages' defaults", c.service.MaxStreamDuration, c.pool.MaxSessions)
	}
}

// TestNegativeMeansNone: a negative duration or limit means what its
// setting calls none, and reaches its package as it is; where there is no
// none, it is refused with a message naming the flag.
func TestNegativeMeansNone(t *testing.T) {
	t.Parallel()
	def := defaultConfig()
	for _, s := range settings {
		_, number := sign(s.field(def))
		if !number || s.envOnly {
			continue
		}
		neg := "-1"
		if _, isDuration := s.field(def).(*time.Duration); isDuration {
			neg = "-1s"
		}
		args := []string{"--dev", "--debug-listen", "127.0.0.1:0", "--" + s.name, neg}
		if strings.HasPrefix(s.name, "http2-") { // the two windows go together
			args = append(args, "--http2-stream-window", "-1", "--http2-conn-window", "-1")
		}
		c, err := parseConfig(args, envFrom(nil), io.Discard)
		if s.off == "" {
			if err == nil || !strings.Contains(err.Error(), "--"+s.name+" cannot be negative") {
				t.Errorf("--%s %s: %v, want it refused", s.name, neg, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("--%s %s (%s): %v", s.name, neg, s.off, err)
			continue
		}
		if sign, _ := sign(s.field(c)); sign >= 0 {
			t.Errorf("--%s %s became %s", s.name, neg, show(s.field(c)))
		}
	}
}

// TestOldEnvironmentNames: the names read before the one rule are read for
// one release, with a warning that names the new one; the new name wins
// when both are set, and the gateway says so when it starts.
func TestOldEnvironmentNames(t *testing.T) {
	t.Parallel()
	c, err := parseConfig([]string{"--dev"}, envFrom(map[string]string{
		"MAX_STREAMS":                 "7",
		"LISTEN_ADDR":                 "127.0.0.1:1",
		"POOL_WARM":                   "false",
		"SPEECH_GATEWAY_DIAL_RATE":    "3",
		"DIAL_RATE":                   "4",
		"SPEECH_GATEWAY_DEV_REALTIME": "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.service.MaxStreams != 7 || c.serve.listen != "127.0.0.1:1" || !c.pool.DisableWarm || c.pool.DialRate != 3 || !c.serve.devRealtime {
		t.Errorf("parsed max streams %d, listen %q, warm off %v, dial rate %v, realtime %v",
			c.service.MaxStreams, c.serve.listen, c.pool.DisableWarm, c.pool.DialRate, c.serve.devRealtime)
	}
	want := []string{
		"LISTEN_ADDR is read for this release only: rename it SPEECH_GATEWAY_LISTEN",
		"DIAL_RATE is ignored: SPEECH_GATEWAY_DIAL_RATE is set",
		"MAX_STREAMS is read for this release only: rename it SPEECH_GATEWAY_MAX_STREAMS",
		"POOL_WARM is read for this release only: rename it SPEECH_GATEWAY_POOL_WARM",
	}
	all := strings.Join(c.warnings, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
	if len(c.warnings) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(c.warnings), len(want), all)
	}

	// The key and its file by their old names, and the warning in the
	// start-up logs.
	path, region := t.TempDir()+"/key", envName("slng-region")
	if err := os.WriteFile(path, []byte("sk_old_name\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{{"SLNG_API_KEY": "sk_old_name", region: "us-east"}, {"SLNG_API_KEY_FILE": path, region: "us-east"}} {
		c, err := parseConfig(nil, envFrom(env), io.Discard)
		if err != nil || c.client.APIKey != "sk_old_name" {
			t.Errorf("%v: %v", env, err)
		}
	}
	g := startGateway(t, []string{"--dev"}, map[string]string{"MAX_STREAMS": "5"})
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.logs.String(), "MAX_STREAMS is read for this release only: rename it SPEECH_GATEWAY_MAX_STREAMS") {
		t.Errorf("the start-up logs do not name the new variable:\n%s", g.logs)
	}
}
