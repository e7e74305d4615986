package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// The manifests in deploy/kubernetes that these tests hold to the gateway
// they deploy. make validate-manifests checks their schemas; these check
// that what they say agrees with what the binary does.
const (
	deploymentFile    = "../../deploy/kubernetes/deployment.yaml"
	hpaFile           = "../../deploy/kubernetes/hpa.yaml"
	networkPolicyFile = "../../deploy/kubernetes/networkpolicy.yaml"
	linkerdPatchFile  = "../../deploy/kubernetes/components/linkerd/gateway.yaml"
	linkerdProbesFile = "../../deploy/kubernetes/components/linkerd/probes.yaml"
	scaledObjectFile  = "../../deploy/kubernetes/components/keda/scaledobject.yaml"
	istioEgressFile   = "../../deploy/kubernetes/components/istio/egress.yaml"
	istioStreamsFile  = "../../deploy/kubernetes/components/istio/streams.yaml"
)

// manifests parses the YAML documents of file, each as generic JSON.
func manifests(t *testing.T, file string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, doc := range strings.Split("\n"+string(readFile(t, file)), "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
	return docs
}

// manifest is the one document of kind in file.
func manifest(t *testing.T, file, kind string) map[string]any {
	t.Helper()
	for _, m := range manifests(t, file) {
		if m["kind"] == kind {
			return m
		}
	}
	t.Fatalf("%s has no %s", file, kind)
	return nil
}

// field walks m along keys (map keys, or list indexes as numbers), nil where
// there is nothing.
func field(m any, keys ...string) any {
	for _, k := range keys {
		switch v := m.(type) {
		case map[string]any:
			m = v[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(v) {
				return nil
			}
			m = v[i]
		default:
			return nil
		}
	}
	return m
}

// list is the list at keys in m, nil if there is none.
func list(m any, keys ...string) []any {
	l, _ := field(m, keys...).([]any)
	return l
}

// gatewayContainer is the speech-gateway container of the base Deployment.
func gatewayContainer(t *testing.T) map[string]any {
	t.Helper()
	for _, c := range list(manifest(t, deploymentFile, "Deployment"), "spec", "template", "spec", "containers") {
		if field(c, "name") == "speech-gateway" {
			return c.(map[string]any)
		}
	}
	t.Fatalf("%s has no speech-gateway container", deploymentFile)
	return nil
}

// containerPort is the number of the gateway container's port called name.
func containerPort(t *testing.T, name string) int {
	t.Helper()
	for _, p := range list(gatewayContainer(t), "ports") {
		if field(p, "name") == name {
			return int(field(p, "containerPort").(float64))
		}
	}
	t.Fatalf("%s: the gateway has no port %q", deploymentFile, name)
	return 0
}

// containerEnv is the value of the gateway container's variable name.
func containerEnv(t *testing.T, name string) string {
	t.Helper()
	for _, e := range list(gatewayContainer(t), "env") {
		if field(e, "name") == name {
			return field(e, "value").(string)
		}
	}
	t.Fatalf("%s: the gateway has no %s", deploymentFile, name)
	return ""
}

// TestLinkerdProbesOnAdminPort: under Linkerd's all-authenticated policy
// the kubelet's gRPC probes on the serving port are refused, so the
// component probes the admin port over HTTP, which stays outside the proxy,
// on paths the admin handler answers as the gRPC health service would: ok
// while serving, and /readyz not ready from the start of shutdown.
func TestLinkerdProbesOnAdminPort(t *testing.T) {
	t.Parallel()
	admin := strconv.Itoa(containerPort(t, "admin"))
	skipped := field(manifest(t, linkerdPatchFile, "Deployment"), "spec", "template", "metadata", "annotations",
		"config.linkerd.io/skip-inbound-ports")
	if s, _ := skipped.(string); !slices.Contains(strings.Split(s, ","), admin) {
		t.Errorf("%s: skip-inbound-ports = %v, want the admin port %s outside the proxy", linkerdPatchFile, skipped, admin)
	}

	var ops []map[string]any
	if err := yaml.Unmarshal(readFile(t, linkerdProbesFile), &ops); err != nil {
		t.Fatal(err)
	}
	var serving atomic.Bool
	h := adminHandler(prom.NewRegistry(), &serving)
	status := func(p string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		return rec.Code
	}
	probes := map[string]bool{}
	for _, op := range ops {
		probe := path.Base(field(op, "path").(string))
		probes[probe] = true
		p, _ := field(op, "value", "httpGet", "path").(string)
		if field(op, "op") != "replace" || field(op, "value", "grpc") != nil || field(op, "value", "httpGet", "port") != "admin" {
			t.Errorf("%s: %s is not replaced by an HTTP probe of the admin port: %v", linkerdProbesFile, probe, op)
			continue
		}
		serving.Store(true)
		if got := status(p); got != http.StatusOK {
			t.Errorf("%s probes %s, which answers %d while serving, want 200", probe, p, got)
		}
		serving.Store(false)
		want := http.StatusOK
		if probe == "readinessProbe" {
			want = http.StatusServiceUnavailable
		}
		if got := status(p); got != want {
			t.Errorf("%s probes %s, which answers %d while draining, want %d", probe, p, got, want)
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if gc := field(gatewayContainer(t), probe, "grpc"); gc != nil && !probes[probe] {
			t.Errorf("%s: the base's gRPC %s is left in place under Linkerd", linkerdProbesFile, probe)
		}
	}
}

// TestNetworkPolicyMatchesPorts: the gateway's NetworkPolicy admits
// callers to the gRPC port only, monitoring to the admin port, and lets
// nothing out to arbitrary addresses but DNS and HTTPS.
func TestNetworkPolicyMatchesPorts(t *testing.T) {
	t.Parallel()
	np := manifest(t, networkPolicyFile, "NetworkPolicy")
	if got := field(np, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name"); got != "speech-gateway" {
		t.Errorf("the NetworkPolicy selects %v, want the gateway's pods", got)
	}
	ports := func(rule any) []int {
		var out []int
		for _, p := range list(rule, "ports") {
			out = append(out, int(field(p, "port").(float64)))
		}
		return out
	}
	grpcPort, adminPort := containerPort(t, "grpc"), containerPort(t, "admin")
	var callers, monitoring []int
	for _, rule := range list(np, "spec", "ingress") {
		from := list(rule, "from")
		switch {
		case len(from) == 1 && field(from[0], "namespaceSelector", "matchLabels", "speech-gateway/caller") == "true":
			callers = append(callers, ports(rule)...)
		case len(from) == 1 && field(from[0], "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name") == "monitoring":
			monitoring = append(monitoring, ports(rule)...)
		default:
			t.Errorf("an ingress rule admits neither callers nor monitoring: %v", rule)
		}
	}
	if !slices.Equal(callers, []int{grpcPort}) {
		t.Errorf("callers' namespaces reach ports %v, want the gRPC port %d alone", callers, grpcPort)
	}
	if !slices.Contains(monitoring, adminPort) || slices.Contains(monitoring, grpcPort) {
		t.Errorf("monitoring reaches ports %v, want the admin port %d and not gRPC", monitoring, adminPort)
	}
	var anywhere []int
	for _, rule := range list(np, "spec", "egress") {
		if len(list(rule, "to")) == 0 {
			anywhere = append(anywhere, ports(rule)...)
		}
	}
	slices.Sort(anywhere)
	if !slices.Equal(anywhere, []int{53, 53, 443}) {
		t.Errorf("egress to any address on ports %v, want DNS (53, UDP and TCP) and 443 only", anywhere)
	}
}

// TestScaledObjectScalesOnStreams: the KEDA component scales on the
// gateway's documented active-streams gauge, at a target per replica below
// --max-streams, beside the base HPA's CPU target and replica bounds.
func TestScaledObjectScalesOnStreams(t *testing.T) {
	t.Parallel()
	so := manifest(t, scaledObjectFile, "ScaledObject")
	hpa := manifest(t, hpaFile, "HorizontalPodAutoscaler")
	for _, k := range [][2]string{{"minReplicaCount", "minReplicas"}, {"maxReplicaCount", "maxReplicas"}} {
		if a, b := field(so, "spec", k[0]), field(hpa, "spec", k[1]); a != b {
			t.Errorf("ScaledObject %s = %v, want the HPA's %s %v", k[0], a, k[1], b)
		}
	}
	maxStreams, err := strconv.Atoi(containerEnv(t, "SPEECH_GATEWAY_MAX_STREAMS"))
	if err != nil {
		t.Fatal(err)
	}
	var cpu, streams any
	for _, tr := range list(so, "spec", "triggers") {
		switch field(tr, "type") {
		case "cpu":
			cpu = field(tr, "metadata", "value")
		case "prometheus":
			streams = tr
		}
	}
	if want := strconv.Itoa(int(field(hpa, "spec", "metrics", "0", "resource", "target", "averageUtilization").(float64))); cpu != want {
		t.Errorf("the ScaledObject's CPU target is %v%%, want the HPA's %s%%", cpu, want)
	}
	query, _ := field(streams, "metadata", "query").(string)
	if !strings.Contains(query, "speech_gateway_streams_active") || !slices.Contains(documentedMetrics(t), "speech_gateway_streams_active") {
		t.Errorf("the streams trigger's query %q does not use the documented speech_gateway_streams_active", query)
	}
	threshold, err := strconv.Atoi(field(streams, "metadata", "threshold").(string))
	if err != nil || threshold <= 0 || threshold >= maxStreams || field(streams, "metricType") != "AverageValue" {
		t.Errorf("streams per replica: threshold %d (%v), metric type %v; want an AverageValue below --max-streams %d",
			threshold, err, field(streams, "metricType"), maxStreams)
	}
}

// TestIstioSettingsFitTheGateway: the Istio component lets the gateway out
// to the SLNG host it dials for every known region and for the manifest's
// own, and its sidecar's stream idle timeout is above the gateway's own
// --caller-idle-timeout, so that an idle caller gets the gateway's
// described error, not a reset.
func TestIstioSettingsFitTheGateway(t *testing.T) {
	t.Parallel()
	se := manifest(t, istioEgressFile, "ServiceEntry")
	dr := manifest(t, istioEgressFile, "DestinationRule")
	manifestRegion := containerEnv(t, "SPEECH_GATEWAY_SLNG_REGION")
	for _, region := range append([]string{manifestRegion}, slngclient.KnownRegions...) {
		client, err := slngclient.New(slngclient.Options{Region: region})
		if err != nil {
			t.Fatal(err)
		}
		host := strings.TrimPrefix(client.Host(), "wss://")
		for _, m := range []map[string]any{se, dr} {
			hosts := list(m, "spec", "hosts")
			if h := field(m, "spec", "host"); h != nil {
				hosts = []any{h}
			}
			if !slices.ContainsFunc(hosts, func(h any) bool { return istioHostMatches(h.(string), host) }) {
				t.Errorf("the %s names %v, not %s", m["kind"], hosts, host)
			}
		}
	}
	if got := field(se, "spec", "ports", "0", "number"); got != float64(443) {
		t.Errorf("the ServiceEntry's port is %v, want 443", got)
	}

	c, err := parseConfig(nil, envFrom(map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k", "SPEECH_GATEWAY_SLNG_REGION": manifestRegion}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ef := manifest(t, istioStreamsFile, "EnvoyFilter")
	patch := list(ef, "spec", "configPatches")
	v, _ := field(patch, "0", "patch", "value", "typed_config", "stream_idle_timeout").(string)
	idle, err := time.ParseDuration(v)
	if err != nil || idle <= c.service.CallerIdleTimeout {
		t.Errorf("the sidecar's stream_idle_timeout is %q (%v), want above --caller-idle-timeout %v", v, err, c.service.CallerIdleTimeout)
	}
	if got := field(patch, "0", "match", "listener", "portNumber"); got != float64(containerPort(t, "grpc")) {
		t.Errorf("the EnvoyFilter patches port %v, want the gateway's gRPC port", got)
	}
}

// istioHostMatches reports whether an Istio host name, which may start
// with a "*." wildcard, covers host.
func istioHostMatches(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, rest) && len(host) > len(rest)
	}
	return pattern == host
}
