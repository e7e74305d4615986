package service

import (
	"encoding/binary"
	"testing"
)

// g711Reference decodes a G.711 code as the standard's tables describe it,
// independently of the bit tricks of the decoder: segment e of a law
// starts at a magnitude, its 16 steps have a width, and a code decodes to
// the middle of its step, then is scaled to 16 bits. μ-law (14-bit
// magnitudes, codes sent inverted): segment e starts at 2^(e+5)-33 with
// steps of 2^(e+1), and a set sign bit is negative. A-law (13-bit, even
// bits sent inverted): segment 0 starts at 0 with steps of 2, segment e>0
// at 2^(e+4) with steps of 2^e, and a set sign bit is positive.
func g711Reference(law string, code byte) int16 {
	switch law {
	case "mulaw":
		u := ^code
		e, m := int(u>>4&7), int(u&15)
		start, step := 1<<(e+5)-33, 1<<(e+1)
		v := (start + step*m + step/2) * 4
		if u&0x80 != 0 {
			v = -v
		}
		return int16(v)
	default:
		a := code ^ 0x55
		e, m := int(a>>4&7), int(a&15)
		start, step := 0, 2
		if e > 0 {
			start, step = 1<<(e+4), 1<<e
		}
		v := (start + step*m + step/2) * 8
		if a&0x80 == 0 {
			v = -v
		}
		return int16(v)
	}
}

// TestG711Tables: every one of the 256 codes of each law decodes exactly
// to the standard's value, and decode lays the samples out as 16-bit
// little-endian PCM.
func TestG711Tables(t *testing.T) {
	t.Parallel()
	for law, table := range map[string]*g711{"mulaw": &mulaw, "alaw": &alaw} {
		in := make([]byte, 256)
		for i := range in {
			in[i] = byte(i)
			if got, want := table[i], g711Reference(law, byte(i)); got != want {
				t.Errorf("%s code %#02x = %d, want %d", law, i, got, want)
			}
		}
		out := table.decode(in)
		for i := range in {
			if got := int16(binary.LittleEndian.Uint16(out[2*i:])); got != g711Reference(law, byte(i)) {
				t.Fatalf("%s decode: sample %d = %d", law, i, got)
			}
		}
	}
	// Anchors from the standard: the largest magnitudes, and silence.
	if mulaw[0x00] != -32124 || mulaw[0x80] != 32124 || mulaw[0xff] != 0 || alaw[0xaa] != 32256 || alaw[0xd5] != 8 {
		t.Errorf("anchors: mulaw %d %d %d, alaw %d %d", mulaw[0x00], mulaw[0x80], mulaw[0xff], alaw[0xaa], alaw[0xd5])
	}
}
