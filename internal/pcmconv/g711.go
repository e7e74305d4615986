package pcmconv

// Law is a G.711 companding law (ITU-T G.711): 8-bit codes for 16-bit
// samples, as telephony sends them. Both directions are sample by sample
// and keep no state.
type Law uint8

// The two laws of G.711.
const (
	// MuLaw is G.711 μ-law (North America, Japan).
	MuLaw Law = 1 + iota
	// ALaw is G.711 A-law (the rest of the world).
	ALaw
)

func (l Law) String() string {
	switch l {
	case MuLaw:
		return "mu-law"
	case ALaw:
		return "A-law"
	}
	return "unknown law"
}

// DecodeSample is the 16-bit sample of a G.711 code: the middle of the
// code's step, scaled from G.711's 14 (μ-law) or 13 (A-law) bits to 16.
func (l Law) DecodeSample(code byte) int16 {
	if l == ALaw {
		return alawDecode[code]
	}
	return mulawDecode[code]
}

// EncodeSample is the G.711 code of a 16-bit sample: the code whose step,
// as G.711 lays the steps out, holds the sample. It is what ITU-T G.191's
// reference implementation of G.711 (g711.c, alaw_compress and
// ulaw_compress) computes: the sample cut to 14 (μ-law) or 13 (A-law)
// bits, a negative one by its ones' complement, so that the steps of the
// negative half mirror the positive half's around -1/2, as two's
// complement's range lies. Decoding then encoding gives every code back,
// but for μ-law's negative zero (0x7f), which encodes as 0xff.
func (l Law) EncodeSample(s int16) byte {
	sign, m := byte(0x80), uint16(s)
	if s < 0 {
		sign, m = 0, ^m
	}
	if l == ALaw {
		return (alawEncode[m>>4] | sign) ^ 0x55
	}
	// μ-law sends every bit inverted, the sign too.
	return ^(mulawEncode[m>>2] | (sign ^ 0x80))
}

// Decode appends to dst the LINEAR16 samples (16-bit little-endian) of the
// G.711 codes in src, one per byte, and returns it.
func (l Law) Decode(dst, src []byte) []byte {
	table := &mulawDecode
	if l == ALaw {
		table = &alawDecode
	}
	for _, c := range src {
		v := uint16(table[c])
		dst = append(dst, byte(v), byte(v>>8))
	}
	return dst
}

// Encode appends to dst the G.711 codes of the LINEAR16 samples in src and
// returns it. src holds whole samples: a last odd byte is not encoded
// (a Downmixer of one channel keeps a stream's samples whole).
func (l Law) Encode(dst, src []byte) []byte {
	for i := 0; i+1 < len(src); i += 2 {
		dst = append(dst, l.EncodeSample(int16(uint16(src[i])|uint16(src[i+1])<<8)))
	}
	return dst
}

// The tables, built once from G.711's bit layout: a sign, a 3-bit segment
// and a 4-bit step within it. They are read-only.
var (
	// mulawDecode and alawDecode are the samples of the 256 codes.
	mulawDecode = func() (t [256]int16) {
		for i := range t {
			// Sent inverted; the bias of 33 (0x84 at 16 bits) makes the
			// segments start at 0.
			u := ^byte(i)
			exp, mant := int(u>>4)&7, int(u&0x0f)
			v := ((mant<<3 + 0x84) << exp) - 0x84
			if u&0x80 != 0 {
				v = -v
			}
			t[i] = int16(v)
		}
		return t
	}()
	alawDecode = func() (t [256]int16) {
		for i := range t {
			// Even bits sent inverted.
			a := byte(i) ^ 0x55
			exp, mant := int(a>>4)&7, int(a&0x0f)
			v := mant<<4 + 8
			if exp > 0 {
				v = (v + 0x100) << (exp - 1)
			}
			if a&0x80 == 0 {
				v = -v
			}
			t[i] = int16(v)
		}
		return t
	}()

	// mulawEncode is the segment and step (not inverted, no sign) of
	// each 14-bit magnitude: G.191's ulaw_compress.
	mulawEncode = func() (t [8192]byte) {
		for i := range t {
			abs := min(i+33, 0x1fff)
			seg := 1
			for v := abs >> 6; v != 0; v >>= 1 {
				seg++
			}
			t[i] = byte((seg-1)<<4 | (abs>>seg)&0x0f)
		}
		return t
	}()
	// alawEncode is the segment and step (no sign, even bits not yet
	// inverted) of each 12-bit magnitude: G.191's alaw_compress.
	alawEncode = func() (t [2048]byte) {
		for i := range t {
			v, exp := i, 0
			if v > 15 {
				exp = 1
				for v > 16+15 {
					v >>= 1
					exp++
				}
				v -= 16
			}
			t[i] = byte(exp<<4 | v)
		}
		return t
	}()
)
