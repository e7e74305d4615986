package callers

import (
	"cmp"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/speech-gateway/speech-gateway/fleet"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestIdentify(t *testing.T) {
	t.Parallel()
	const spiffe = "spiffe://cluster.local/ns/checkout/sa/web"
	addr := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 40000}
	for _, tc := range []struct {
		name, order string
		md          []string // key, value pairs
		noPeer      bool
		want        string
	}{
		{"xfcc", "xfcc,peer", []string{"x-forwarded-client-cert", "By=spiffe://cluster.local/ns/gw/sa/gw;Hash=abc;Subject=\"\";URI=" + spiffe}, false, spiffe},
		{"xfcc: the nearest proxy's element wins", "xfcc",
			[]string{"x-forwarded-client-cert", "URI=spiffe://forged,By=spiffe://gw;URI=" + spiffe}, false, spiffe},
		{"xfcc: quoted values", "xfcc",
			[]string{"x-forwarded-client-cert", `Subject="CN=a,O=b;c";URI="` + spiffe + `"`}, false, spiffe},
		{"xfcc: several headers, the last wins", "xfcc",
			[]string{"x-forwarded-client-cert", "URI=spiffe://forged", "x-forwarded-client-cert", "URI=" + spiffe}, false, spiffe},
		{"xfcc pinned: our sidecar's", "xfcc:By=spiffe://cluster.local/ns/*/sa/gw",
			[]string{"x-forwarded-client-cert", "By=spiffe://cluster.local/ns/gw/sa/gw;Hash=abc;URI=" + spiffe}, false, spiffe},
		{"xfcc pinned: another proxy's is no id", "xfcc:By=spiffe://cluster.local/ns/*/sa/gw,peer",
			[]string{"x-forwarded-client-cert", "By=spiffe://cluster.local/ns/edge/sa/ingress;URI=" + spiffe}, false, "10.1.2.3"},
		{"xfcc pinned: none named is no id", "xfcc:By=spiffe://cluster.local/ns/*/sa/gw,peer",
			[]string{"x-forwarded-client-cert", "URI=" + spiffe}, false, "10.1.2.3"},
		{"xfcc pinned: a forged element before ours does not count", "xfcc:By=spiffe://gw",
			[]string{"x-forwarded-client-cert", "By=spiffe://gw;URI=spiffe://forged,By=spiffe://gw;URI=" + spiffe}, false, spiffe},
		{"xfcc without a URI falls through", "xfcc,metadata", []string{"x-forwarded-client-cert", "Hash=abc", "x-caller-id", "billing"}, false, "billing"},
		{"l5d", "l5d", []string{"l5d-client-id", "web.checkout.serviceaccount.identity.linkerd.cluster.local"}, false,
			"web.checkout.serviceaccount.identity.linkerd.cluster.local"},
		{"metadata", "metadata,peer", []string{"x-caller-id", "billing"}, false, "billing"},
		{"a metadata key of one's own", "metadata:x-team", []string{"x-team", "search", "x-caller-id", "billing"}, false, "search"},
		{"headers not in the order are ignored", "peer", []string{"x-caller-id", "billing", "l5d-client-id", "x"}, false, "10.1.2.3"},
		{"an invalid id falls through", "metadata,peer", []string{"x-caller-id", "has space"}, false, "10.1.2.3"},
		{"an over-long id falls through", "metadata,peer", []string{"x-caller-id", strings.Repeat("a", maxIDLen+1)}, false, "10.1.2.3"},
		{"nothing at all", "metadata,peer", nil, true, Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sources, err := parseSources(tc.order)
			if err != nil {
				t.Fatal(err)
			}
			ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs(tc.md...))
			if !tc.noPeer {
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: addr})
			}
			if got := identify(ctx, sources); got != tc.want {
				t.Errorf("identify = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAssertedIdentityNeedsTrust: with an access policy or a per-caller
// quota, an identity the caller asserts (metadata) is refused unless it is
// trusted explicitly; without either, or with only mesh and peer sources,
// it is not; and each source is logged with what vouches for it.
func TestAssertedIdentityNeedsTrust(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte("callers:\n  - id: svc-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		opts     Options
		refused  bool
		warnings int
	}{
		{"default order with a policy", Options{PolicyFile: file}, true, 0},
		{"metadata with a streams quota", Options{Identity: "xfcc,metadata:x-team", Defaults: Limits{MaxStreams: 3}}, true, 0},
		{"metadata with a rate quota", Options{Identity: "metadata", Defaults: Limits{CharactersPerMinute: 10}}, true, 0},
		{"metadata trusted explicitly", Options{PolicyFile: file, TrustAssertedIdentity: true}, false, 1},
		{"metadata without access control", Options{}, false, 0},
		{"mesh, tls and peer with a policy", Options{Identity: "xfcc:By=spiffe://x,l5d,tls,peer", PolicyFile: file}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.InfoLevel)
			tc.opts.Logger = zap.New(core)
			g, err := New(localFleet(t), tc.opts)
			if tc.refused {
				if !errors.Is(err, ErrAssertedIdentity) || !strings.Contains(err.Error(), "metadata:x-") {
					t.Fatalf("New = %v, want ErrAssertedIdentity naming the source", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			sources, _ := parseSources(cmp.Or(tc.opts.Identity, DefaultIdentity))
			lines := logs.FilterMessage("caller identity source")
			if lines.Len() != len(sources) {
				t.Fatalf("%d start-up lines for %d sources", lines.Len(), len(sources))
			}
			if n := lines.FilterLevelExact(zapcore.WarnLevel).Len(); n != tc.warnings {
				t.Fatalf("%d warnings, want %d", n, tc.warnings)
			}
		})
	}
}

func TestParseSources(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", " , ", "spiffe", "peer:x", "metadata:", "metadata:grpc-timeout", "xfcc,bogus", "tls:x", "metadata:x-slng-api-key",
		"metadata:Authorization", "xfcc:By=", "xfcc:URI=spiffe://x", "l5d:By=x"} {
		if _, err := parseSources(bad); err == nil {
			t.Errorf("parseSources(%q) succeeded", bad)
		}
	}
	got, err := parseSources(" xfcc , metadata:X-Team,peer, xfcc:by=spiffe://td/ns/*/sa/gw")
	if err != nil {
		t.Fatal(err)
	}
	want := []source{{kind: "xfcc"}, {kind: "metadata", key: "x-team"}, {kind: "peer"}, {kind: "xfcc", by: "spiffe://td/ns/*/sa/gw"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("source %d = %v, want %v", i, got[i], want[i])
		}
	}
}

const testPolicy = `
# checkout may synthesize with Aura; support may transcribe anything.
callers:
  - id: spiffe://cluster.local/ns/checkout/sa/web
    rpcs: [Synthesize, SynthesizeText]
    models: ["deepgram/aura:*"]
    max_streams: 3
    characters_per_minute: 0
  - id: "spiffe://cluster.local/ns/support/*"
    rpcs: [Transcribe]
    audio_seconds_per_minute: 60
  - id: "spiffe://cluster.local/ns/support/sa/bot"
    rpcs: ["*"]
    models: [cartesia/sonic]
    max_streams: 9
`

func TestPolicy(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	const checkout, bot = "spiffe://cluster.local/ns/checkout/sa/web", "spiffe://cluster.local/ns/support/sa/bot"
	for _, tc := range []struct {
		caller, rpc, model string
		want               bool
	}{
		{checkout, "Synthesize", "deepgram/aura:2", true},
		{checkout, "SynthesizeText", "deepgram/aura:1", true},
		{checkout, "Synthesize", "elevenlabs/eleven:turbo", false},
		{checkout, "Transcribe", "deepgram/nova:3", false},
		{"spiffe://cluster.local/ns/support/sa/agent", "Transcribe", "deepgram/nova:3", true},
		{"spiffe://cluster.local/ns/support/sa/agent", "Synthesize", "deepgram/aura:2", false},
		{bot, "Synthesize", "cartesia/sonic", true},  // the third entry
		{bot, "Transcribe", "deepgram/nova:3", true}, // the second
		{bot, "Synthesize", "deepgram/aura:2", false},
		{"spiffe://cluster.local/ns/checkout/sa/other", "Synthesize", "deepgram/aura:2", false},
		{Unknown, "Synthesize", "deepgram/aura:2", false},
	} {
		if got := p.Allows(tc.caller, tc.rpc, tc.model); got != tc.want {
			t.Errorf("Allows(%s, %s, %s) = %v, want %v", tc.caller, tc.rpc, tc.model, got, tc.want)
		}
	}
	def := Limits{MaxStreams: 5, CharactersPerMinute: 1000, AudioSecondsPerMinute: 30}
	for _, tc := range []struct {
		caller string
		want   Limits
	}{
		{checkout, Limits{MaxStreams: 3, CharactersPerMinute: 0, AudioSecondsPerMinute: 30}},
		// The first entry that sets a field wins, field by field.
		{bot, Limits{MaxStreams: 9, CharactersPerMinute: 1000, AudioSecondsPerMinute: 60}},
		{"someone", def},
	} {
		if got := p.limits(tc.caller, def); got != tc.want {
			t.Errorf("limits(%s) = %+v, want %+v", tc.caller, got, tc.want)
		}
	}
	// JSON is accepted as it is.
	j, err := ParsePolicy([]byte(`{"callers": [{"id": "a", "rpcs": ["Transcribe"]}]}`))
	if err != nil || !j.Allows("a", "Transcribe", "m/x") || j.Allows("a", "Synthesize", "m/x") {
		t.Fatalf("JSON policy: %v", err)
	}
	for _, bad := range []string{
		"callers:\n  - id: a\n    rpc: [Synthesize]\n", // a typo is not ignored
		"callers:\n  - id: a\n    rpcs: [Speak]\n",
		"callers:\n  - id: has space\n",
		"callers:\n  - id: a\n    max_streams: -1\n",
		"callers:\n  - id: a\n    models: ['']\n",
		"callers: [",
	} {
		if _, err := ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("ParsePolicy(%q) succeeded", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"a", "a", true}, {"a", "ab", false}, {"*", "", true}, {"*", "x/y:z", true},
		{"deepgram/*", "deepgram/aura:2", true}, {"deepgram/*", "cartesia/sonic", false},
		{"*:2", "deepgram/aura:2", true}, {"a*b*c", "abc", true}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false}, {"ab*b", "ab", false}, {"*ab*ab", "xab", false},
	} {
		if got := match(tc.pattern, tc.s); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func newGate(t *testing.T, f *fleet.Fleet, opts Options) (*Gate, *Metrics) {
	t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	opts.Logger = zaptest.NewLogger(t)
	// The tests name their callers in x-caller-id.
	opts.TrustAssertedIdentity = true
	g, err := New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, opts.Metrics
}

func localFleet(t *testing.T) *fleet.Fleet {
	f := fleet.New(fleet.Options{Linger: -1})
	t.Cleanup(f.Close)
	return f
}

func TestGateQuotas(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	g, m := newGate(t, localFleet(t), Options{Defaults: Limits{MaxStreams: 2, CharactersPerMinute: 100, AudioSecondsPerMinute: 3}})

	a1, err := g.Admit(ctx, "alice", "Synthesize")
	if err != nil || a1.AllowModel("m/x") != nil {
		t.Fatal(err)
	}
	a2, err := g.Admit(ctx, "alice", "Transcribe")
	if err != nil || a2.AllowModel("m/y") != nil {
		t.Fatal(err)
	}
	var qe *QuotaError
	if _, err := g.Admit(ctx, "alice", "Synthesize"); !errors.As(err, &qe) || qe.Quota != QuotaStreams || qe.Limit != 2 || qe.RetryAfter != time.Second {
		t.Fatalf("a third stream: err = %v, want a concurrent_streams QuotaError", err)
	}
	bob, err := g.Admit(ctx, "bob", "Synthesize") // another caller, its own quota
	if err != nil {
		t.Fatal(err)
	}
	bob.End(Usage{})

	// Characters: a text that would go beyond is refused, and counts
	// nothing.
	if err := a1.Charge(ctx, 90); err != nil {
		t.Fatal(err)
	}
	if err := a1.Charge(ctx, 11); !errors.As(err, &qe) || qe.Quota != QuotaCharacters || qe.RetryAfter <= 0 || qe.RetryAfter > time.Minute {
		t.Fatalf("beyond the characters: err = %v", err)
	}
	if err := a1.Charge(ctx, 10); err != nil {
		t.Fatalf("up to the limit: %v", err)
	}
	a1.End(Usage{Characters: 100, SynthesizedSeconds: 2})
	a1.End(Usage{Characters: 100}) // only the first End counts
	// Out of characters: no Synthesize stream starts; Transcribe does.
	if _, err := g.Admit(ctx, "alice", "SynthesizeText"); !errors.As(err, &qe) || qe.Quota != QuotaCharacters {
		t.Fatalf("out of characters: err = %v", err)
	}
	a3, err := g.Admit(ctx, "alice", "Transcribe")
	if err != nil || a3.AllowModel("m/y") != nil {
		t.Fatal(err)
	}
	a3.End(Usage{TranscribedSeconds: 0.5})
	a2.End(Usage{TranscribedSeconds: 0.5})
	// 3 s of audio used: nothing more this minute.
	if _, err := g.Admit(ctx, "alice", "Transcribe"); !errors.As(err, &qe) || qe.Quota != QuotaAudioSeconds || qe.Limit != 3 {
		t.Fatalf("out of audio seconds: err = %v", err)
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("alice", "CALLER_QUOTA_EXCEEDED")); got != 4 {
		t.Errorf("refused = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.characters.WithLabelValues("alice", "m/x")); got != 100 {
		t.Errorf("characters = %v, want 100", got)
	}
	if got := testutil.ToFloat64(m.transcribed.WithLabelValues("alice", "m/y")); got != 1 {
		t.Errorf("transcribed seconds = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.streams.WithLabelValues("alice", "m/y")); got != 2 {
		t.Errorf("streams = %v, want 2", got)
	}
}

// TestNegativeDefaultQuotaIsNone: a negative default quota is no limit,
// as 0 is, and gives no reason to refuse a caller's own identity.
func TestNegativeDefaultQuotaIsNone(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	if d := DefaultOptions(); d.Identity != DefaultIdentity || d.MetricLabels != 100 || d.Defaults != (Limits{}) {
		t.Errorf("DefaultOptions() = %+v", d)
	}
	g, _ := newGate(t, localFleet(t), Options{Defaults: Limits{MaxStreams: -1, CharactersPerMinute: -1, AudioSecondsPerMinute: -5}})
	for i := range 5 {
		s, err := g.Admit(ctx, "alice", "Synthesize")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if err := s.Charge(ctx, 1<<20); err != nil {
			t.Fatalf("stream %d's text: %v", i, err)
		}
		defer s.End(Usage{Characters: 1 << 20, SynthesizedSeconds: 3600})
	}
}

func TestGateLabelsAreBounded(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte("callers:\n  - id: vip\n  - id: '*'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, m := newGate(t, localFleet(t), Options{PolicyFile: file, MetricLabels: 2})
	for _, caller := range []string{"a", "b", "c", "d", "vip"} {
		s, err := g.Admit(ctx, caller, "Synthesize")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.AllowModel("m/x"); err != nil {
			t.Fatal(err)
		}
		s.End(Usage{Characters: 1})
	}
	for label, want := range map[string]float64{"a": 1, "b": 1, Other: 2, "vip": 1} {
		if got := testutil.ToFloat64(m.characters.WithLabelValues(label, "m/x")); got != want {
			t.Errorf("characters{caller=%q} = %v, want %v", label, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.characters); n != 4 {
		t.Errorf("%d caller series, want 4", n)
	}
}

// TestRefusedCallersTakeNoLabels: callers that are only ever refused
// (denied by the policy, or over a quota) are counted under Other, and
// leave the labels to callers that stream: made-up caller ids must not
// use the label slots up.
func TestRefusedCallersTakeNoLabels(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte("callers:\n  - id: 'ok-*'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, m := newGate(t, localFleet(t), Options{PolicyFile: file, MetricLabels: 2, Defaults: Limits{MaxStreams: 1}})
	for _, caller := range []string{"made-up-1", "made-up-2", "made-up-3"} {
		if _, err := g.Admit(ctx, caller, "Synthesize"); err == nil {
			t.Fatalf("%s admitted", caller)
		}
	}
	held, err := g.Admit(ctx, "ok-a", "Synthesize")
	if err != nil || held.AllowModel("m/x") != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(ctx, "ok-a", "Synthesize"); err == nil {
		t.Fatal("a second stream of ok-a admitted")
	}
	held.End(Usage{Characters: 1})
	s, err := g.Admit(ctx, "ok-b", "Synthesize")
	if err != nil || s.AllowModel("m/x") != nil {
		t.Fatal(err)
	}
	s.End(Usage{Characters: 1})
	for _, tc := range []struct {
		caller, reason string
		want           float64
	}{
		{Other, "CALLER_NOT_ALLOWED", 3},
		{"ok-a", "CALLER_QUOTA_EXCEEDED", 1},
	} {
		if got := testutil.ToFloat64(m.refused.WithLabelValues(tc.caller, tc.reason)); got != tc.want {
			t.Errorf("refused{%s, %s} = %v, want %v", tc.caller, tc.reason, got, tc.want)
		}
	}
	for _, caller := range []string{"ok-a", "ok-b"} {
		if got := testutil.ToFloat64(m.characters.WithLabelValues(caller, "m/x")); got != 1 {
			t.Errorf("characters{caller=%q} = %v, want 1: a label of its own", caller, got)
		}
	}
}

func TestPolicyReload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		// Written aside and renamed, as a ConfigMap update is.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("callers:\n  - id: a\n")
	g, m := newGate(t, localFleet(t), Options{PolicyFile: file, PolicyReload: 5 * time.Millisecond})
	allowed := func(caller string) bool {
		s, err := g.Admit(ctx, caller, "Transcribe")
		if err == nil {
			s.End(Usage{})
			return true
		}
		var de *DeniedError
		if !errors.As(err, &de) {
			t.Fatalf("Admit: %v", err)
		}
		return false
	}
	if !allowed("a") || allowed("b") {
		t.Fatal("the first policy is not in force")
	}
	write("callers:\n  - id: b\n")
	poll.Wait(t, ctx, "the reload", func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("ok")) == 1 })
	if allowed("a") || !allowed("b") {
		t.Fatal("the new policy is not in force")
	}
	write("callers:\n  - idd: a\n")
	poll.Wait(t, ctx, "the failed reload", func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("error")) == 1 })
	if !allowed("b") {
		t.Fatal("an invalid policy replaced the one in force")
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("a", "CALLER_NOT_ALLOWED")); got != 1 {
		t.Errorf("refused{a} = %v, want 1", got)
	}
	if _, err := New(localFleet(t), Options{PolicyFile: file}); err == nil {
		t.Error("New accepted an invalid policy file")
	}
}

// TestQuotasAcrossReplicas: two gateways' gates sharing one Redis share
// each caller's quotas.
func TestQuotasAcrossReplicas(t *testing.T) {
	t.Parallel()
	// The characters count per minute, in windows that start on the
	// minute: one that ends while the test runs would take the count
	// with it, so the test starts in a fresh one.
	if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 20*time.Second {
		timer := time.NewTimer(left)
		<-timer.C
	}
	ctx := testContext(t)
	srv := redistest.Start(t)
	gates := make([]*Gate, 2)
	for i := range gates {
		f, err := fleet.Connect(ctx, fleet.Redis{URL: srv.URL()}, fleet.Options{LeaseTTL: 600 * time.Millisecond, Linger: -1, OpTimeout: 5 * time.Second, StartBudget: 5 * time.Second, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		gates[i], _ = newGate(t, f, Options{Defaults: Limits{MaxStreams: 1, CharactersPerMinute: 100}})
	}
	a, err := gates[0].Admit(ctx, "alice", "Synthesize")
	if err != nil {
		t.Fatal(err)
	}
	var qe *QuotaError
	if _, err := gates[1].Admit(ctx, "alice", "Synthesize"); !errors.As(err, &qe) || qe.Quota != QuotaStreams {
		t.Fatalf("a second stream on the other replica: err = %v", err)
	}
	if err := a.Charge(ctx, 80); err != nil {
		t.Fatal(err)
	}
	a.End(Usage{Characters: 80})
	// The other replica sees the 80 characters within a heartbeat, and
	// refuses 30 more.
	poll.Wait(t, ctx, "the other replica to see the 80 characters", func() bool {
		used, _ := gates[1].chars.Value(ctx, "alice")
		return used == 80
	})
	b, err := gates[1].Admit(ctx, "alice", "Synthesize")
	if err != nil {
		t.Fatal(err)
	}
	defer b.End(Usage{})
	if err := b.Charge(ctx, 30); !errors.As(err, &qe) || qe.Quota != QuotaCharacters {
		t.Fatalf("30 more characters on the other replica: err = %v", err)
	}
	if err := b.Charge(ctx, 20); err != nil {
		t.Fatalf("20 more: %v", err)
	}
}

// TestAdmitBeforeTheModel: a stream is let in when its caller may use its
// RPC with some model, and its model is checked once the config names it.
func TestAdmitBeforeTheModel(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	policy := "callers:\n  - id: a\n    rpcs: [Synthesize]\n    models: [\"m/x\"]\n"
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	g, m := newGate(t, localFleet(t), Options{PolicyFile: file})
	var de *DeniedError
	if _, err := g.Admit(ctx, "a", "Transcribe"); !errors.As(err, &de) || de.Model != "" {
		t.Fatalf("Admit(a, Transcribe) = %v, want denied before any model", err)
	}
	s, err := g.Admit(ctx, "a", "Synthesize")
	if err != nil {
		t.Fatal(err)
	}
	defer s.End(Usage{})
	if err := s.AllowModel("m/y"); !errors.As(err, &de) || de.Model != "m/y" {
		t.Fatalf("AllowModel(m/y) = %v, want denied", err)
	}
	if err := s.AllowModel("m/x"); err != nil {
		t.Fatalf("AllowModel(m/x) = %v", err)
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("a", "CALLER_NOT_ALLOWED")); got != 2 {
		t.Errorf("refused = %v, want 2", got)
	}
}
