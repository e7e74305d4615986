package slngpool_test

import (
	"errors"
	"testing"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestRefusedVoiceCountsAgainstItsConfiguration: a provider that refuses
// one caller's voice ends each of its sessions in answer to init (LiveKit:
// "as when the provider refuses the voice"). However often that caller
// tries, with retries, the model's breaker stays closed for everyone
// else: the failures count against the configuration, whose own breaker
// opens and then fails that caller's acquires fast.
func TestRefusedVoiceCountsAgainstItsConfiguration(t *testing.T) {
	t.Parallel()
	p, _ := slngsim.ProfileByName("voice-refused")
	r := newRig(t, slngsim.Options{Profile: &p}, nil, nil, slngpool.Options{BreakerFailures: 3, DisableWarm: true})
	refused := ttsCfg
	refused.Voice = p.RefusedVoice
	ep := slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}
	var configOpen *slngpool.CircuitOpenError
	for i := 0; i < 6 && configOpen == nil; i++ {
		_, err := r.p.AcquireTTS(testCtx(t), ep, refused)
		if ue, ok := slngclient.AsUpstreamError(err); !errors.As(err, &configOpen) && (!ok || !ue.AtInit()) {
			t.Fatalf("acquire %d: %v, want the refusal at init", i, err)
		}
	}
	if configOpen == nil || !configOpen.Config || configOpen.Model != aura {
		t.Fatalf("the refused configuration's acquires still dial: %v", configOpen)
	}
	if got := r.metric(t, "speech_gateway_upstream_breaker_state", "model", aura); got != 0 {
		t.Fatalf("the model's breaker state = %v, want closed", got)
	}
	// Another caller's voice on the same model is served.
	l, err := r.p.AcquireTTS(testCtx(t), ep, ttsCfg)
	if err != nil {
		t.Fatalf("another voice: %v", err)
	}
	speak(t, l, "Another voice works.")
	l.Release(nil, false)
}

// TestConfigurationsFailingTogetherOpenTheModel: when SLNG ends the
// sessions of several configurations at init in a row, the model is what
// fails, and its breaker opens.
func TestConfigurationsFailingTogetherOpenTheModel(t *testing.T) {
	t.Parallel()
	r := newRig(t, slngsim.Options{}, map[string]string{"*": "error:provider_error@init,fatal,close=1011"}, nil,
		slngpool.Options{BreakerFailures: 3, DisableWarm: true, DialAttempts: 1})
	ep := slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}
	var modelOpen *slngpool.CircuitOpenError
	for i := 0; i < 6 && modelOpen == nil; i++ {
		cfg := ttsCfg
		cfg.Voice = "voice-" + string(rune('a'+i))
		_, err := r.p.AcquireTTS(testCtx(t), ep, cfg)
		if ue, ok := slngclient.AsUpstreamError(err); !errors.As(err, &modelOpen) && (!ok || !ue.AtInit()) {
			t.Fatalf("acquire %d: %v, want a failure at init", i, err)
		}
	}
	if modelOpen == nil || modelOpen.Config {
		t.Fatalf("the model's breaker did not open: %v", modelOpen)
	}
}
