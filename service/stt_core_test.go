package service

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// sttRig drives an sttCore, as synthRig drives a synthCore.
type sttRig struct {
	t     *testing.T
	c     *sttCore
	now   time.Time
	ended bool
}

// 16 kHz LINEAR16: 32 bytes a millisecond.
const sttRate = 32000

func newSTTRig(t *testing.T, cfg Config, log *zap.Logger) *sttRig {
	s := coreServer(t, cfg)
	c := newSTTCore(s, log, streamMeta{sessionID: "gw_test"}, &callerUsage{}, "", t0)
	return &sttRig{t: t, c: c, now: t0}
}

func (r *sttRig) caller(in sttIn) { r.c.onCallerMsg(callerMsg[sttIn]{msg: in}, r.now) }

// step feeds one event and returns what the core asked for.
func (r *sttRig) step(event string) string {
	r.t.Helper()
	c, now := r.c, r.now
	verb, arg, _ := strings.Cut(event, " ")
	switch verb {
	case "config":
		r.caller(sttIn{config: &speechv1.RecognitionConfig{}})
	case "audio":
		var n int
		fmt.Sscan(arg, &n)
		r.caller(sttIn{audio: make([]byte, n), hasAudio: true})
	case "finalize":
		r.caller(sttIn{finalize: true})
	case "half-close":
		c.onCallerMsg(callerMsg[sttIn]{err: io.EOF}, now)
	case "acquired":
		sess := newFakeSTT(arg)
		sess.readyAt = now
		c.onResult(sttResult{lease: coreLease[STTSession](c.srv, "stt", sess, sess.release)}, now)
	case "final":
		// final TEXT [start=MS] [dur=MS]
		f := strings.Fields(arg)
		ev := slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{Text: f[0]}}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			var ms int
			fmt.Sscan(v, &ms)
			switch k {
			case "start":
				ev.Transcript.Start, ev.Transcript.HasStart = time.Duration(ms)*time.Millisecond, true
			case "dur":
				ev.Transcript.Duration, ev.Transcript.HasDuration = time.Duration(ms)*time.Millisecond, true
			}
		}
		c.onUpstream(ev, now)
	case "closed":
		c.onUpstreamEnd(io.EOF, now)
	case "lost":
		c.onUpstreamEnd(errFakeLost, now)
	case "drain":
		c.onDrain(now)
	case "wait":
		d, _ := time.ParseDuration(arg)
		end := r.now.Add(d)
		for !c.done {
			next := c.nextCheck()
			if next.After(end) {
				break
			}
			r.now = maxTime(r.now, next)
			c.onTick(r.now)
		}
		r.now = end
	default:
		r.t.Fatalf("unknown step %q", event)
	}
	return r.take()
}

func (r *sttRig) take() string {
	c := r.c
	var parts []string
	for _, resp := range c.out {
		switch m := resp.GetResponse().(type) {
		case *speechv1.TranscribeResponse_Started:
			parts = append(parts, "started")
		case *speechv1.TranscribeResponse_FinalTranscript:
			parts = append(parts, "final:"+m.FinalTranscript.GetText())
		case *speechv1.TranscribeResponse_Reconnected:
			parts = append(parts, fmt.Sprintf("reconnected:%dms", m.Reconnected.GetAudioReplayed().AsDuration().Milliseconds()))
		case *speechv1.TranscribeResponse_Warning:
			parts = append(parts, "warning:"+m.Warning.GetCode())
		case *speechv1.TranscribeResponse_Draining:
			parts = append(parts, "draining")
		default:
			parts = append(parts, fmt.Sprintf("%T", m))
		}
	}
	c.out = c.out[:0]
	for _, cmd := range c.cmds {
		parts = append(parts, sttCmdString(cmd))
	}
	c.cmds = c.cmds[:0]
	if c.done && !r.ended {
		parts = append(parts, "done:"+endString(c.err))
		r.ended = true
	}
	return strings.Join(parts, " ")
}

func sttCmdString(cmd sttCmd) string {
	id := ""
	if cmd.sess != nil {
		id = cmd.sess.ID()
	}
	switch cmd.kind {
	case sttAcquire:
		return "acquire:" + cmd.purpose.String()
	case sttAudio:
		return fmt.Sprintf("audio:%s:%d", id, len(cmd.audio))
	case sttFinalize:
		return "finalize:" + id
	case sttCloseSend:
		return "close:" + id
	case sttReplay:
		s := fmt.Sprintf("replay:%s:%d", id, len(cmd.audio))
		if len(cmd.marks) > 0 {
			s += fmt.Sprint(cmd.marks)
		}
		if cmd.closeSend {
			s += "+close"
		}
		return s
	}
	return fmt.Sprint(cmd.kind)
}

// TestSTTCore runs scripts through a Transcribe stream's core. Audio is 16
// kHz LINEAR16: 32 bytes a millisecond.
func TestSTTCore(t *testing.T) {
	t.Parallel()
	cfg := Config{FinalsTimeout: 10 * time.Second, CallerIdleTimeout: time.Minute, FirstMessageTimeout: 10 * time.Second}
	type step struct{ in, want string }
	open := []step{{"config", "acquire:caller"}, {"acquired s1", "started"}}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"audio and finals", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one start=0 dur=100", "final:one"},
			step{"half-close", "close:s1"},
			step{"closed", "done:OK"})},
		{"a finalize's final covers the audio before it, and only that", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"finalize", "finalize:s1"},
			step{"audio 1600", "audio:s1:1600"},
			step{"final one", "final:one"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:50ms replay:s2:1600"})},
		{"a lost session hears again what no final covered, finalize at its place", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"finalize", "finalize:s1"},
			step{"audio 1600", "audio:s1:1600"},
			step{"lost", "acquire:rollover"},
			step{"audio 320", ""},
			step{"acquired s2", "reconnected:160ms replay:s2:5120[3200]"})},
		{"an untimed final proves nothing; the new session's repeat of it is dropped", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one", "final:one"},
			step{"audio 3200", "audio:s1:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:200ms replay:s2:6400"},
			step{"final one", ""},
			step{"final two", "final:two"})},
		{"a replay inside an utterance: the fragment before a repeat is dropped", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one", "final:one"},
			step{"final two", "final:two"},
			step{"audio 3200", "audio:s1:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:200ms replay:s2:6400"},
			step{"final dh", ""},
			step{"final two", ""},
			step{"final three", "final:three"})},
		{"a replay's first final that repeats nothing is held for the next, then delivered", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one", "final:one"},
			step{"audio 3200", "audio:s1:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:200ms replay:s2:6400"},
			step{"final new", ""},
			step{"final next", "final:new final:next"})},
		{"a final held is delivered when its session ends", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one", "final:one"},
			step{"half-close", "close:s1"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:100ms replay:s2:3200+close"},
			step{"final new", ""},
			step{"closed", "final:new done:OK"})},
		{"a duration covers that much after what is covered", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"final one dur=50", "final:one"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:50ms replay:s2:1600"})},
		{"the end of the audio follows a replay", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"half-close", "close:s1"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:100ms replay:s2:3200+close"},
			step{"final one", "final:one"},
			step{"closed", "done:OK"})},
		{"closed early: replaced", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"closed", "acquire:rollover"},
			step{"acquired s2", "reconnected:100ms replay:s2:3200"})},
		{"finals timeout", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"half-close", "close:s1"},
			step{"wait 10s", "done:UPSTREAM_UNAVAILABLE"})},
		{"idle", append(open,
			step{"wait 1m", "done:CALLER_IDLE_TIMEOUT"})},
		{"no config", []step{
			{"wait 10s", "done:FIRST_MESSAGE_TIMEOUT"}}},
		{"drain", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"drain", "draining close:s1"},
			step{"final one", "final:one"},
			step{"closed", "done:SERVER_DRAINING"})},
		{"three losses without a final end the stream", append(open,
			step{"audio 3200", "audio:s1:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s2", "reconnected:100ms replay:s2:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s3", "reconnected:100ms replay:s3:3200"},
			step{"lost", "acquire:rollover"},
			step{"acquired s4", "reconnected:100ms replay:s4:3200"},
			step{"lost", "done:UPSTREAM_UNAVAILABLE"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newSTTRig(t, cfg, zaptest.NewLogger(t))
			for i, s := range tc.steps {
				if got := r.step(s.in); got != s.want {
					t.Fatalf("step %d %q: got %q, want %q", i, s.in, got, s.want)
				}
			}
		})
	}
}

// slngModel stands for SLNG's side of one STT session in
// TestTranscribeLosesNothing: what it heard, where finalizes came, and what
// its finals truly cover.
type slngModel struct {
	base  int   // the stream offset of the session's first byte, as the test knows it
	heard []int // stream offsets of the bytes heard, in order
	marks []int // len(heard) at each finalize
	last  int   // heard up to here is covered by the session's finals
	ended bool  // the end of the audio came
}

// TestTranscribeLosesNothing is a property over random schedules: a caller
// sends audio (paced or in bursts) with finalizes, SLNG's sessions are cut
// (a normal close or a lost connection, at any point, during a replay, after
// a finalize) and answer with finals of every shape routes send (timed,
// with only a duration, with nothing, answering a finalize). Whatever
// happens, each new session hears exactly the caller's audio from where
// the finals delivered so far are proven to cover it, with every pending
// finalize at its place; nothing it replays was covered; and at the end,
// the finals delivered cover every byte the caller sent.
func TestTranscribeLosesNothing(t *testing.T) {
	t.Parallel()
	for seed := range uint64(400) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			losesNothing(t, seed)
		})
	}
}

func losesNothing(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	r := newSTTRig(t, Config{FinalsTimeout: time.Hour, CallerIdleTimeout: -1, FirstMessageTimeout: -1}, zap.NewNop())
	c := r.c
	shape := rng.IntN(4) // 0 timed, 1 duration only, 2 nothing, 3 a mix
	burst := rng.IntN(2) == 0
	var sess *slngModel
	sessions := 0
	covered := make([]bool, 0, 1<<16) // per stream byte: a delivered final covers it
	finals := map[string][2]int{}     // a final's text: the stream range it covers
	next := 0
	cuts := 0
	// collect marks what the finals delivered cover, whenever the core
	// delivers them (a final it held comes out at a session's end);
	// arrived: one just came from SLNG, and the core counts losses from
	// there.
	collect := func(arrived bool) {
		for _, resp := range c.out {
			if f := resp.GetFinalTranscript(); f != nil {
				rg := finals[f.GetText()]
				for i := rg[0]; i < rg[1]; i++ {
					covered[i] = true
				}
				if arrived {
					cuts = 0
				}
			}
		}
		c.out = c.out[:0]
	}
	emitFinal := func(upTo int, fromFinalize bool) {
		from := sess.last
		sess.last = upTo
		text := fmt.Sprintf("[f%d]", next)
		next++
		lo, hi := sess.base, sess.base
		if from < len(sess.heard) {
			lo = sess.heard[from]
		}
		if upTo > 0 {
			hi = sess.heard[upTo-1] + 1
		}
		if from == upTo {
			lo = hi
		}
		finals[text] = [2]int{lo, hi}
		ev := slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{Text: text}}
		sh := shape
		if sh == 3 {
			sh = rng.IntN(3)
		}
		start, dur := time.Duration(from)*time.Second/sttRate, time.Duration(upTo-from)*time.Second/sttRate
		switch sh {
		case 0:
			ev.Transcript.Start, ev.Transcript.HasStart = start, true
			ev.Transcript.Duration, ev.Transcript.HasDuration = dur, true
		case 1:
			ev.Transcript.Duration, ev.Transcript.HasDuration = dur, true
		}
		if fromFinalize {
			ev.Transcript.FromFinalize = false // the bridge has no such field: any final answers
		}
		c.onUpstream(ev, r.now)
		collect(true)
	}
	// carry out what the core asked, as the writer and SLNG would; a cut
	// may fall in the middle of a replay.
	var carry func()
	carry = func() {
		for len(c.cmds) > 0 {
			cmd := c.cmds[0]
			c.cmds = c.cmds[1:]
			switch cmd.kind {
			case sttAcquire:
				sessions++
				fake := newFakeSTT(fmt.Sprint("s", sessions))
				sess = &slngModel{base: int(c.covered)}
				c.onResult(sttResult{lease: coreLease[STTSession](c.srv, "stt", fake, fake.release)}, r.now)
			case sttAudio:
				hear(t, sess, cmd.audio)
			case sttFinalize:
				sess.marks = append(sess.marks, len(sess.heard))
			case sttCloseSend:
				sess.ended = true
			case sttReplay:
				if int64(sess.base) != c.baseOff {
					t.Fatalf("a new session starts at %d, the core replays from %d", sess.base, c.baseOff)
				}
				for i := 0; i < sess.base; i++ {
					if !covered[i] {
						t.Fatalf("byte %d is replayed from %d on, but no final delivered covers it", i, sess.base)
					}
				}
				audio, marks := cmd.audio, cmd.marks
				cutAt := -1
				if cuts < 3 && rng.IntN(4) == 0 {
					cutAt = rng.IntN(len(audio) + 1) // a cut falls at any byte
				}
				for off := 0; off <= len(audio); off++ {
					for len(marks) > 0 && int(marks[0]) == off {
						sess.marks = append(sess.marks, len(sess.heard))
						marks = marks[1:]
					}
					if off == cutAt {
						cuts++
						c.cmds = nil // the writer's later commands were for this session
						c.onUpstreamEnd(errFakeLost, r.now)
						collect(false)
						carry()
						return
					}
					if off < len(audio) {
						hear(t, sess, audio[off:off+1])
					}
				}
				if cmd.closeSend {
					sess.ended = true
				}
			}
		}
	}
	audioSent := 0
	r.caller(sttIn{config: &speechv1.RecognitionConfig{}})
	carry()
	total := 20 + rng.IntN(60)
	for i := 0; i < total || c.closing == false; i++ {
		if c.done {
			t.Fatalf("the stream ended: %v", c.err)
		}
		switch {
		case i >= total:
			c.onCallerMsg(callerMsg[sttIn]{err: io.EOF}, r.now)
		case rng.IntN(8) == 0:
			r.caller(sttIn{finalize: true})
		default:
			n := 2 * (1 + rng.IntN(800))
			audio := make([]byte, n)
			for j := range audio {
				audio[j] = byteAt(audioSent + j)
			}
			audioSent += n
			covered = append(covered, make([]bool, n)...)
			r.caller(sttIn{audio: audio, hasAudio: true})
		}
		carry()
		// SLNG's side, now or (in bursts) a few caller messages later.
		if burst && rng.IntN(3) != 0 {
			continue
		}
		for len(sess.marks) > 0 && sess.marks[0] >= sess.last {
			emitFinal(sess.marks[0], true)
			sess.marks = sess.marks[1:]
			carry()
		}
		switch x := rng.IntN(10); {
		case x < 3 && len(sess.heard) > sess.last+1:
			// An endpoint: a whole number of samples.
			emitFinal(sess.last+2*(rng.IntN((len(sess.heard)-sess.last)/2)+1), false)
		case x == 3 && cuts < 3:
			// A normal close, or a connection lost. After `close`, a
			// normal close comes only once SLNG has sent every final.
			cuts++
			if !sess.ended && rng.IntN(2) == 0 {
				c.onUpstreamEnd(io.EOF, r.now)
			} else {
				c.onUpstreamEnd(errFakeLost, r.now)
			}
			collect(false)
		}
		carry()
	}
	// SLNG answers the end of the audio: every pending finalize, then what
	// is left, then it closes.
	for !c.done {
		for len(sess.marks) > 0 && sess.marks[0] >= sess.last {
			emitFinal(sess.marks[0], true)
			sess.marks = sess.marks[1:]
		}
		if sess.ended {
			emitFinal(len(sess.heard), false)
			c.onUpstreamEnd(io.EOF, r.now)
			collect(false)
		}
		carry()
	}
	if c.err != nil {
		t.Fatalf("the stream ended with %v", c.err)
	}
	for i, ok := range covered {
		if !ok {
			t.Fatalf("byte %d of %d is covered by no final delivered (%d sessions)", i, audioSent, sessions)
		}
	}
}

// byteAt is the caller's audio byte at offset i: every offset tells from
// its neighbours, so a byte out of place shows.
func byteAt(i int) byte { return byte(i*7 + i>>8) }

// hear adds audio to what the session heard, checking that it is the
// caller's audio from where the session's stream stands.
func hear(t *testing.T, sess *slngModel, audio []byte) {
	t.Helper()
	off := sess.base + len(sess.heard)
	for j, b := range audio {
		if b != byteAt(off+j) {
			t.Fatalf("a session heard byte %d out of place", off+j)
		}
		sess.heard = append(sess.heard, off+j)
	}
}
