package slngsim

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// ElevenLabs routes send, with each frame of audio, when the characters
// spoken in it are heard: `alignment` for the text sent and
// `normalizedAlignment` for the text as the model normalized it, each
// {"chars": [...], "charStartTimesMs": [...], "charsDurationsMs": [...]}
// in integer milliseconds relative to the start of the frame's audio
// (ElevenLabs' stream-input AsyncAPI; docs/upstream.md, "Timings"). The
// simulator's audio is a modem (codec.go), so it knows exactly where each
// character is: its bytes' symbols. A character is listed with the frame
// in which its audio starts, and its duration runs to where the next one
// starts (its audio may go on in the next frame); the last character also
// holds the silent symbol that ends the utterance, so that the durations
// of a turn add up to its audio. The simulator normalizes nothing: both
// objects list the same characters. Times are rounded to the millisecond
// from the turn's start, exact at 8, 16, 24 and 48 kHz.

// aligner places the characters of one utterance in its audio.
type aligner struct {
	text string
	// bps is the bytes per sample of the encoding, rate the sample rate.
	bps, rate int
	// total is the utterance's length in samples.
	total int
	// next is the byte offset in text of the first character not yet
	// listed: frames come in order.
	next int
}

func newAligner(text, enc string, rate int) *aligner {
	bps := bytesPerSample(enc)
	if bps == 0 {
		bps = 2 // Synthesize's linear16
	}
	return &aligner{text: text, bps: bps, rate: max(rate, 1), total: (2*len(text) + 1) * symbolSamples}
}

// sampleAt is where the character at byte offset i of the text starts, in
// samples: two symbols per byte.
func (a *aligner) sampleAt(i int) int {
	if i >= len(a.text) {
		return a.total // the last character holds the closing silence
	}
	return 2 * i * symbolSamples
}

// ms is the time of a sample, from the utterance's start, to the
// millisecond.
func (a *aligner) ms(sample int) int64 {
	return (int64(sample)*1000 + int64(a.rate)/2) / int64(a.rate)
}

// take lists the characters whose audio starts in the audio bytes
// [off, off+n) of the utterance: text[first:end], from sample from on.
func (a *aligner) take(off, n int) (from, first, end int) {
	from, to := off/a.bps, (off+n)/a.bps
	first = a.next
	end = first
	for end < len(a.text) && a.sampleAt(end) < to {
		_, size := utf8.DecodeRuneInString(a.text[end:])
		end += size
	}
	a.next = end
	return from, first, end
}

// appendFields appends the two alignment members of the frame carrying
// the audio bytes [off, off+n) of the utterance (`,"normalizedAlignment":
// {...},"alignment":{...}`, both null when no character starts there),
// without allocating when dst has room.
func (a *aligner) appendFields(dst []byte, off, n int) []byte {
	from, first, end := a.take(off, n)
	dst = append(dst, `,"normalizedAlignment":`...)
	dst = a.appendValue(dst, from, first, end)
	dst = append(dst, `,"alignment":`...)
	return a.appendValue(dst, from, first, end)
}

// alignedEnd is the alignment of audio an end-of-turn message carries
// (Profile.LastAudioInEnd), as its two members' values.
type alignedEnd struct{ normalized, text json.RawMessage }

// end is the alignment of the audio bytes [off, off+n), the utterance's
// last, which an end-of-turn message carries.
func (a *aligner) end(off, n int) *alignedEnd {
	from, first, end := a.take(off, n)
	v := json.RawMessage(a.appendValue(nil, from, first, end))
	return &alignedEnd{normalized: v, text: v}
}

// appendValue appends the alignment object of the characters in
// text[first:end], relative to sample from, or null when there are none.
func (a *aligner) appendValue(dst []byte, from, first, end int) []byte {
	if first == end {
		return append(dst, "null"...)
	}
	return a.appendObject(dst, from, first, end)
}

// appendObject appends the alignment object of the characters in
// text[first:end], relative to sample from.
func (a *aligner) appendObject(dst []byte, from, first, end int) []byte {
	base := a.ms(from)
	dst = append(dst, `{"chars":[`...)
	for i := first; i < end; {
		r, size := utf8.DecodeRuneInString(a.text[i:])
		if i > first {
			dst = append(dst, ',')
		}
		dst = appendJSONRune(dst, r)
		i += size
	}
	dst = append(dst, `],"charStartTimesMs":[`...)
	for i := first; i < end; {
		_, size := utf8.DecodeRuneInString(a.text[i:])
		if i > first {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, a.ms(a.sampleAt(i))-base, 10)
		i += size
	}
	dst = append(dst, `],"charsDurationsMs":[`...)
	for i := first; i < end; {
		_, size := utf8.DecodeRuneInString(a.text[i:])
		if i > first {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, a.ms(a.sampleAt(i+size))-a.ms(a.sampleAt(i)), 10)
		i += size
	}
	return append(dst, "]}"...)
}

// appendJSONRune appends r as a JSON string. Bytes that are not UTF-8
// come as U+FFFD, as they decode.
func appendJSONRune(dst []byte, r rune) []byte {
	dst = append(dst, '"')
	switch {
	case r == '"' || r == '\\':
		dst = append(dst, '\\', byte(r))
	case r < 0x20:
		dst = append(dst, `\u00`...)
		dst = append(dst, "0123456789abcdef"[r>>4], "0123456789abcdef"[r&0xf])
	default:
		dst = utf8.AppendRune(dst, r)
	}
	return append(dst, '"')
}
