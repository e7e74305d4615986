package service

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestModelNotDeployed: a model SLNG does not run in the gateway's region
// fails each stream with NOT_FOUND naming the model and the region, and
// never opens the breaker: other models, and the same one later, are
// still tried.
func TestModelNotDeployed(t *testing.T) {
	t.Parallel()
	const missing = "acme/regional:1"
	profile := func(model string) slngsim.Profile {
		p := slngsim.ProfileRich()
		p.NotDeployed = model == missing
		return p
	}
	h := newPooledHarness(t, slngsim.Options{ProfileFor: profile, Region: "eu-north"}, Config{Region: "eu-north"},
		slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 2})
	ctx := testContext(t)
	for range 4 {
		_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Hello.", Config: &speechv1.SynthesisConfig{Model: missing}})
		st := wantStatus(t, err, codes.NotFound, ReasonUpstreamModelNotFound)
		info, _ := details(st)
		if !strings.Contains(st.Message(), missing) || !strings.Contains(st.Message(), "eu-north") || info.GetMetadata()["region"] != "eu-north" {
			t.Fatalf("status %q %v: want the model and the region named", st.Message(), info.GetMetadata())
		}
	}
	resps, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Another model.", Config: &speechv1.SynthesisConfig{}})
	if err != nil || len(audioOf(resps)) == 0 {
		t.Fatalf("another model: %v", err)
	}
}
