package service

import (
	"bytes"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/speech-gateway/speech-gateway/catalog"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// The models of the conversion tests: a TTS model whose route produces
// only 24 kHz LINEAR16 (as the catalog says), and an STT model that takes
// only LINEAR16 at 8 or 16 kHz.
const (
	pcm24kModel   = "acme/pcm24k:1"
	listen16Model = "acme/listen16k:1"
)

func convCatalog(t testing.TB) func() *catalog.Catalog {
	t.Helper()
	c, err := catalog.Parse([]byte(`models:
  - model: ` + pcm24kModel + `
    kind: tts
    source: test
    encodings: [linear16]
    encodings_complete: true
    sample_rates_hz: [24000]
    sample_rates_complete: true
  - model: ` + listen16Model + `
    kind: stt
    source: test
    encodings: [linear16, opus]
    encodings_complete: true
    sample_rates_hz: [8000, 16000]
    sample_rates_complete: true
`))
	if err != nil {
		t.Fatal(err)
	}
	return func() *catalog.Catalog { return c }
}

func format(enc speechv1.AudioEncoding, rate int32) *speechv1.AudioFormat {
	return &speechv1.AudioFormat{Encoding: enc, SampleRateHz: rate}
}

const (
	linear16 = speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	mulaw    = speechv1.AudioEncoding_AUDIO_ENCODING_MULAW
	alaw     = speechv1.AudioEncoding_AUDIO_ENCODING_ALAW
)

// resampled is what pcmconv makes of a whole stream of LINEAR16 at from:
// resampled to to, then G.711-encoded by law (0: LINEAR16).
func resampled(t testing.TB, pcm []byte, from, to int, law pcmconv.Law) []byte {
	t.Helper()
	out := pcm
	if from != to {
		r, err := pcmconv.NewResampler(from, to)
		if err != nil {
			t.Fatal(err)
		}
		out = r.FlushLinear16(r.ResampleLinear16(nil, pcm))
	}
	if law != 0 {
		out = law.Encode(nil, out)
	}
	return out
}

// TestUpstreamFormat: the format SLNG is asked for, by the catalog's
// lists and the caller's format.
func TestUpstreamFormat(t *testing.T) {
	t.Parallel()
	c, err := catalog.Parse([]byte(`models:
  - {model: a/tts-all:1, kind: tts, source: t, encodings: [linear16, mulaw, alaw, mp3], encodings_complete: true, sample_rates_hz: [8000, 16000, 24000], sample_rates_complete: true}
  - {model: a/tts-g711:1, kind: tts, source: t, encodings: [alaw], encodings_complete: true, sample_rates_hz: [16000, 48000], sample_rates_complete: true}
  - {model: a/tts-open:1, kind: tts, source: t, encodings: [mulaw], sample_rates_hz: [24000], sample_rates_complete: true}
  - {model: a/stt:1, kind: stt, source: t, encodings: [linear16, opus], encodings_complete: true, sample_rates_hz: [8000, 16000], sample_rates_complete: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := coreServer(t, Config{Catalog: func() *catalog.Catalog { return c }})
	mp3 := speechv1.AudioEncoding_AUDIO_ENCODING_MP3
	tests := []struct {
		name  string
		model string
		stt   bool
		in    *speechv1.AudioFormat
		want  *speechv1.AudioFormat
	}{
		{"offered as asked", "a/tts-all:1", false, format(mulaw, 8000), format(mulaw, 8000)},
		{"a rate not offered: LINEAR16 at the nearest above", "a/tts-all:1", false, format(mulaw, 11025), format(linear16, 16000)},
		{"above every rate: the highest", "a/tts-all:1", false, format(linear16, 48000), format(linear16, 24000)},
		{"MP3 is never converted", "a/tts-all:1", false, format(mp3, 11025), format(mp3, 11025)},
		{"no LINEAR16: the G.711 offered", "a/tts-g711:1", false, format(mulaw, 8000), format(alaw, 16000)},
		{"no LINEAR16, a rate between", "a/tts-g711:1", false, format(linear16, 22050), format(alaw, 48000)},
		{"encodings not complete: asked for is offered", "a/tts-open:1", false, format(mulaw, 8000), format(mulaw, 24000)},
		{"outside the catalog: as asked", "a/unknown:1", false, format(alaw, 11025), format(alaw, 11025)},
		{"STT G.711 goes up as LINEAR16", "a/unknown:1", true, format(mulaw, 8000), format(linear16, 8000)},
		{"STT resampled to the nearest above", "a/stt:1", true, format(linear16, 44100), format(linear16, 16000)},
		{"STT between two rates", "a/stt:1", true, format(alaw, 11025), format(linear16, 16000)},
		{"STT Opus at a rate not taken: refused as it is", "a/stt:1", true, format(speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, 48000),
			format(speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, 48000)},
	}
	for _, tt := range tests {
		got := s.upstreamFormat(tt.model, tt.in, tt.stt)
		tt.want.Channels = 1
		if !proto.Equal(got, tt.want) {
			t.Errorf("%s: upstreamFormat(%s, %v) = %v, want %v", tt.name, tt.model, tt.in, got, tt.want)
		}
	}
}

// TestAudioConv: each converter's steps, and its output, chunk by chunk
// (cut anywhere, even inside a sample or a frame) and flushed, is what
// pcmconv makes of the whole stream at once.
func TestAudioConv(t *testing.T) {
	t.Parallel()
	pcm24 := slngsim.Synthesize("Conversions.", "linear16", 24000)
	stereo := func(f *speechv1.AudioFormat) *speechv1.AudioFormat { f.Channels = 2; return f }
	kinds := func(k ...speechv1.AudioConversion_Kind) []speechv1.AudioConversion_Kind { return k }
	tests := []struct {
		name     string
		from, to *speechv1.AudioFormat
		in       []byte
		steps    []speechv1.AudioConversion_Kind
		want     []byte
	}{
		{"24 kHz to 8 kHz mu-law", format(linear16, 24000), format(mulaw, 8000), pcm24,
			kinds(speechv1.AudioConversion_KIND_RESAMPLE, speechv1.AudioConversion_KIND_ENCODE),
			resampled(t, pcm24, 24000, 8000, pcmconv.MuLaw)},
		{"A-law at the same rate", format(linear16, 24000), format(alaw, 24000), pcm24,
			kinds(speechv1.AudioConversion_KIND_ENCODE), pcmconv.ALaw.Encode(nil, pcm24)},
		{"mu-law to A-law", format(mulaw, 8000), format(alaw, 8000), pcmconv.MuLaw.Encode(nil, pcm24),
			kinds(speechv1.AudioConversion_KIND_DECODE, speechv1.AudioConversion_KIND_ENCODE),
			pcmconv.ALaw.Encode(nil, pcmconv.MuLaw.Decode(nil, pcmconv.MuLaw.Encode(nil, pcm24)))},
		{"mu-law 8 kHz to 16 kHz", format(mulaw, 8000), format(linear16, 16000), pcmconv.MuLaw.Encode(nil, pcm24),
			kinds(speechv1.AudioConversion_KIND_DECODE, speechv1.AudioConversion_KIND_RESAMPLE),
			resampled(t, pcmconv.MuLaw.Decode(nil, pcmconv.MuLaw.Encode(nil, pcm24)), 8000, 16000, 0)},
		{"stereo at the same rate", stereo(format(linear16, 16000)), format(linear16, 16000), interleave(pcm24, pcm24),
			kinds(speechv1.AudioConversion_KIND_DOWNMIX), pcm24},
		{"44.1 kHz stereo to 16 kHz", stereo(format(linear16, 44100)), format(linear16, 16000), interleave(pcm24, pcm24),
			kinds(speechv1.AudioConversion_KIND_DOWNMIX, speechv1.AudioConversion_KIND_RESAMPLE),
			resampled(t, pcm24, 44100, 16000, 0)},
	}
	for _, tt := range tests {
		a, err := newAudioConv(tt.from, tt.to)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var kinds []speechv1.AudioConversion_Kind
		for i, s := range a.steps {
			kinds = append(kinds, s.GetKind())
			if i > 0 && !proto.Equal(s.GetFrom(), a.steps[i-1].GetTo()) {
				t.Errorf("%s: step %d starts from %v, the step before ends at %v", tt.name, i, s.GetFrom(), a.steps[i-1].GetTo())
			}
		}
		if !slices.Equal(kinds, tt.steps) {
			t.Errorf("%s: steps %v, want %v", tt.name, kinds, tt.steps)
		}
		last := a.steps[len(a.steps)-1].GetTo()
		if last.GetEncoding() != tt.to.GetEncoding() || last.GetSampleRateHz() != tt.to.GetSampleRateHz() || last.GetChannels() != 1 {
			t.Errorf("%s: the last step ends at %v, want %v", tt.name, last, tt.to)
		}
		for _, chunk := range []int{len(tt.in), 961, 3} {
			var got []byte
			for off := 0; off < len(tt.in); off += chunk {
				got = append(got, a.convert(tt.in[off:min(off+chunk, len(tt.in))])...)
			}
			got = append(got, a.flush()...)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("%s, in chunks of %d: %d bytes differ from the %d expected", tt.name, chunk, len(got), len(tt.want))
			}
		}
	}
	if a, err := newAudioConv(format(mulaw, 8000), format(mulaw, 8000)); a != nil || err != nil {
		t.Errorf("no conversion: %v, %v", a, err)
	}
}

// interleave makes stereo LINEAR16 of two mono signals.
func interleave(l, r []byte) []byte {
	out := make([]byte, 0, 2*len(l))
	for i := 0; i+1 < len(l); i += 2 {
		out = append(out, l[i], l[i+1], r[i], r[i+1])
	}
	return out
}

// TestSynthesizeConvertsWhatTheRouteProduces: an 8 kHz mu-law (or A-law,
// or 16 kHz LINEAR16) Synthesize of a model whose route produces only
// 24 kHz LINEAR16 (the catalog says so): SLNG is asked for 24 kHz
// LINEAR16, `started` says so, and the caller gets, turn by turn, exactly
// the conversion of the audio SLNG sent; sequences, deliveries and
// durations count the caller's audio.
func TestSynthesizeConvertsWhatTheRouteProduces(t *testing.T) {
	t.Parallel()
	texts := []string{"The first turn.", "And a second one, a little longer than the first."}
	tests := []struct {
		name   string
		format *speechv1.AudioFormat
		law    pcmconv.Law
		steps  []speechv1.AudioConversion_Kind
	}{
		{"8 kHz mu-law", format(mulaw, 8000), pcmconv.MuLaw,
			[]speechv1.AudioConversion_Kind{speechv1.AudioConversion_KIND_RESAMPLE, speechv1.AudioConversion_KIND_ENCODE}},
		{"8 kHz A-law", format(alaw, 8000), pcmconv.ALaw,
			[]speechv1.AudioConversion_Kind{speechv1.AudioConversion_KIND_RESAMPLE, speechv1.AudioConversion_KIND_ENCODE}},
		{"16 kHz LINEAR16", format(linear16, 16000), 0, []speechv1.AudioConversion_Kind{speechv1.AudioConversion_KIND_RESAMPLE}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, up := newFakeGateway(t, Config{Catalog: convCatalog(t), Clock: newTestClock()})
			sess := newFakeTTS("one")
			up.tts <- sess
			ctx := testContext(t)
			b := h.synthesize(t, ctx, &speechv1.SynthesisConfig{Model: pcm24kModel, Format: tt.format})
			for _, text := range texts {
				b.send(ttsText(text, true))
			}
			awaitFlushes(t, sess, len(texts))
			// What the route produces: 24 kHz LINEAR16, in frames of an
			// odd size.
			for _, text := range texts {
				speakInChunks(sess, slngsim.Synthesize(text, "linear16", 24000), 777)
			}
			if err := b.stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			resps, err := recvAll(t, b.stream.Recv)
			if err != nil {
				t.Fatal(err)
			}
			if tts, _ := up.asked(); len(tts) != 1 || tts[0].Cfg.Encoding != "linear16" || tts[0].Cfg.SampleRate != 24000 {
				t.Errorf("SLNG was asked for %+v, want 24 kHz LINEAR16", tts)
			}
			started := resps[0].GetStarted()
			if up := started.GetUpstreamFormat(); up.GetEncoding() != linear16 || up.GetSampleRateHz() != 24000 || up.GetChannels() != 1 {
				t.Errorf("upstream_format = %v, want 24 kHz LINEAR16", up)
			}
			var steps []speechv1.AudioConversion_Kind
			for _, s := range started.GetConversions() {
				steps = append(steps, s.GetKind())
			}
			if !slices.Equal(steps, tt.steps) || !proto.Equal(started.GetConversions()[len(steps)-1].GetTo(),
				&speechv1.AudioFormat{Encoding: tt.format.Encoding, SampleRateHz: tt.format.SampleRateHz, Channels: 1}) {
				t.Errorf("conversions = %v, want %v ending in %v", started.GetConversions(), tt.steps, tt.format)
			}
			rate := int(tt.format.GetSampleRateHz())
			perTurn := map[uint64][]byte{}
			var seq uint64
			ends := 0
			for _, r := range resps {
				if a := r.GetAudio(); a != nil {
					if seq++; a.GetSequence() != seq {
						t.Fatalf("sequence %d after %d", a.GetSequence(), seq-1)
					}
					perTurn[a.GetTurnId()] = append(perTurn[a.GetTurnId()], a.GetData()...)
				}
				if e := r.GetAudioEnd(); e != nil {
					ends++
					d := e.GetDelivered()
					n := uint64(len(perTurn[e.GetTurnId()]))
					bps := uint64(2)
					if tt.law != 0 {
						bps = 1
					}
					if d.GetAudioBytes() != n || d.GetAudioDuration().AsDuration() != time.Duration(n/bps)*time.Second/time.Duration(rate) {
						t.Errorf("turn %d delivered %v, want %d bytes of %d Hz", e.GetTurnId(), d, n, rate)
					}
				}
			}
			if ends != len(texts) {
				t.Errorf("%d audio_end for %d turns", ends, len(texts))
			}
			for i, text := range texts {
				want := resampled(t, slngsim.Synthesize(text, "linear16", 24000), 24000, rate, tt.law)
				if got := perTurn[uint64(i+1)]; !bytes.Equal(got, want) {
					t.Errorf("turn %d: %d bytes, want exactly the %d bytes of the converted 24 kHz audio (first difference at %d)",
						i+1, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestSynthesizeRouteAskedItsFormat: SLNG is asked for what the route
// produces, and a model outside the catalog for what the caller asked
// for, whose audio the caller gets as SLNG sent it, unconverted.
func TestSynthesizeRouteAskedItsFormat(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Catalog: convCatalog(t), Clock: newTestClock()})
	ctx := testContext(t)
	for _, model := range []string{pcm24kModel, "acme/unlisted:1"} {
		sess := newFakeTTS(model)
		up.tts <- sess
		stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Hi.",
			Config: &speechv1.SynthesisConfig{Model: model, Format: format(mulaw, 8000)}})
		if err != nil {
			t.Fatal(err)
		}
		awaitFlushes(t, sess, 1)
		produced := slngsim.Synthesize("Hi.", "linear16", 24000)
		if model != pcm24kModel {
			produced = slngsim.Synthesize("Hi.", "mulaw", 8000)
		}
		speakInChunks(sess, produced, 777)
		resps, err := recvAll(t, stream.Recv)
		if err != nil {
			t.Fatal(err)
		}
		if model != pcm24kModel {
			if got := audioOf(resps); !bytes.Equal(got, produced) || resps[0].GetStarted().GetConversions() != nil {
				t.Errorf("%s: %d bytes and conversions %v, want SLNG's mu-law as it is", model, len(got), resps[0].GetStarted().GetConversions())
			}
		}
	}
	tts, _ := up.asked()
	var asked []string
	for _, a := range tts {
		asked = append(asked, a.Req.Endpoint.Model+" "+a.Cfg.Encoding+" "+strconv.Itoa(a.Cfg.SampleRate))
	}
	if want := []string{pcm24kModel + " linear16 24000", "acme/unlisted:1 mulaw 8000"}; !slices.Equal(asked, want) {
		t.Errorf("SLNG was asked for %q, want %q", asked, want)
	}
}

// TestSynthesizeRefusesChannels: synthesized audio is mono; more channels
// are refused before any session is acquired.
func TestSynthesizeRefusesChannels(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Clock: newTestClock()})
	f := format(linear16, 24000)
	f.Channels = 2
	_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Hi.", Config: &speechv1.SynthesisConfig{Format: f}})
	st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
	if got := badRequest(st); len(got) != 1 || !strings.HasPrefix(got[0], "config.format.channels: synthesized audio is mono") {
		t.Errorf("violations = %q", got)
	}
	noAcquires(t, up)
}

// convRig drives a Synthesize core whose SLNG audio is converted, and
// keeps the audio it delivers per turn.
type convRig struct {
	t     *testing.T
	c     *synthCore
	audio map[uint64][]byte
	resps []*speechv1.SynthesizeResponse
	seq   uint64
}

func newConvRig(t *testing.T, caller *speechv1.AudioFormat) *convRig {
	s := coreServer(t, Config{Catalog: convCatalog(t)})
	r := &convRig{t: t, audio: map[uint64][]byte{},
		c: newSynthCore(s, zaptest.NewLogger(t), streamMeta{sessionID: "gw_test"}, &callerUsage{}, "", false, t0)}
	r.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{
		Config: &speechv1.SynthesisConfig{Model: pcm24kModel, Format: caller}}})
	return r
}

func (r *convRig) send(req *speechv1.SynthesizeRequest) {
	r.c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{msg: req}, t0)
	r.take()
}

func (r *convRig) acquired(id string) {
	sess := newFakeTTS(id)
	sess.readyAt = t0
	r.c.onResult(ttsResult{lease: coreLease[TTSSession](r.c.srv, "tts", sess, sess.release)}, t0)
	r.take()
}

func (r *convRig) event(ev slngclient.TTSEvent) {
	r.c.onUpstream(ev, t0)
	r.take()
}

// audio sends pcm as SLNG would, in chunks of an odd size.
func (r *convRig) audioIn(pcm []byte) {
	for off := 0; off < len(pcm); off += 777 {
		r.event(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm[off:min(off+777, len(pcm))]})
	}
}

// take copies what the core asked to send, as the loop does.
func (r *convRig) take() {
	for _, o := range r.c.out {
		if o.resp != nil {
			r.resps = append(r.resps, o.resp)
			continue
		}
		if r.seq++; o.seq != r.seq {
			r.t.Fatalf("sequence %d after %d", o.seq, r.seq-1)
		}
		r.audio[o.turn] = append(r.audio[o.turn], o.audio...)
	}
	r.c.out = r.c.out[:0]
	r.c.cmds = r.c.cmds[:0]
	if r.c.done {
		r.t.Fatalf("the stream ended: %v", r.c.err)
	}
}

// TestSynthesizeConversionTurnByTurn: the converter's state belongs to one
// turn's audio from one session. Each turn's audio is the conversion of
// that turn's SLNG audio alone, complete: after a clear (the cleared
// turn's held samples, and its frames that arrive before SLNG answers,
// reach nothing), after a session lost before any converted audio of a
// turn reached the caller (the new session's audio alone), and for text a
// route speaks before the flush.
func TestSynthesizeConversionTurnByTurn(t *testing.T) {
	t.Parallel()
	r := newConvRig(t, format(mulaw, 8000))
	want := func(pcm []byte) []byte { return resampled(t, pcm, 24000, 8000, pcmconv.MuLaw) }
	speech := func(text string) []byte { return slngsim.Synthesize(text, "linear16", 24000) }
	r.acquired("s1")

	// Turn 1: complete, tail included.
	r.send(ttsText("one", true))
	r.audioIn(speech("one"))
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if got := r.audio[1]; !bytes.Equal(got, want(speech("one"))) {
		t.Errorf("turn 1: %d bytes, want %d", len(got), len(want(speech("one"))))
	}
	end := r.resps[len(r.resps)-1].GetAudioEnd()
	if d := end.GetDelivered(); d.GetAudioBytes() != uint64(len(r.audio[1])) ||
		d.GetAudioDuration().AsDuration() != time.Duration(len(r.audio[1]))*time.Second/8000 {
		t.Errorf("turn 1 delivered %v for %d bytes of 8 kHz mu-law", d, len(r.audio[1]))
	}

	// Turn 2 is cleared halfway; its frames keep coming until SLNG's
	// answer. Turn 3 is converted afresh.
	two := speech("two, which is cleared")
	r.send(ttsText("two, which is cleared", true))
	r.audioIn(two[:len(two)/2])
	r.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	r.audioIn(two[len(two)/2:])
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
	r.send(ttsText("three", true))
	// Turn 3's text goes up once the session was quiet after its answer.
	r.c.onTick(t0.Add(clearQuiet))
	r.take()
	r.audioIn(speech("three"))
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if got := r.audio[3]; !bytes.Equal(got, want(speech("three"))) {
		t.Errorf("turn 3, after a cleared turn: %d bytes, want %d", len(got), len(want(speech("three"))))
	}

	// Turn 4: a few milliseconds of audio, all held by the resampler,
	// then the session is lost: the turn is spoken again on a new one,
	// whose audio alone the caller gets.
	r.send(ttsText("four", true))
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: speech("stale")[:100]})
	if len(r.audio[4]) != 0 {
		t.Fatalf("50 samples gave %d bytes; the resampler should hold them", len(r.audio[4]))
	}
	r.c.onUpstreamEnd(errFakeLost, t0)
	r.take()
	r.acquired("s2")
	r.audioIn(speech("four"))
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if got := r.audio[4]; !bytes.Equal(got, want(speech("four"))) {
		t.Errorf("turn 4, replayed on a new session: %d bytes, want %d", len(got), len(want(speech("four"))))
	}

	// Turn 5 on a route that speaks each text before the flush: the
	// text's audio is complete when the route says it spoke it.
	r.send(ttsText("five", false))
	r.audioIn(speech("five"))
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSTextSpoken})
	if got := r.audio[5]; !bytes.Equal(got, want(speech("five"))) {
		t.Errorf("turn 5's text spoken: %d bytes, want %d", len(got), len(want(speech("five"))))
	}
	r.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
	r.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	if end := r.resps[len(r.resps)-1].GetAudioEnd(); end.GetTurnId() != 5 || end.GetDelivered().GetAudioBytes() != uint64(len(r.audio[5])) {
		t.Errorf("turn 5 ended with %v, want its %d bytes", end, len(r.audio[5]))
	}
	if got := r.c.synthesizedAudio(); got != time.Duration(len(r.audio[1])+len(r.audio[2])+len(r.audio[3])+len(r.audio[4])+len(r.audio[5]))*time.Second/8000 {
		t.Errorf("synthesized audio %v, not the caller's 8 kHz audio", got)
	}
}

// TestTranscribeConvertsStereo441: 44.1 kHz stereo sent to a model that
// takes 8 or 16 kHz is mixed to mono and resampled to 16 kHz before SLNG
// hears it: SLNG is asked for 16 kHz and hears the whole of the caller's
// audio, as speech still (the simulator's recognizer decodes it back to
// the text, as it would the 16 kHz original); `started` says so; and the
// transcripts' offsets are the caller's time.
func TestTranscribeConvertsStereo441(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Catalog: convCatalog(t), Clock: newTestClock()})
	sess := newFakeSTT("one")
	sess.endOnEnd = false // SLNG sends the last final after the end of the audio
	up.stt <- sess
	const text = "Stereo at forty-four point one."
	// The simulator's speech at 16 kHz, as a 44.1 kHz recording of it:
	// the left and right channels differ by a hum, which the mix cancels.
	speech := resampled(t, slngsim.Synthesize(text, "linear16", 16000), 16000, 44100, 0)
	left, right := make([]byte, len(speech)), make([]byte, len(speech))
	for i := 0; i+1 < len(speech); i += 2 {
		s := int16(uint16(speech[i]) | uint16(speech[i+1])<<8)
		hum := int16(300 * math.Sin(2*math.Pi*50*float64(i/2)/44100))
		l, rt := uint16(s+hum), uint16(s-hum)
		left[i], left[i+1], right[i], right[i+1] = byte(l), byte(l>>8), byte(rt), byte(rt>>8)
	}
	in := format(linear16, 44100)
	in.Channels = 2
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.TranscribeRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(sttConfig(&speechv1.RecognitionConfig{Model: listen16Model, Format: in}))
	for audio := interleave(left, right); len(audio) > 0; {
		n := min(3529, len(audio))
		send(sttAudioReq(audio[:n]))
		audio = audio[n:]
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	sess.wrote(t, "close")
	// SLNG's final, which says nothing of where the speech was: the
	// gateway places it by the audio it sent.
	sess.send(final(text))
	sess.end(io.EOF)
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	if got := finalText(resps); got != text {
		t.Errorf("transcript %q, want %q", got, text)
	}
	started := resps[0].GetStarted()
	if !proto.Equal(started.GetUpstreamFormat(), &speechv1.AudioFormat{Encoding: linear16, SampleRateHz: 16000, Channels: 1}) {
		t.Errorf("upstream_format = %v", started.GetUpstreamFormat())
	}
	wantSteps := []*speechv1.AudioConversion{
		{Kind: speechv1.AudioConversion_KIND_DOWNMIX, From: &speechv1.AudioFormat{Encoding: linear16, SampleRateHz: 44100, Channels: 2},
			To: &speechv1.AudioFormat{Encoding: linear16, SampleRateHz: 44100, Channels: 1}},
		{Kind: speechv1.AudioConversion_KIND_RESAMPLE, From: &speechv1.AudioFormat{Encoding: linear16, SampleRateHz: 44100, Channels: 1},
			To: &speechv1.AudioFormat{Encoding: linear16, SampleRateHz: 16000, Channels: 1}},
	}
	if got := started.GetConversions(); len(got) != 2 || !proto.Equal(got[0], wantSteps[0]) || !proto.Equal(got[1], wantSteps[1]) {
		t.Errorf("conversions = %v", got)
	}
	if _, stt := up.asked(); len(stt) != 1 || stt[0].Cfg.Encoding != "linear16" || stt[0].Cfg.SampleRate != 16000 {
		t.Errorf("SLNG was asked for %+v, want 16 kHz LINEAR16", stt)
	}
	// SLNG heard the whole of the caller's audio at 16 kHz, and heard the
	// speech in it.
	heard := sess.received()
	if got, want := len(heard), (len(speech)/2*16000+44100-1)/44100*2; got != want {
		t.Errorf("SLNG heard %d bytes, want %d", got, want)
	}
	if got, err := slngsim.Decode(heard, "linear16", 16000); err != nil || got != text {
		t.Errorf("SLNG heard %q (%v), want the speech", got, err)
	}
	// The final ends where the caller's audio did, in the caller's time.
	callerEnd := time.Duration(len(speech)/2) * time.Second / 44100
	for _, r := range resps {
		if f := r.GetFinalTranscript(); f != nil && f.GetText() == text {
			if d := f.GetEndOffset().AsDuration() - callerEnd; d < -time.Millisecond || d > time.Millisecond || f.GetStartOffset().AsDuration() != 0 {
				t.Errorf("final from %v to %v, want from 0 to %v", f.GetStartOffset().AsDuration(), f.GetEndOffset().AsDuration(), callerEnd)
			}
		}
	}
}

// TestTranscribeConversionFlushes: what the resampler holds back of the
// caller's audio goes upstream before a finalize, which then covers all
// the audio sent before it, and before the end of the audio; a chunk the
// resampler holds entirely sends nothing (an empty frame would end SLNG's
// audio); and the stream is metered for the caller's own audio.
func TestTranscribeConversionFlushes(t *testing.T) {
	t.Parallel()
	r := newSTTRig(t, Config{Catalog: convCatalog(t)}, zaptest.NewLogger(t))
	in := format(linear16, 44100)
	in.Channels = 2
	r.caller(sttIn{config: &speechv1.RecognitionConfig{Model: listen16Model, Format: in}})
	if got := r.take(); got != "acquire:caller" {
		t.Fatalf("config: %s", got)
	}
	if got := r.step("acquired s1"); got != "started" {
		t.Fatalf("acquired: %s", got)
	}
	steps := []struct{ in, want string }{
		// 10 frames: all held.
		{"audio 40", ""},
		// ceil(10 * 16000 / 44100) = 4 samples.
		{"finalize", "audio:s1:8 finalize:s1"},
		// 100 ms, then half a frame, then the end: ceil(4410 * 16000 /
		// 44100) = 1600 samples, the last 64 held back until the end.
		{"audio 17640", "audio:s1:3072"},
		{"audio 2", ""},
		{"half-close", "audio:s1:128 close:s1"},
	}
	for _, s := range steps {
		if got := r.step(s.in); got != s.want {
			t.Errorf("%s: %q, want %q", s.in, got, s.want)
		}
		if s.in == "finalize" && (len(r.c.finalizes) != 1 || r.c.finalizes[0] != 8) {
			t.Errorf("the finalize is at %v, want after the 8 bytes sent", r.c.finalizes)
		}
	}
	// 17682 bytes of 44.1 kHz stereo, 176400 a second.
	sent := 40 + 17640 + 2
	if got, want := r.c.transcribedAudio(), time.Duration(float64(sent)/176400*float64(time.Second)); got != want {
		t.Errorf("transcribed audio %v, want the caller's %v", got, want)
	}
}

// TestRefusesWhatItCannotConvert: channels the gateway cannot mix (of a
// compressed encoding, or more than pcmconv.MaxChannels) fail with
// INVALID_ARGUMENT before any session is acquired.
func TestRefusesWhatItCannotConvert(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{Catalog: convCatalog(t), Clock: newTestClock()})
	ctx := testContext(t)
	opus := format(speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, 16000)
	opus.Channels = 2
	many := format(linear16, 16000)
	many.Channels = pcmconv.MaxChannels + 1
	tests := []struct {
		format *speechv1.AudioFormat
		want   string
	}{
		{opus, "config.format.channels: the gateway mixes channels of LINEAR16, MULAW and ALAW audio"},
		{many, "config.format.channels: 9 channels: 0 (mono) or 1 to 8"},
	}
	for _, tt := range tests {
		_, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{Model: listen16Model, Format: tt.format}, []byte{1, 2, 3, 4}, 4)
		st := wantStatus(t, err, codes.InvalidArgument, ReasonInvalidRequest)
		if got := badRequest(st); len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
			t.Errorf("%v: violations = %q, want %q", tt.format, got, tt.want)
		}
	}
	noAcquires(t, up)
}
