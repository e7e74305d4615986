package service

import (
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// BenchmarkSynthesizeChunkElevenLabs is BenchmarkSynthesizeChunk on the
// route shape that carries alignment: ElevenLabs' untyped JSON audio, each
// frame with its characters' timings.
func BenchmarkSynthesizeChunkElevenLabs(b *testing.B) {
	p, err := slngsim.ProfileByName("json-elevenlabs")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("timings=off", func(b *testing.B) {
		benchmarkChunks(b, slngsim.Options{Profile: &p}, &speechv1.SynthesisConfig{})
	})
}
