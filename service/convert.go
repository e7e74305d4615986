package service

import (
	"bytes"
	"fmt"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Audio conversion between the caller's format and the one SLNG produces
// (Synthesize) or takes (Transcribe), when they differ (see
// Server.upstreamFormat): G.711 decoded, channels mixed to mono, the rate
// resampled, G.711 encoded, in that order, chunk by chunk on the stream's
// loop. A stream whose formats agree has no converter, and its audio goes
// through untouched.

// audioConv converts one stream of audio, chunk by chunk, keeping what a
// chunk leaves over (the resampler's history, part of a frame) for the
// next. Owned by the stream's loop.
type audioConv struct {
	decode pcmconv.Law // the input's G.711 law; 0 for LINEAR16
	// align keeps the samples whole (a frame of every channel, mixed to
	// mono) before the resampler and the encoder, so that neither ever
	// holds half a sample; nil when nothing follows it, or the input is
	// decoded mono G.711.
	align  *pcmconv.Downmixer
	rs     *pcmconv.Resampler // nil at equal rates
	encode pcmconv.Law        // the output's G.711 law; 0 for LINEAR16
	steps  []*speechv1.AudioConversion
	// buf are the stages' outputs, each stage writing to the one its
	// input is not in; convert's result is one of them.
	buf [2][]byte
}

// g711Laws are the G.711 laws of the API's encodings.
var g711Laws = map[speechv1.AudioEncoding]pcmconv.Law{
	speechv1.AudioEncoding_AUDIO_ENCODING_MULAW: pcmconv.MuLaw,
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:  pcmconv.ALaw,
}

// convertible reports whether the gateway converts audio of enc: LINEAR16
// and G.711, not the compressed encodings, for which it has no codec.
func convertible(enc speechv1.AudioEncoding) bool {
	return enc == speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16 || g711Laws[enc] != 0
}

// channelsOf is f's channel count, 0 meaning 1.
func channelsOf(f *speechv1.AudioFormat) int { return max(int(f.GetChannels()), 1) }

// newAudioConv returns the converter from one format to another (defaults
// filled in), nil when they are the same. Both must be convertible, to at
// most pcmconv.MaxChannels channels in and mono out, at rates from
// pcmconv.MinRate to pcmconv.MaxRate: the config's checks see to it.
func newAudioConv(from, to *speechv1.AudioFormat) (*audioConv, error) {
	ch := channelsOf(from)
	if from.GetEncoding() == to.GetEncoding() && from.GetSampleRateHz() == to.GetSampleRateHz() && ch == 1 {
		return nil, nil
	}
	if !convertible(from.GetEncoding()) || !convertible(to.GetEncoding()) || channelsOf(to) != 1 {
		return nil, fmt.Errorf("no conversion from %v to %v", from, to)
	}
	a := &audioConv{decode: g711Laws[from.GetEncoding()], encode: g711Laws[to.GetEncoding()]}
	cur := &speechv1.AudioFormat{Encoding: from.GetEncoding(), SampleRateHz: from.GetSampleRateHz(), Channels: int32(ch)}
	step := func(kind speechv1.AudioConversion_Kind, edit func(f *speechv1.AudioFormat)) {
		next := &speechv1.AudioFormat{Encoding: cur.Encoding, SampleRateHz: cur.SampleRateHz, Channels: cur.Channels}
		edit(next)
		a.steps = append(a.steps, &speechv1.AudioConversion{Kind: kind, From: cur, To: next})
		cur = next
	}
	linear16 := speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	if a.decode != 0 {
		step(speechv1.AudioConversion_KIND_DECODE, func(f *speechv1.AudioFormat) { f.Encoding = linear16 })
	}
	resample := from.GetSampleRateHz() != to.GetSampleRateHz()
	if ch > 1 || (a.decode == 0 && (resample || a.encode != 0)) {
		d, err := pcmconv.NewDownmixer(ch)
		if err != nil {
			return nil, err
		}
		a.align = d
		if ch > 1 {
			step(speechv1.AudioConversion_KIND_DOWNMIX, func(f *speechv1.AudioFormat) { f.Channels = 1 })
		}
	}
	if resample {
		rs, err := pcmconv.NewResampler(int(from.GetSampleRateHz()), int(to.GetSampleRateHz()))
		if err != nil {
			return nil, err
		}
		a.rs = rs
		step(speechv1.AudioConversion_KIND_RESAMPLE, func(f *speechv1.AudioFormat) { f.SampleRateHz = to.GetSampleRateHz() })
	}
	if a.encode != 0 {
		step(speechv1.AudioConversion_KIND_ENCODE, func(f *speechv1.AudioFormat) { f.Encoding = to.GetEncoding() })
	}
	return a, nil
}

// convert returns the output that src completes, valid until the next
// call; it may be empty while the resampler fills its history.
func (a *audioConv) convert(src []byte) []byte {
	in, i := src, 0
	if a.decode != 0 {
		a.buf[i] = a.decode.Decode(a.buf[i][:0], in)
		in, i = a.buf[i], i^1
	}
	if a.align != nil {
		a.buf[i] = a.align.Downmix(a.buf[i][:0], in)
		in, i = a.buf[i], i^1
	}
	if a.rs != nil {
		a.buf[i] = a.rs.ResampleLinear16(a.buf[i][:0], in)
		in, i = a.buf[i], i^1
	}
	if a.encode != 0 {
		a.buf[i] = a.encode.Encode(a.buf[i][:0], in)
		in = a.buf[i]
	}
	return in
}

// flush ends the resampler's stream and returns the output it held back,
// valid until the next call; the audio that follows starts a new one. A
// frame begun is kept for the next chunk.
func (a *audioConv) flush() []byte {
	if a.rs == nil {
		return nil
	}
	a.buf[0] = a.rs.FlushLinear16(a.buf[0][:0])
	if a.encode == 0 {
		return a.buf[0]
	}
	a.buf[1] = a.encode.Encode(a.buf[1][:0], a.buf[0])
	return a.buf[1]
}

// reset forgets the stream so far: what the resampler holds, and a frame
// begun.
func (a *audioConv) reset() {
	if a.align != nil {
		a.align.Reset()
	}
	if a.rs != nil {
		a.rs.Reset()
	}
}

// ttsConv converts a Synthesize stream's audio, turn by turn: the
// converter's state belongs to one turn's audio from one session (owner,
// sess). Audio of another turn, or from another session (a replacement
// replaying the turn, none of whose converted audio had reached the
// caller), starts it afresh, so that no sample of a cleared, failed or cut
// turn, nor of a session given up, reaches another; and each turn's end
// (or the end of a text a route speaks before the flush) brings out the
// samples the resampler held back, so that a turn's audio is complete.
type ttsConv struct {
	*audioConv
	owner *turn
	sess  TTSSession
}

// conversions are the steps t converts by, for `started`; nil for none.
func (t *ttsConv) conversions() []*speechv1.AudioConversion {
	if t == nil {
		return nil
	}
	return t.steps
}

// convertFrom sets the stream up for SLNG's audio in up: a converter
// into the caller's format when they differ.
func (c *synthCore) convertFrom(up, caller *speechv1.AudioFormat) error {
	c.up = up
	a, err := newAudioConv(up, caller)
	if a != nil {
		c.conv = &ttsConv{audioConv: a}
	}
	return err
}

// convertEvent hands ev to relay with its audio in the caller's format,
// preceded, at the end of the turn (or text) whose audio the converter
// holds, by the rest of that audio.
func (c *synthCore) convertEvent(ev slngclient.TTSEvent, now time.Time) {
	tc, t := c.conv, c.book.inProgress()
	// Audio the book drops (a discarded turn's, or audio outside any
	// turn) is never converted.
	live := t != nil && len(c.book.clears) == 0 && c.lease != nil
	switch ev.Kind {
	case slngclient.TTSAudio:
		if live && len(ev.Audio) > 0 {
			if tc.owner != t || tc.sess != c.lease.Session {
				tc.reset()
				tc.owner, tc.sess = t, c.lease.Session
			}
			ev.Audio = tc.convert(ev.Audio)
		}
	case slngclient.TTSTurnEnd, slngclient.TTSTextSpoken:
		ends := t != nil && t.flushed && !ev.Unflushed
		if ev.Kind == slngclient.TTSTextSpoken {
			ends = t == c.book.open
		}
		if live && ends && tc.owner == t && tc.sess == c.lease.Session {
			tc.owner, tc.sess = nil, nil
			if tail := tc.flush(); len(tail) > 0 {
				c.relay(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: tail}, now)
			}
		}
	}
	c.relay(ev, now)
}

// sttConv converts a Transcribe caller's audio into what SLNG takes, as it
// arrives, so that the replay buffer and every session hear the same
// audio. Transcript offsets are counted in the audio SLNG got, whose time
// is the caller's: the resampler keeps the audio aligned, and only each
// flush (a finalize, the end of the audio) rounds up to a whole sample.
type sttConv struct {
	*audioConv
	// clock and received count the caller's own audio, channels included,
	// for the audio the stream is metered for.
	clock    pcmClock
	received int64
}

// conversions are the steps s converts by, for `started`; nil for none.
func (s *sttConv) conversions() []*speechv1.AudioConversion {
	if s == nil {
		return nil
	}
	return s.steps
}

// newSTTConv returns the converter of a caller's audio into what SLNG
// takes, nil when SLNG takes it as it is.
func newSTTConv(caller, up *speechv1.AudioFormat) (*sttConv, error) {
	a, err := newAudioConv(caller, up)
	if a == nil || err != nil {
		return nil, err
	}
	clock := clockOf(caller)
	ch := int64(channelsOf(caller))
	clock.rate *= float64(ch)
	clock.frame *= ch
	return &sttConv{audioConv: a, clock: clock}, nil
}

// flushConv sends SLNG what the resampler held back of the caller's audio,
// before a finalize or the end of the audio.
func (c *sttCore) flushConv() {
	if c.conv == nil {
		return
	}
	c.send(c.conv.tail())
}

// up converts a chunk of the caller's audio, returning it in a slice of
// its own: the writer sends it after the loop has moved on. It may be
// empty while the resampler fills its history.
func (s *sttConv) up(audio []byte) []byte {
	s.received += int64(len(audio))
	return bytes.Clone(s.convert(audio))
}

// tail ends the resampler's stream, returning what it held back in a slice
// of its own, so that what goes upstream before a finalize or the end of
// the audio is all the caller sent.
func (s *sttConv) tail() []byte {
	return bytes.Clone(s.flush())
}
