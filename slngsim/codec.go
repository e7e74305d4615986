package slngsim

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
)

// The simulator's audio is a modem, so that speech is checkable: Synthesize
// turns text into tones and Decode (and the simulator's STT) turns them back
// into exactly the same text. Every UTF-8 byte of the text becomes two
// symbols, one per nibble; a symbol is symbolSamples samples of a sine with
// exactly 4+nibble cycles (1 to 5 kHz at 24 kHz: an audible warble, never
// silence). One silent symbol ends each utterance. The decoder counts sign
// changes per symbol, which survives G.711 companding and any chunking.
//
// Encodings: linear16 is 16-bit little-endian PCM; mulaw and alaw are G.711
// of the same signal. mp3 and opus are stand-ins: the bytes are linear16 PCM,
// not real MP3 or Opus, so that they too round trip.
const (
	symbolSamples = 96
	minCycles     = 4
	amplitude     = 8000.0
)

// symbolTable holds the 17 symbols (16 nibbles, then silence) as samples.
var symbolTable = func() [17][symbolSamples]int16 {
	var t [17][symbolSamples]int16
	for n := range 16 {
		k := float64(minCycles + n)
		for i := range symbolSamples {
			// The half-sample phase keeps every sample away from zero, so
			// that each sign change is unambiguous.
			t[n][i] = int16(amplitude * math.Sin(2*math.Pi*k*(float64(i)+0.5)/symbolSamples))
		}
	}
	return t
}()

const silence = 16

// quiet is the largest sample amplitude the decoder takes for silence.
const quiet = 256

// bytesPerSample is the size of one sample in enc, or 0 for an unknown one.
func bytesPerSample(enc string) int {
	switch enc {
	case "linear16", "pcm", "mp3", "opus":
		return 2
	case "mulaw", "alaw":
		return 1
	}
	return 0
}

// Synthesize returns the audio for one utterance of text in enc
// ("linear16", "mulaw", "alaw", or the stand-ins "mp3" and "opus"), ending
// with the end-of-utterance symbol. It is deterministic; sampleRate only
// scales playback speed. Unknown encodings give linear16.
func Synthesize(text string, enc string, sampleRate int) []byte {
	_ = sampleRate
	bps := bytesPerSample(enc)
	if bps == 0 {
		bps, enc = 2, "linear16"
	}
	out := make([]byte, 0, (2*len(text)+1)*symbolSamples*bps)
	emit := func(sym int) {
		for _, s := range symbolTable[sym] {
			out = appendSample(out, s, enc)
		}
	}
	for i := 0; i < len(text); i++ {
		emit(int(text[i] >> 4))
		emit(int(text[i] & 0xf))
	}
	emit(silence)
	return out
}

func appendSample(out []byte, s int16, enc string) []byte {
	switch enc {
	case "mulaw":
		return append(out, pcmconv.MuLaw.EncodeSample(s))
	case "alaw":
		return append(out, pcmconv.ALaw.EncodeSample(s))
	}
	return append(out, byte(s), byte(uint16(s)>>8))
}

// AudioDuration is the playback duration of n bytes of audio.
func AudioDuration(n int, enc string, sampleRate int) float64 {
	bps := bytesPerSample(enc)
	if bps == 0 || sampleRate <= 0 {
		return 0
	}
	return float64(n/bps) / float64(sampleRate)
}

// Decode turns audio made by Synthesize (any number of utterances,
// concatenated) back into text; utterances are joined by a single space.
func Decode(audio []byte, enc string, sampleRate int) (string, error) {
	d, err := newDecoder(enc, sampleRate)
	if err != nil {
		return "", err
	}
	var parts []string
	d.write(audio, func(ev decoded) {
		if ev.final && len(ev.text) > 0 {
			parts = append(parts, string(ev.text))
		}
	})
	if len(d.pending) > 0 {
		parts = append(parts, string(d.pending))
	}
	text := strings.Join(parts, " ")
	if !utf8.ValidString(text) {
		return text, errors.New("decoded text is not valid UTF-8")
	}
	return text, nil
}

// decoder is the streaming inverse of Synthesize: it accepts audio in
// chunks of any size and reports utterances as they end.
type decoder struct {
	enc        string
	bps        int
	sampleRate int

	carry  [2]byte // a partial sample left over from the previous chunk
	ncarry int
	block  [symbolSamples]int16
	nblock int
	// pos is the position, in samples, after the last block decoded
	// (silence and noise included) and any quiet samples skipped since.
	pos int64
	// blockStart is the position of the block being filled.
	blockStart int64
	// resync is set after a quiet block: quiet samples are then skipped
	// one by one and the next block starts at the first loud sample. A
	// recognizer that hears audio from an arbitrary offset (a reconnect
	// replays from where a final arrived) finds the symbols again in the
	// pause that follows an utterance, as a real one finds words again.
	resync bool

	nibble  int // pending high nibble, or -1
	pending []byte
	// uttStart is the position, in samples, where the pending utterance
	// began.
	uttStart int64
}

// decoded is what the decoder reports: an utterance that ended (final) or
// grew (partial).
type decoded struct {
	text       []byte // valid until the next write
	final      bool
	start, end float64 // seconds from the first audio byte
}

func newDecoder(enc string, sampleRate int) (*decoder, error) {
	bps := bytesPerSample(enc)
	if bps == 0 {
		return nil, fmt.Errorf("unknown encoding %q", enc)
	}
	if sampleRate <= 0 {
		return nil, fmt.Errorf("invalid sample rate %d", sampleRate)
	}
	return &decoder{enc: enc, bps: bps, sampleRate: sampleRate, nibble: -1}, nil
}

// seconds converts a position in samples to seconds.
func (d *decoder) seconds(samples int64) float64 {
	return float64(samples) / float64(d.sampleRate)
}

// write decodes a chunk; emit is called for every completed utterance.
func (d *decoder) write(b []byte, emit func(decoded)) {
	for len(b) > 0 {
		var s int16
		if d.bps == 1 {
			s = d.expand(b[0])
			b = b[1:]
		} else {
			if d.ncarry == 0 && len(b) >= 2 {
				s = int16(uint16(b[0]) | uint16(b[1])<<8)
				b = b[2:]
			} else {
				d.carry[d.ncarry] = b[0]
				d.ncarry++
				b = b[1:]
				if d.ncarry < 2 {
					continue
				}
				s = int16(uint16(d.carry[0]) | uint16(d.carry[1])<<8)
				d.ncarry = 0
			}
		}
		if d.nblock == 0 && d.resync {
			if s <= quiet && s >= -quiet {
				d.pos++ // a quiet sample between utterances
				continue
			}
			d.resync = false
		}
		if d.nblock == 0 {
			d.blockStart = d.pos
		}
		d.block[d.nblock] = s
		d.nblock++
		if d.nblock == symbolSamples {
			d.nblock = 0
			d.pos += symbolSamples
			d.symbol(emit)
		}
	}
}

func (d *decoder) expand(b byte) int16 {
	if d.enc == "alaw" {
		return pcmconv.ALaw.DecodeSample(b)
	}
	return pcmconv.MuLaw.DecodeSample(b)
}

// symbol classifies one full block: cycles = (sign changes + 1) / 2.
func (d *decoder) symbol(emit func(decoded)) {
	changes, loud := 0, 0
	for i := 1; i < symbolSamples; i++ {
		if (d.block[i] < 0) != (d.block[i-1] < 0) {
			changes++
		}
	}
	for _, s := range d.block {
		if s > quiet || s < -quiet {
			loud++
		}
	}
	idx := d.blockStart
	if loud < symbolSamples/2 {
		d.resync = true
		d.endUtterance(emit, idx)
		return
	}
	n := (changes+1)/2 - minCycles
	if n < 0 || n > 15 {
		return // noise: not a symbol of ours
	}
	if d.nibble < 0 {
		if len(d.pending) == 0 {
			d.uttStart = idx
		}
		d.nibble = n
		return
	}
	d.pending = append(d.pending, byte(d.nibble<<4|n))
	d.nibble = -1
}

func (d *decoder) endUtterance(emit func(decoded), endSymbol int64) {
	// endSymbol is the position, in samples, where the utterance ended.
	d.nibble = -1
	if len(d.pending) == 0 {
		return
	}
	emit(decoded{text: d.pending, final: true, start: d.seconds(d.uttStart), end: d.seconds(endSymbol)})
	d.pending = d.pending[:0]
}
