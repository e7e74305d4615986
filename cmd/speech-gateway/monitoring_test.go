package main

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated files from their sources: deploy/monitoring/prometheusrule.yaml, and the settings tables of README.md and docs/operations.md")

const (
	prometheusRuleFile = "../../deploy/monitoring/prometheusrule.yaml"
	serviceMonitorFile = "../../deploy/monitoring/servicemonitor.yaml"
	serviceFile        = "../../deploy/kubernetes/service.yaml"
)

// prometheusRule is the PrometheusRule manifest that carries the rules of
// a plain rules file: its groups, indented under spec. Comments before
// groups: stay in the rules file.
func prometheusRule(rules string) string {
	_, groups, ok := strings.Cut(rules, "\ngroups:\n")
	if !ok {
		return ""
	}
	var b strings.Builder
	b.WriteString(`# Generated from alerts.rules.yaml by ` + "`make monitoring`" + `: edit that file, not this one.
# The alerts for the Prometheus Operator; docs/operations.md explains each.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: speech-gateway
  labels:
    app.kubernetes.io/name: speech-gateway
spec:
  groups:
`)
	for _, line := range strings.SplitAfter(groups, "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.String()
}

// TestPrometheusRuleMatchesRules: the PrometheusRule and the plain rules
// file carry the same rules. `make monitoring` (go test -run this -update)
// regenerates it.
func TestPrometheusRuleMatchesRules(t *testing.T) {
	t.Parallel()
	rules := readFile(t, rulesFile)
	want := prometheusRule(string(rules))
	if want == "" {
		t.Fatalf("%s has no top-level groups:", rulesFile)
	}
	if *update {
		if err := os.WriteFile(prometheusRuleFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := readFile(t, prometheusRuleFile)
	if string(got) != want {
		t.Fatalf("%s differs from what %s generates: run make monitoring", prometheusRuleFile, rulesFile)
	}
}

// TestServiceMonitorSelectsTheService: the ServiceMonitor scrapes the
// Service's admin port by the name and label the Service really has.
func TestServiceMonitorSelectsTheService(t *testing.T) {
	t.Parallel()
	sm := readFile(t, serviceMonitorFile)
	svc := readFile(t, serviceFile)
	port := regexp.MustCompile(`(?m)^\s+- port: (\S+)$`).FindSubmatch(sm)
	if port == nil || !regexp.MustCompile(`(?m)^\s+- name: `+regexp.QuoteMeta(string(port[1]))+`\n\s+port: 9090$`).Match(svc) {
		t.Errorf("the ServiceMonitor's port %q is not the Service's admin port 9090", port)
	}
	for _, want := range []string{"app.kubernetes.io/name: speech-gateway", "path: /metrics"} {
		if !strings.Contains(string(sm), want) {
			t.Errorf("the ServiceMonitor lacks %q", want)
		}
	}
	if !strings.Contains(string(svc), "app.kubernetes.io/name: speech-gateway") {
		t.Error("the Service lacks the label the ServiceMonitor selects")
	}
}

// TestMonitoringUsesDocumentedMetrics: every gateway metric that an alert
// or a dashboard panel uses is in docs/operations.md's metrics table, which
// TestAlertsEndToEnd proves each moves.
func TestMonitoringUsesDocumentedMetrics(t *testing.T) {
	t.Parallel()
	documented := documentedMetrics(t)
	name := regexp.MustCompile(`\b((?:speech_gateway|grpc_server)_[a-z_]+?)(?:_bucket|_count|_sum)?\b`)
	for _, file := range []string{rulesFile, dashboardFile} {
		b := readFile(t, file)
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(documented, m[1]) {
				t.Errorf("%s uses %s, which docs/operations.md does not list", file, m[1])
			}
		}
	}
}
