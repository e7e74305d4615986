package service

import (
	"math"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// replayBuffer keeps the audio a Transcribe caller sent that no final
// transcript is yet proven to cover, so that a new upstream session can
// hear it again. Its size is bounded; when it overflows, a reconnect can
// no longer be exact and the stream fails instead. The stream's loop owns
// it.
type replayBuffer struct {
	buf      []byte
	start    int64 // stream byte offset of buf[0]
	end      int64 // stream byte offset after the last byte received
	max      int
	overflow bool // audio after the last final was dropped
}

func (r *replayBuffer) add(b []byte) {
	r.end += int64(len(b))
	if r.max <= 0 {
		r.start = r.end
		r.overflow = true
		return
	}
	r.buf = append(r.buf, b...)
	if over := len(r.buf) - r.max; over > 0 {
		r.buf = r.buf[over:]
		r.start += int64(over)
		r.overflow = true
	}
}

// trim forgets the audio before off, which a final transcript covered.
func (r *replayBuffer) trim(off int64) {
	if off < r.start {
		return // still missing audio between the final and the buffer
	}
	off = min(off, r.end)
	if cap(r.buf) > 2*r.max && len(r.buf)-int(off-r.start) < r.max/2 {
		// Let go of a large array that holds mostly forgotten audio.
		r.buf = append([]byte(nil), r.buf[off-r.start:]...)
	} else {
		// Move what is left to the front of the same array, usually less
		// than an utterance, so that add does not need a new array after
		// every final.
		r.buf = r.buf[:copy(r.buf, r.buf[off-r.start:])]
	}
	r.start = off
	r.overflow = false
}

// tail returns how many bytes were received after the last final, and
// whether some of them were dropped.
func (r *replayBuffer) tail() (n int64, overflow bool) {
	return r.end - r.start, r.overflow
}

// snapshot copies the audio to replay and returns it with the stream
// offset of its first byte; overflow reports that it is incomplete.
func (r *replayBuffer) snapshot() (audio []byte, start int64, overflow bool) {
	return append([]byte(nil), r.buf...), r.start, r.overflow
}

// pcmClock converts between stream byte offsets and stream time for
// uncompressed audio. Compressed formats have no such mapping, so their
// streams cannot be resumed (rate is 0).
type pcmClock struct {
	rate  float64 // bytes per second
	frame int64   // bytes per sample
}

// clockOf is the clock of f; its zero value for compressed encodings.
func clockOf(f *speechv1.AudioFormat) pcmClock {
	bps := bytesPerSecond(f)
	if bps <= 0 {
		return pcmClock{}
	}
	return pcmClock{rate: bps, frame: int64(bps / float64(f.GetSampleRateHz()))}
}

func (c pcmClock) ok() bool { return c.rate > 0 }

func (c pcmClock) duration(off int64) time.Duration {
	return time.Duration(float64(off) / c.rate * float64(time.Second))
}

// offset is the byte offset of stream time d, on a sample boundary.
func (c pcmClock) offset(d time.Duration) int64 {
	samples := math.Round(d.Seconds() * c.rate / float64(c.frame))
	return int64(samples) * c.frame
}

// Default synthesis format: what SLNG's own clients use (slng-protocol.md
// section 10).
const (
	defaultTTSSampleRate = 24000
	defaultSTTSampleRate = 16000
)

// bytesPerSecond is the playback rate of uncompressed formats, 0 otherwise.
func bytesPerSecond(f *speechv1.AudioFormat) float64 {
	switch f.GetEncoding() {
	case speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16:
		return 2 * float64(f.GetSampleRateHz())
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		return float64(f.GetSampleRateHz())
	}
	return 0
}
