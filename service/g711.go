package service

import speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"

// SLNG's STT bridge takes linear16, mp3 and opus only (pipecat-slng 0.5.0;
// SLNG's STT bridge reference), while telephony sends G.711. A Transcribe
// stream in MULAW or ALAW is decoded here, sample by sample, into 16-bit
// little-endian PCM at the same rate, and goes upstream as linear16.

// g711 decodes one G.711 byte to a 16-bit sample.
type g711 [256]int16

// mulaw and alaw are the ITU-T G.711 decoding tables (μ-law and A-law),
// built from the standard's bit layout: sign, 3-bit segment, 4-bit step.
var (
	mulaw = func() (t g711) {
		for i := range t {
			// Transmitted inverted; bias 33 (0x84 at 16 bits) makes the
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
	alaw = func() (t g711) {
		for i := range t {
			// Even bits transmitted inverted.
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
)

// decode returns in as 16-bit little-endian PCM, in a new slice.
func (t *g711) decode(in []byte) []byte {
	out := make([]byte, 2*len(in))
	for i, b := range in {
		v := uint16(t[b])
		out[2*i], out[2*i+1] = byte(v), byte(v>>8)
	}
	return out
}

// g711For is the decoder of a telephony encoding, nil for the others.
func g711For(enc speechv1.AudioEncoding) *g711 {
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		return &mulaw
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		return &alaw
	}
	return nil
}
