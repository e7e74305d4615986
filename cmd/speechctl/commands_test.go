package main

import (
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// TestConversions: what `started` says the gateway converts is printed
// step by step, and nothing when it converts nothing.
func TestConversions(t *testing.T) {
	t.Parallel()
	f := func(enc speechv1.AudioEncoding, rate, channels int32) *speechv1.AudioFormat {
		return &speechv1.AudioFormat{Encoding: enc, SampleRateHz: rate, Channels: channels}
	}
	pcm, mulaw := speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW
	steps := []*speechv1.AudioConversion{
		{Kind: speechv1.AudioConversion_KIND_DOWNMIX, From: f(pcm, 24000, 2), To: f(pcm, 24000, 1)},
		{Kind: speechv1.AudioConversion_KIND_RESAMPLE, From: f(pcm, 24000, 1), To: f(pcm, 8000, 1)},
		{Kind: speechv1.AudioConversion_KIND_ENCODE, From: f(pcm, 8000, 1), To: f(mulaw, 8000, 1)},
	}
	want := ", converted: mix 2 channels to 1, resample 24000 Hz to 8000 Hz, encode LINEAR16 to MULAW"
	if got := conversions(steps); got != want {
		t.Errorf("conversions = %q, want %q", got, want)
	}
	if got := conversions(nil); got != "" {
		t.Errorf("no conversions = %q", got)
	}
}
