package pcmconv

import (
	"fmt"
	"math"
)

// The filter's design: a Kaiser-windowed sinc low-pass, flat (within
// about 0.0001 dB) up to passband times the lower rate's Nyquist
// frequency, and down stopbandDB from that Nyquist frequency on, so that
// downsampling folds nothing back and upsampling leaves no image. sox's
// "high" quality keeps 95% of the band and rejects 125 dB; 16-bit audio
// needs no more than this, and the filter is about half as long.
const (
	passband   = 0.9
	stopbandDB = 100
)

// Sample rates a Resampler converts between.
const (
	MinRate = 8000
	MaxRate = 48000
)

// Resampler converts a stream of mono 16-bit samples from one sample rate
// to another by band-limited interpolation: a polyphase bank of windowed
// sinc filters, one per output phase, for any ratio of two rates between
// MinRate and MaxRate (44100 to 16000 is 160/441).
//
// Output sample n is the input band-limited and read at input time
// n*from/to, so the output is aligned with the input, as sox's rate effect
// aligns it: no delay to compensate. Producing it needs input up to
// Latency samples later, which the Resampler holds back until they come;
// Flush ends the stream and emits what is held. After Flush, a stream of
// n input samples gave ceil(n*to/from) output samples, whatever chunks it
// came in.
type Resampler struct {
	from, to int
	l, m     int       // to/from reduced: up by l, down by m
	half     int       // taps each side of the output time, in input samples
	bank     []float32 // l phases of 2*half taps, phase after phase

	// buf holds the input from absolute index base on; the samples before
	// the stream's start are zeros.
	buf  []float32
	base int64
	// next is the input index at or before the next output's time, and
	// phase the output's fraction past it, in 1/l input samples.
	next    int64
	phase   int
	in, out int64 // samples taken and given since the stream started

	// The byte API's half a sample left over, and its buffers.
	carry         byte
	hasCarry      bool
	inBuf, outBuf []int16
}

// NewResampler returns a Resampler from one rate to another, in Hz, each
// from MinRate to MaxRate. Equal rates copy samples through.
func NewResampler(from, to int) (*Resampler, error) {
	if from < MinRate || from > MaxRate || to < MinRate || to > MaxRate {
		return nil, fmt.Errorf("pcmconv: rates %d and %d Hz: each must be %d to %d Hz", from, to, MinRate, MaxRate)
	}
	g := gcd(from, to)
	r := &Resampler{from: from, to: to, l: to / g, m: from / g}
	if r.l == r.m {
		return r, nil
	}
	// All in input samples: the lower rate's Nyquist frequency, in cycles
	// per input sample; the transition band; Kaiser's estimate of the
	// length for the attenuation, and his window's shape.
	nyquist := float64(min(from, to)) / float64(from) / 2
	width := nyquist * (1 - passband)
	cutoff := nyquist - width/2
	length := (stopbandDB - 7.95) / (14.36 * width)
	r.half = int(math.Ceil(length / 2))
	beta := 0.1102 * (stopbandDB - 8.7)
	taps := 2 * r.half
	r.bank = make([]float32, r.l*taps)
	for p := 0; p < r.l; p++ {
		// Phase p reads the input at fraction p/l past an input sample;
		// tap k weighs the sample at offset k-half+1 from it.
		frac := float64(p) / float64(r.l)
		coeffs := make([]float64, taps)
		var sum float64
		for k := range coeffs {
			t := frac - float64(k-r.half+1)
			coeffs[k] = 2 * cutoff * sinc(2*cutoff*t) * kaiser(t/float64(r.half), beta)
			sum += coeffs[k]
		}
		// Each phase passes DC exactly, so that no phase is louder than
		// another: that difference would be a tone at the output rate's
		// phase cycle.
		for k, c := range coeffs {
			r.bank[p*taps+k] = float32(c / sum)
		}
	}
	r.Reset()
	return r, nil
}

// Latency is how many input samples the Resampler holds back before it
// can produce the output sample that reads them: the filter's half length
// (0 when the rates are equal).
func (r *Resampler) Latency() int { return r.half }

// Reset forgets the stream so far, to start another.
func (r *Resampler) Reset() {
	// The first output reads half-1 samples before the start: zeros.
	r.buf = append(r.buf[:0], make([]float32, max(r.half-1, 0))...)
	r.base = -int64(max(r.half-1, 0))
	r.next, r.phase, r.in, r.out = 0, 0, 0, 0
	r.hasCarry = false
}

// Resample appends to dst the output that the input src completes, and
// returns it. It holds back up to Latency input samples' worth of output
// until later input or Flush.
func (r *Resampler) Resample(dst, src []int16) []int16 {
	if r.l == r.m {
		return append(dst, src...)
	}
	for _, s := range src {
		r.buf = append(r.buf, float32(s))
	}
	r.in += int64(len(src))
	return r.produce(dst, -1)
}

// Flush appends the output held back to dst, ends the stream and returns
// dst; the Resampler then starts a new stream. Half a sample given to
// ResampleLinear16 and never completed is dropped.
func (r *Resampler) Flush(dst []int16) []int16 {
	if r.l != r.m {
		// The last outputs read up to half samples past the end: zeros.
		r.buf = append(r.buf, make([]float32, r.half)...)
		total := (r.in*int64(r.l) + int64(r.m) - 1) / int64(r.m)
		dst = r.produce(dst, total)
	}
	r.Reset()
	return dst
}

// ResampleLinear16 is Resample for little-endian 16-bit samples (LINEAR16):
// src may end, or start, in the middle of a sample, whose other half the
// next call (or the last) brings.
func (r *Resampler) ResampleLinear16(dst, src []byte) []byte {
	in := r.inBuf[:0]
	if r.hasCarry && len(src) > 0 {
		in = append(in, int16(uint16(r.carry)|uint16(src[0])<<8))
		src, r.hasCarry = src[1:], false
	}
	for len(src) >= 2 {
		in = append(in, int16(uint16(src[0])|uint16(src[1])<<8))
		src = src[2:]
	}
	if len(src) == 1 {
		r.carry, r.hasCarry = src[0], true
	}
	r.inBuf = in
	r.outBuf = r.Resample(r.outBuf[:0], in)
	return appendLinear16(dst, r.outBuf)
}

// FlushLinear16 is Flush for ResampleLinear16's stream.
func (r *Resampler) FlushLinear16(dst []byte) []byte {
	r.outBuf = r.Flush(r.outBuf[:0])
	return appendLinear16(dst, r.outBuf)
}

// produce appends every output sample the buffered input completes, but
// not past the stream's limit-th (-1: no limit), and drops the input no
// later output reads.
func (r *Resampler) produce(dst []int16, limit int64) []int16 {
	taps := 2 * r.half
	l, m := int64(r.l), r.m
	for limit < 0 || r.out < limit {
		start := int(r.next - int64(r.half) + 1 - r.base)
		if start+taps > len(r.buf) {
			break
		}
		dst = append(dst, toInt16(dot(r.bank[r.phase*taps:(r.phase+1)*taps], r.buf[start:start+taps])))
		r.out++
		r.phase += m
		r.next += int64(r.phase) / l
		r.phase %= r.l
	}
	if drop := int(r.next - int64(r.half) + 1 - r.base); drop > 0 {
		drop = min(drop, len(r.buf))
		r.buf = r.buf[:copy(r.buf, r.buf[drop:])]
		r.base += int64(drop)
	}
	return dst
}

// dot is the sum of the products of c and x, which are as long, in four
// running sums (one would wait on each addition before the next).
func dot(c, x []float32) float32 {
	x = x[:len(c)]
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(c); k += 4 {
		s0 += c[k] * x[k]
		s1 += c[k+1] * x[k+1]
		s2 += c[k+2] * x[k+2]
		s3 += c[k+3] * x[k+3]
	}
	for ; k < len(c); k++ {
		s0 += c[k] * x[k]
	}
	return (s0 + s1) + (s2 + s3)
}

// toInt16 rounds to the nearest sample, saturating.
func toInt16(v float32) int16 {
	switch {
	case v >= math.MaxInt16:
		return math.MaxInt16
	case v <= math.MinInt16:
		return math.MinInt16
	case v >= 0:
		return int16(v + 0.5)
	}
	return int16(v - 0.5)
}

func appendLinear16(dst []byte, samples []int16) []byte {
	for _, s := range samples {
		dst = append(dst, byte(s), byte(uint16(s)>>8))
	}
	return dst
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// kaiser is the Kaiser window of shape beta at u, from -1 to 1.
func kaiser(u, beta float64) float64 {
	if u <= -1 || u >= 1 {
		return 0
	}
	return bessel0(beta*math.Sqrt(1-u*u)) / bessel0(beta)
}

// bessel0 is the modified Bessel function of the first kind, order 0, by
// its power series, which converges fast for the window's arguments.
func bessel0(x float64) float64 {
	sum, term := 1.0, 1.0
	for k := 1; term > 1e-12*sum; k++ {
		term *= (x / (2 * float64(k))) * (x / (2 * float64(k)))
		sum += term
	}
	return sum
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
