package service

import (
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// BenchmarkConvert20ms measures the conversion of one 20 ms chunk as a
// stream's loop does it, chunk after chunk (make bench-conversion,
// bench/conversion.txt): Synthesize's 24 kHz LINEAR16 from SLNG to a
// telephony caller's 8 kHz mu-law (resampled, then encoded), and
// Transcribe's 44.1 kHz stereo from a caller to SLNG's 16 kHz (mixed,
// resampled, and copied out for the upstream writer). ns/op is the cost
// per chunk, x_realtime how many streams one core converts at playback
// speed.
func BenchmarkConvert20ms(b *testing.B) {
	stereo := format(linear16, 44100)
	stereo.Channels = 2
	tests := []struct {
		name     string
		from, to *speechv1.AudioFormat
		chunk    []byte
		stt      bool
	}{
		{"tts-24000-to-8000-mulaw", format(linear16, 24000), format(mulaw, 8000), benchChunk(24000, 1), false},
		{"stt-44100-stereo-to-16000", stereo, format(linear16, 16000), benchChunk(44100, 2), true},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			var convert func([]byte) []byte
			if tt.stt {
				s, err := newSTTConv(tt.from, tt.to)
				if err != nil {
					b.Fatal(err)
				}
				convert = s.up
			} else {
				a, err := newAudioConv(tt.from, tt.to)
				if err != nil {
					b.Fatal(err)
				}
				convert = a.convert
			}
			convert(tt.chunk) // the buffers grow once
			b.SetBytes(int64(len(tt.chunk)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				convert(tt.chunk)
			}
			b.ReportMetric(float64(20*1e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_realtime")
		})
	}
}

// benchChunk is 20 ms of the simulator's speech at rate, in channels
// interleaved channels of LINEAR16.
func benchChunk(rate, channels int) []byte {
	speech := slngsim.Synthesize("Twenty milliseconds of speech.", "linear16", rate)[:rate/50*2]
	if channels == 2 {
		return interleave(speech, speech)
	}
	return speech
}
