package pcmconv

import "fmt"

// MaxChannels bounds the channels a Downmixer mixes.
const MaxChannels = 8

// Downmixer turns interleaved little-endian 16-bit PCM of several channels
// (LINEAR16 frames: one sample of each channel in turn) into mono: each
// frame becomes the mean of its samples, rounded to the nearest, so that
// two channels carrying the same signal give that signal, and nothing
// clips. Chunks may end anywhere, even inside a sample; the rest of a
// frame waits for the next chunk.
type Downmixer struct {
	channels int
	partial  [2 * MaxChannels]byte // a frame begun in an earlier chunk
	n        int                   // bytes of it
}

// NewDownmixer returns a Downmixer of frames of channels channels, from 1
// (a copy) to MaxChannels.
func NewDownmixer(channels int) (*Downmixer, error) {
	if channels < 1 || channels > MaxChannels {
		return nil, fmt.Errorf("pcmconv: %d channels: downmixing takes 1 to %d", channels, MaxChannels)
	}
	return &Downmixer{channels: channels}, nil
}

// Downmix appends to dst the mono samples of the frames src completes, as
// little-endian bytes, and returns it.
func (d *Downmixer) Downmix(dst, src []byte) []byte {
	frame := 2 * d.channels
	if d.n > 0 {
		k := copy(d.partial[d.n:frame], src)
		d.n += k
		src = src[k:]
		if d.n < frame {
			return dst
		}
		dst = d.mix(dst, d.partial[:frame])
		d.n = 0
	}
	if d.channels == 1 {
		// A copy of the whole samples: the mean of one is itself.
		whole := len(src) &^ 1
		dst = append(dst, src[:whole]...)
		src = src[whole:]
	}
	for len(src) >= frame {
		dst = d.mix(dst, src[:frame])
		src = src[frame:]
	}
	d.n = copy(d.partial[:], src)
	return dst
}

// Pending is how many bytes of an incomplete frame the Downmixer holds.
func (d *Downmixer) Pending() int { return d.n }

// Reset drops the incomplete frame held, to start another stream.
func (d *Downmixer) Reset() { d.n = 0 }

// mix appends the mean of one frame's samples.
func (d *Downmixer) mix(dst, frame []byte) []byte {
	var sum int32
	for i := 0; i < len(frame); i += 2 {
		sum += int32(int16(uint16(frame[i]) | uint16(frame[i+1])<<8))
	}
	n := int32(d.channels)
	// Rounded to the nearest, halves away from zero.
	var mean int32
	if sum >= 0 {
		mean = (2*sum + n) / (2 * n)
	} else {
		mean = -((-2*sum + n) / (2 * n))
	}
	return append(dst, byte(mean), byte(uint16(int16(mean))>>8))
}
