package service

import (
	"encoding/json"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// FuzzConfigs feeds arbitrary SynthesisConfig and RecognitionConfig
// messages to validation. Nothing may panic, and a config that passes must
// become an init message SLNG can be sent: a valid model, a known encoding
// (for STT, one of the three the bridge takes), a rate in range, and
// options that encode as JSON.
func FuzzConfigs(f *testing.F) {
	opts, _ := structpb.NewStruct(map[string]any{"style": "calm", "n": 2.5, "nested": map[string]any{"a": []any{1.0, "x"}}})
	nan := &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(math.NaN())}}
	for _, m := range []proto.Message{
		&speechv1.SynthesisConfig{},
		&speechv1.SynthesisConfig{Model: "deepgram/aura:2", Voice: "aura-2-thalia-en", Speed: 1.2, ModelOptions: opts,
			Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000}},
		&speechv1.SynthesisConfig{Model: "a/../b", Format: &speechv1.AudioFormat{Encoding: 99, SampleRateHz: 1}},
		&speechv1.RecognitionConfig{Model: "deepgram/nova:3", EnablePartials: true, MinSpeakers: 1, MaxSpeakers: 3, ModelOptions: opts},
		&speechv1.RecognitionConfig{Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_ALAW, SampleRateHz: 8000}},
		&speechv1.SynthesisConfig{ModelOptions: nan},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s, err := New(noUpstream{}, nil, nil, Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var tc speechv1.SynthesisConfig
		if proto.Unmarshal(b, &tc) == nil {
			st := &synthCore{coreBase: coreBase{srv: s}}
			if st.configure(&tc) == nil {
				checkInit(t, st.ep.Model, st.ttsCfg.Encoding, st.ttsCfg.SampleRate, st.ttsCfg.Extra)
			}
		}
		var rc speechv1.RecognitionConfig
		if proto.Unmarshal(b, &rc) == nil {
			tr := &sttCore{coreBase: coreBase{srv: s}}
			if err := tr.configure(&rc); err == nil {
				checkInit(t, tr.cfg.Model, tr.sttCfg.Encoding, tr.sttCfg.SampleRate, tr.sttCfg.Extra)
				// SLNG's STT bridge takes these three only.
				if e := tr.sttCfg.Encoding; e != "linear16" && e != "mp3" && e != "opus" {
					t.Fatalf("STT init with encoding %q", e)
				}
			}
		}
	})
}

func checkInit(t *testing.T, model, encoding string, rate int, extra map[string]any) {
	t.Helper()
	if err := slngclient.ValidateModel(model); err != nil {
		t.Fatalf("accepted model %q: %v", model, err)
	}
	if encoding == "" || rate < minSampleRate || rate > maxSampleRate {
		t.Fatalf("accepted encoding %q at %d Hz", encoding, rate)
	}
	if _, err := json.Marshal(extra); err != nil {
		t.Fatalf("accepted model_options that do not encode: %v", err)
	}
}

// noUpstream is an Upstream for tests that never reach it.
type noUpstream struct{ Upstream }
