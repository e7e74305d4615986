package pcmconv

import (
	"bytes"
	"math"
	"testing"
)

// g711Step describes the step of a G.711 code as the standard's tables lay
// it out, independently of the bit tricks of the code: the sign, the
// segment e and the step k within it, and the step's range of magnitudes
// [lo, hi) at G.711's own resolution. μ-law (14-bit magnitudes, codes sent
// inverted): segment e starts at 2^(e+5)-33 with steps of 2^(e+1), and a
// set sign bit (after inversion) is negative. A-law (13-bit, even bits
// sent inverted): segment 0 starts at 0 with steps of 2, segment e>0 at
// 2^(e+4) with steps of 2^e, and a set sign bit is positive. scale is what
// takes that resolution to 16 bits.
func g711Step(law Law, code byte) (negative bool, lo, hi, scale int) {
	if law == MuLaw {
		u := ^code
		e, k := int(u>>4&7), int(u&15)
		start, step := 1<<(e+5)-33, 1<<(e+1)
		return u&0x80 != 0, start + step*k, start + step*(k+1), 4
	}
	a := code ^ 0x55
	e, k := int(a>>4&7), int(a&15)
	start, step := 0, 2
	if e > 0 {
		start, step = 1<<(e+4), 1<<e
	}
	return a&0x80 == 0, start + step*k, start + step*(k+1), 8
}

// g711Decoded is the standard's value of a code: the middle of its step,
// at 16 bits.
func g711Decoded(law Law, code byte) int16 {
	neg, lo, hi, scale := g711Step(law, code)
	v := (lo + hi) / 2 * scale
	if neg {
		v = -v
	}
	return int16(v)
}

// g711Encoded is the code whose step holds sample s, searched in the
// standard's layout: the magnitude at G.711's resolution (a negative
// sample by its ones' complement, as ITU-T G.191's g711.c takes it), and
// the loudest code for a magnitude beyond the last step.
func g711Encoded(law Law, s int16) byte {
	neg, m := s < 0, int(s)
	if neg {
		m = -m - 1
	}
	best, bestHi := byte(0), math.MinInt
	for c := range 256 {
		cneg, lo, hi, scale := g711Step(law, byte(c))
		if cneg != neg {
			continue
		}
		q := m / scale
		if q >= lo && q < hi {
			return byte(c)
		}
		if hi > bestHi {
			best, bestHi = byte(c), hi
		}
	}
	return best // past the last step: clipped
}

// TestG711Decode: every one of the 256 codes of each law decodes exactly
// to the standard's value, and Decode lays the samples out as LINEAR16.
func TestG711Decode(t *testing.T) {
	t.Parallel()
	for _, law := range []Law{MuLaw, ALaw} {
		in := make([]byte, 256)
		for i := range in {
			in[i] = byte(i)
			if got, want := law.DecodeSample(byte(i)), g711Decoded(law, byte(i)); got != want {
				t.Errorf("%v code %#02x = %d, want %d", law, i, got, want)
			}
		}
		out := law.Decode([]byte{9}, in)
		if len(out) != 1+512 || out[0] != 9 {
			t.Fatalf("%v: Decode appended %d bytes after the first, want 512", law, len(out)-1)
		}
		for i := range in {
			if got := int16(uint16(out[1+2*i]) | uint16(out[2+2*i])<<8); got != g711Decoded(law, byte(i)) {
				t.Fatalf("%v Decode: sample %d = %d", law, i, got)
			}
		}
	}
	// Anchors from the standard: the largest magnitudes, and silence.
	if MuLaw.DecodeSample(0x00) != -32124 || MuLaw.DecodeSample(0x80) != 32124 || MuLaw.DecodeSample(0xff) != 0 ||
		ALaw.DecodeSample(0xaa) != 32256 || ALaw.DecodeSample(0xd5) != 8 || ALaw.DecodeSample(0x55) != -8 {
		t.Errorf("anchors: mu-law %d %d %d, A-law %d %d %d", MuLaw.DecodeSample(0x00), MuLaw.DecodeSample(0x80),
			MuLaw.DecodeSample(0xff), ALaw.DecodeSample(0xaa), ALaw.DecodeSample(0xd5), ALaw.DecodeSample(0x55))
	}
}

// TestG711Encode: every 16-bit sample encodes to the code whose step holds
// it in the standard's layout; every code decodes and encodes back to
// itself (μ-law's negative zero to the positive one); and known values,
// the segments' edges among them, give the standard's codes.
func TestG711Encode(t *testing.T) {
	t.Parallel()
	for _, law := range []Law{MuLaw, ALaw} {
		for s := math.MinInt16; s <= math.MaxInt16; s++ {
			if got, want := law.EncodeSample(int16(s)), g711Encoded(law, int16(s)); got != want {
				t.Fatalf("%v: EncodeSample(%d) = %#02x, want %#02x", law, s, got, want)
			}
		}
		for c := range 256 {
			want := byte(c)
			if law == MuLaw && c == 0x7f {
				want = 0xff // both are zero
			}
			if got := law.EncodeSample(law.DecodeSample(byte(c))); got != want {
				t.Errorf("%v: code %#02x decodes to %d, which encodes to %#02x", law, c, law.DecodeSample(byte(c)), got)
			}
		}
	}
	known := []struct {
		law  Law
		in   int16
		want byte
	}{
		// Silence: μ-law's zero, A-law's smallest steps either side.
		{MuLaw, 0, 0xff}, {MuLaw, -1, 0x7f}, {ALaw, 0, 0xd5}, {ALaw, -1, 0x55},
		// Full scale, and beyond the last step: clipped.
		{MuLaw, 32767, 0x80}, {MuLaw, -32768, 0x00}, {ALaw, 32767, 0xaa}, {ALaw, -32768, 0x2a},
		{MuLaw, 32124, 0x80}, {MuLaw, 32000, 0x80}, {MuLaw, 31000, 0x81},
		// μ-law's first steps: 14-bit magnitudes 0 | 1-2 | 3-4; at 16
		// bits, 0-3 | 4-11 | 12-19.
		{MuLaw, 3, 0xff}, {MuLaw, 4, 0xfe}, {MuLaw, 11, 0xfe}, {MuLaw, 12, 0xfd}, {MuLaw, -4, 0x7f}, {MuLaw, -5, 0x7e},
		// μ-law's first segment ends at 14-bit 30, the second starts at
		// 31 (16-bit 124) with steps of 4.
		{MuLaw, 123, 0xf0}, {MuLaw, 124, 0xef}, {MuLaw, 139, 0xef}, {MuLaw, 140, 0xee},
		// A-law's segment 0 and 1 both step by 2 (13-bit), segment 2 starts
		// at 64 (16-bit 512) with steps of 4.
		{ALaw, 15, 0xd5}, {ALaw, 16, 0xd4}, {ALaw, 511, 0xca}, {ALaw, 512, 0xf5}, {ALaw, -512, 0x4a}, {ALaw, -513, 0x75},
	}
	for _, k := range known {
		if got := k.law.EncodeSample(k.in); got != k.want {
			t.Errorf("%v: EncodeSample(%d) = %#02x, want %#02x", k.law, k.in, got, k.want)
		}
	}
}

// TestG711Bytes: Encode takes LINEAR16 and appends one code per sample,
// leaving a last odd byte; Decode then Encode is the identity on codes.
func TestG711Bytes(t *testing.T) {
	t.Parallel()
	for _, law := range []Law{MuLaw, ALaw} {
		codes := make([]byte, 0, 256)
		for c := range 256 {
			if law == MuLaw && c == 0x7f {
				continue
			}
			codes = append(codes, byte(c))
		}
		pcm := law.Decode(nil, codes)
		got := law.Encode([]byte{7}, append(pcm, 0x12)) // an odd byte at the end
		if !bytes.Equal(got[1:], codes) || got[0] != 7 {
			t.Errorf("%v: Encode(Decode(codes)) differs from codes", law)
		}
	}
}
