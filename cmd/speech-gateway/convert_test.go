package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestRunDevConvertsOneFormatRoutes: with --dev-profile pcm24k-only, every
// simulated TTS route produces 24 kHz LINEAR16 whatever it is asked; the
// dev catalog says so, and an 8 kHz mu-law SynthesizeText gets exactly
// the mu-law of the resampled audio the route produced.
func TestRunDevConvertsOneFormatRoutes(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--dev-profile", "pcm24k-only", "--pool-warm=false"}, nil)
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	models, err := speechv1.NewCatalogServiceClient(conn).ListModels(ctx, &speechv1.ListModelsRequest{Kind: speechv1.ModelKind_MODEL_KIND_TTS})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models.GetModels() {
		if !slices.Equal(m.GetEncodings(), []speechv1.AudioEncoding{speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16}) ||
			!slices.Equal(m.GetSampleRatesHz(), []int32{24000}) || !m.GetEncodingsComplete() || !m.GetSampleRatesComplete() {
			t.Errorf("%s offers %v at %v Hz, want 24 kHz LINEAR16 alone", m.GetModel(), m.GetEncodings(), m.GetSampleRatesHz())
		}
	}

	const text = "Telephony from a wideband route."
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text,
		Config: &speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var started *speechv1.SynthesisStarted
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if s := m.GetStarted(); s != nil {
			started = s
		}
		got = append(got, m.GetAudio().GetData()...)
	}
	if up := started.GetUpstreamFormat(); up.GetEncoding() != speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16 || up.GetSampleRateHz() != 24000 ||
		len(started.GetConversions()) != 2 {
		t.Errorf("started: upstream %v, conversions %v", up, started.GetConversions())
	}
	r, err := pcmconv.NewResampler(24000, 8000)
	if err != nil {
		t.Fatal(err)
	}
	want := pcmconv.MuLaw.Encode(nil, r.FlushLinear16(r.ResampleLinear16(nil, slngsim.Synthesize(text, "linear16", 24000))))
	if !bytes.Equal(got, want) {
		t.Errorf("%d bytes of audio, want exactly the %d bytes of mu-law of the resampled 24 kHz audio", len(got), len(want))
	}
}
