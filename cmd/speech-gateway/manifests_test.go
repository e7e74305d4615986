package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	"sigs.k8s.io/yaml"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/fleet"
)

// manifestEnv is the value of the environment variable name in the first
// container of a Deployment patch.
func manifestEnv(t *testing.T, path, name string) string {
	t.Helper()
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Env []struct{ Name, Value string }
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(readFile(t, path), &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	t.Fatalf("%s sets no %s", path, name)
	return ""
}

// TestShippedIdentitySettings: the access-policy and Istio components take
// caller ids from the mesh only, from an x-forwarded-client-cert element
// that a speech-gateway sidecar set, and the gateway accepts them with the
// shipped policy: a certificate reported by another proxy, or an
// x-caller-id, names nobody.
func TestShippedIdentitySettings(t *testing.T) {
	t.Parallel()
	const dir = "../../deploy/kubernetes/components/"
	for _, c := range []string{"access-policy", "istio"} {
		identity := manifestEnv(t, dir+c+"/gateway.yaml", "SPEECH_GATEWAY_CALLER_IDENTITY")
		if trust := manifestEnv(t, dir+c+"/gateway.yaml", "SPEECH_GATEWAY_TRUST_ASSERTED_CALLER_IDENTITY"); trust != "false" {
			t.Errorf("%s: TRUST_ASSERTED_CALLER_IDENTITY = %q, want false", c, trust)
		}
		f := fleet.New(fleet.Options{})
		g, err := callers.New(f, callers.Options{Identity: identity, PolicyFile: dir + "access-policy/policy.yaml"})
		if err != nil {
			f.Close()
			t.Fatalf("%s: CALLER_IDENTITY=%s with the shipped policy: %v", c, identity, err)
		}
		const caller = "spiffe://cluster.local/ns/checkout/sa/voice-bot"
		for by, want := range map[string]string{
			"spiffe://cluster.local/ns/speech/sa/speech-gateway": caller,
			"spiffe://cluster.local/ns/edge/sa/ingressgateway":   callers.Unknown,
		} {
			md := metadata.Pairs("x-forwarded-client-cert", "By="+by+";Hash=abc;URI="+caller, "x-caller-id", "svc-a")
			if got := g.Identify(metadata.NewIncomingContext(t.Context(), md)); got != want {
				t.Errorf("%s: certificate reported by %s: caller %q, want %q", c, by, got, want)
			}
		}
		g.Close()
		f.Close()
	}
}

// TestShippedPeerAuthentication: the Istio component ships a
// PeerAuthentication that puts the gateway's pods, selected by the
// Deployment's own labels, under STRICT mutual TLS, leaving only the admin
// port (probes, metrics) open to callers outside the mesh.
func TestShippedPeerAuthentication(t *testing.T) {
	t.Parallel()
	var component struct{ Resources []string }
	if err := yaml.Unmarshal(readFile(t, "../../deploy/kubernetes/components/istio/kustomization.yaml"), &component); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(component.Resources, "peerauthentication.yaml") {
		t.Errorf("the Istio component's resources %v leave out peerauthentication.yaml", component.Resources)
	}
	var pa struct {
		APIVersion string `json:"apiVersion"`
		Kind       string
		Spec       struct {
			Selector      struct{ MatchLabels map[string]string }
			Mtls          struct{ Mode string }
			PortLevelMtls map[string]struct{ Mode string }
		}
	}
	if err := yaml.Unmarshal(readFile(t, "../../deploy/kubernetes/components/istio/peerauthentication.yaml"), &pa); err != nil {
		t.Fatal(err)
	}
	var dep struct {
		Spec struct {
			Template struct {
				Metadata struct{ Labels map[string]string }
			}
		}
	}
	if err := yaml.Unmarshal(readFile(t, "../../deploy/kubernetes/deployment.yaml"), &dep); err != nil {
		t.Fatal(err)
	}
	if pa.APIVersion != "security.istio.io/v1" || pa.Kind != "PeerAuthentication" || pa.Spec.Mtls.Mode != "STRICT" {
		t.Fatalf("got %s %s mode %q, want a security.istio.io/v1 PeerAuthentication, STRICT", pa.APIVersion, pa.Kind, pa.Spec.Mtls.Mode)
	}
	if len(pa.Spec.Selector.MatchLabels) == 0 {
		t.Fatal("the PeerAuthentication selects no pods")
	}
	for k, v := range pa.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the gateway's pods (%v)", k, v, dep.Spec.Template.Metadata.Labels)
		}
	}
	for port, m := range pa.Spec.PortLevelMtls {
		if port != "9090" || strings.ToUpper(m.Mode) == "DISABLE" {
			t.Errorf("port %s is %s: only the admin port may be left PERMISSIVE", port, m.Mode)
		}
	}
}

// TestShippedRedis: the Redis component runs a Redis with the Lua fixes of
// 7.2.11 (or a later line), requires the password from the Secret that the
// gateway reads too, and never evicts keys: an evicted lease would let the
// fleet go past its limits.
func TestShippedRedis(t *testing.T) {
	t.Parallel()
	const dir = "../../deploy/kubernetes/components/redis/"
	var redisDep struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Image string
						Args  []string
						Env   []struct {
							Name      string
							ValueFrom struct {
								SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
							} `json:"valueFrom"`
						}
					}
				}
			}
		}
	}
	doc, _, _ := strings.Cut(string(readFile(t, dir+"redis.yaml")), "\n---")
	if err := yaml.Unmarshal([]byte(doc), &redisDep); err != nil {
		t.Fatal(err)
	}
	c := redisDep.Spec.Template.Spec.Containers[0]
	_, version, _ := strings.Cut(c.Image, ":")
	var major, minor, patch int
	if _, err := fmt.Sscanf(version, "%d.%d.%d", &major, &minor, &patch); err != nil ||
		(major == 7 && minor == 2 && patch < 11) || major < 7 || (major == 7 && minor < 2) {
		t.Errorf("image %s: want redis 7.2.11 or a later line", c.Image)
	}
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--maxmemory-policy noeviction") || !strings.Contains(args, "--requirepass $(REDIS_PASSWORD)") {
		t.Errorf("args %q: want --requirepass $(REDIS_PASSWORD) and --maxmemory-policy noeviction", args)
	}
	var secret string
	for _, e := range c.Env {
		if e.Name == "REDIS_PASSWORD" {
			secret = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	if secret != "speech-gateway-redis/password" {
		t.Errorf("REDIS_PASSWORD from %q, want the Secret speech-gateway-redis/password", secret)
	}
	if f := manifestEnv(t, dir+"gateway.yaml", "SPEECH_GATEWAY_REDIS_PASSWORD_FILE"); !strings.HasPrefix(f, "/var/run/secrets/redis/") {
		t.Errorf("the gateway reads the password from %q, not the mounted Secret", f)
	}
}
