package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestVersionFlag: --version needs no key and no other flag, and stops
// before anything starts.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--version", "--listen", "127.0.0.1:0"}, envFrom(nil), &stderr)
	if !errors.Is(err, errShowVersion) {
		t.Fatalf("run(--version) = %v, want errShowVersion", err)
	}
	if stderr.Len() != 0 {
		t.Fatalf("run(--version) wrote %q", stderr.String())
	}
	if line := buildInfo().Line("speech-gateway"); !strings.HasPrefix(line, "speech-gateway ") || !strings.Contains(line, "go1.") {
		t.Fatalf("version line %q", line)
	}
}

// TestOpsMetrics: the build, the stream limit and the draining state are on
// /metrics from the start, and the version is in the start-up logs.
func TestOpsMetrics(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--log-format", "json", "--max-streams", "7"}, nil)
	_, body := g.get(t, g.adminLis, "/metrics")
	families := parseMetrics(t, body)
	value := func(name string) float64 {
		t.Helper()
		f := families[name]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Fatalf("%s: %v, want one series", name, f)
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	if v := value("speech_gateway_streams_limit"); v != 7 {
		t.Errorf("speech_gateway_streams_limit = %v, want 7", v)
	}
	if v := value("speech_gateway_draining"); v != 0 {
		t.Errorf("speech_gateway_draining = %v, want 0 while serving", v)
	}
	if v := value("speech_gateway_build_info"); v != 1 {
		t.Errorf("speech_gateway_build_info = %v, want 1", v)
	}
	info := buildInfo()
	labels := map[string]string{}
	for _, l := range families["speech_gateway_build_info"].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != info.Version || labels["revision"] != info.Revision || labels["go_version"] != info.GoVersion {
		t.Errorf("build_info labels %v, want %+v", labels, info)
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.logs.String(), `"msg":"starting","version":"`+info.Version+`","revision":"`+info.Revision+`"`) {
		t.Errorf("no start-up line with the version:\n%s", g.logs)
	}
}
