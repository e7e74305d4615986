package pcmconv

import (
	"fmt"
	"math"
	"testing"
)

// BenchmarkResample20ms measures the conversion of one 20 ms chunk of
// mono LINEAR16, as a stream converts it chunk after chunk (make bench;
// docs/performance.md): ns/op is the cost per chunk, and x_realtime how
// many streams one core converts at playback speed.
func BenchmarkResample20ms(b *testing.B) {
	for _, pair := range ratePairs {
		from, to := pair[0], pair[1]
		b.Run(fmt.Sprintf("%d-%d", from, to), func(b *testing.B) {
			r, err := NewResampler(from, to)
			if err != nil {
				b.Fatal(err)
			}
			chunk := toneChunk(from)
			dst := r.ResampleLinear16(nil, chunk)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst = r.ResampleLinear16(dst[:0], chunk)
			}
			b.ReportMetric(float64(20*1e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_realtime")
		})
	}
}

// BenchmarkDownmix20ms measures stereo to mono of one 20 ms chunk at
// 48 kHz.
func BenchmarkDownmix20ms(b *testing.B) {
	d, err := NewDownmixer(2)
	if err != nil {
		b.Fatal(err)
	}
	chunk := append(toneChunk(48000), toneChunk(48000)...) // two channels' worth
	dst := d.Downmix(nil, chunk)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		dst = d.Downmix(dst[:0], chunk)
	}
	b.ReportMetric(float64(20*1e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_realtime")
}

// toneChunk is 20 ms of a 440 Hz tone at rate, as LINEAR16.
func toneChunk(rate int) []byte {
	out := make([]int16, rate/50)
	for i := range out {
		out[i] = int16(10000 * math.Sin(2*math.Pi*440*float64(i)/float64(rate)))
	}
	return appendLinear16(nil, out)
}

// BenchmarkG711_20ms measures G.711 encoding and decoding of one 20 ms
// chunk at 8 kHz, each law.
func BenchmarkG711_20ms(b *testing.B) {
	pcm := toneChunk(8000)
	for _, law := range []Law{MuLaw, ALaw} {
		codes := law.Encode(nil, pcm)
		b.Run("encode-"+law.String(), func(b *testing.B) {
			dst := law.Encode(nil, pcm)
			b.SetBytes(int64(len(pcm)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst = law.Encode(dst[:0], pcm)
			}
			b.ReportMetric(float64(20*1e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_realtime")
		})
		b.Run("decode-"+law.String(), func(b *testing.B) {
			dst := law.Decode(nil, codes)
			b.SetBytes(int64(len(codes)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst = law.Decode(dst[:0], codes)
			}
			b.ReportMetric(float64(20*1e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_realtime")
		})
	}
}
