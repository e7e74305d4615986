package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap/zaptest"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// The stream loops' cores, driven as pure functions: events in, with a
// fake clock, and responses, writer commands and the end out. No
// goroutines and no sockets: what the loop would carry out is read off
// the core after each step.

// coreServer is a Server for driving cores: cfg with its defaults, no
// upstream.
func coreServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(noUpstream{}, zaptest.NewLogger(t), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// coreLease lends sess as a stream's writer would.
func coreLease[S upstreamSession](s *Server, kind string, sess S, release func(error, bool)) *upstreamLease[S] {
	_, span := noop.NewTracerProvider().Tracer("").Start(context.Background(), "slng.session")
	return &upstreamLease[S]{Lease: Lease[S]{Session: sess, Release: release}, span: span, kind: kind, m: s.metrics}
}

// t0 is the fake clock's start.
var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// synthRig drives a synthCore.
type synthRig struct {
	t     *testing.T
	c     *synthCore
	now   time.Time
	ended bool // the end was reported
}

func newSynthRig(t *testing.T, cfg Config) *synthRig {
	s := coreServer(t, cfg)
	c := newSynthCore(s, zaptest.NewLogger(t), streamMeta{sessionID: "gw_test"}, &callerUsage{}, "", false, t0)
	return &synthRig{t: t, c: c, now: t0}
}

// step feeds one event and returns what the core asked for, rendered:
// responses (see describe), then commands, then the end.
func (r *synthRig) step(event string) string {
	r.t.Helper()
	c, now := r.c, r.now
	verb, arg, _ := strings.Cut(event, " ")
	switch verb {
	case "config":
		c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{msg: &speechv1.SynthesizeRequest{
			Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}}, now)
	case "text", "text+flush":
		c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{msg: ttsText(arg, verb == "text+flush")}, now)
	case "flush":
		c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{msg: &speechv1.SynthesizeRequest{
			Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}}}, now)
	case "clear", "cancel":
		req := &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}}
		if verb == "cancel" {
			req = &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Cancel{Cancel: &speechv1.Cancel{}}}
		}
		c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{msg: req}, now)
	case "half-close":
		c.onCallerMsg(callerMsg[*speechv1.SynthesizeRequest]{err: errEOF}, now)
	case "acquired":
		sess := newFakeTTS(arg)
		sess.readyAt = now
		c.onResult(ttsResult{lease: coreLease[TTSSession](c.srv, "tts", sess, sess.release)}, now)
	case "acquire-failed":
		c.onResult(ttsResult{err: slngclient.NewErrorFrame("provider_error", "")}, now)
	case "audio":
		c.onUpstream(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: []byte{1, 2, 3, 4}}, now)
	case "end":
		c.onUpstream(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd}, now)
	case "cleared":
		c.onUpstream(slngclient.TTSEvent{Kind: slngclient.TTSCleared}, now)
	case "error":
		c.onUpstream(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame(arg, "")}, now)
	case "closed":
		c.onUpstreamEnd(errEOF, now)
	case "lost":
		c.onUpstreamEnd(errFakeLost, now)
	case "held-back":
		c.onUpstreamEnd(&slngclient.HeldBackError{Err: errFakeLost}, now)
	case "pause":
		c.setPaused(true, now)
	case "resume":
		c.setPaused(false, now)
	case "drain":
		c.onDrain(now)
	case "wait":
		d, err := time.ParseDuration(arg)
		if err != nil {
			r.t.Fatal(err)
		}
		r.advance(d)
	case "later":
		// Time passes, and the loop's timer has not fired yet.
		d, err := time.ParseDuration(arg)
		if err != nil {
			r.t.Fatal(err)
		}
		r.now = r.now.Add(d)
	default:
		r.t.Fatalf("unknown step %q", event)
	}
	return r.take()
}

// advance moves the clock by d, firing the core's timers on the way as the
// loop's timer would.
func (r *synthRig) advance(d time.Duration) {
	end := r.now.Add(d)
	for !r.c.done {
		next := r.c.nextCheck()
		if next.After(end) {
			break
		}
		r.now = maxTime(r.now, next)
		r.c.onTick(r.now)
	}
	r.now = end
}

func (r *synthRig) take() string {
	c := r.c
	var parts []string
	if d := describe(c.out); d != "" {
		parts = append(parts, d)
	}
	c.out = c.out[:0]
	for _, cmd := range c.cmds {
		parts = append(parts, ttsCmdString(cmd))
	}
	c.cmds = c.cmds[:0]
	if c.done && !r.ended {
		parts = append(parts, "done:"+endString(c.err))
		r.ended = true
	}
	return strings.Join(parts, " ")
}

var errEOF = io.EOF

func ttsCmdString(cmd ttsCmd) string {
	id := ""
	if cmd.sess != nil {
		id = cmd.sess.ID()
	}
	switch cmd.kind {
	case cmdAcquire:
		return "acquire:" + cmd.purpose.String()
	case cmdText:
		s := "text:" + id + ":" + cmd.text
		if cmd.flush {
			s += "+flush"
		}
		return s
	case cmdFlush:
		return "flush:" + id
	case cmdClear:
		return "clear:" + id
	case cmdCharge:
		return "charge:" + cmd.text
	case cmdClose:
		return "close:" + cmd.lease.Session.ID()
	}
	return fmt.Sprint(cmd.kind)
}

// endString is the ErrorInfo reason of how a stream ends, OK for nil.
func endString(err error) string {
	if err == nil {
		return "OK"
	}
	st, _ := toStatus(err, nil, streamMeta{})
	info, _ := details(st)
	if info == nil {
		return st.Code().String()
	}
	return info.GetReason()
}

// TestSynthCore runs scripts of what the caller, SLNG and the clock do
// through a Synthesize stream's core, and checks what it asks for after
// each step.
func TestSynthCore(t *testing.T) {
	t.Parallel()
	cfg := Config{TurnTimeout: 15 * time.Second, CallerIdleTimeout: time.Minute, FirstMessageTimeout: 10 * time.Second,
		MaxStreamDuration: time.Hour}
	type step struct{ in, want string }
	open := []step{{"config", "acquire:caller"}, {"acquired s1", "started"}}
	for _, tc := range []struct {
		name  string
		cfg   *Config
		steps []step
	}{
		{"a turn", nil, append(open,
			step{"text+flush Hi.", "text:s1:Hi. flush:s1"},
			step{"audio", "audio:1"},
			step{"end", "flushed:1 audio_end:1"},
			step{"half-close", "done:OK"})},
		{"no config", nil, []step{
			{"text Hi.", "done:INVALID_REQUEST"}}},
		{"config timeout", nil, []step{
			{"wait 9.9s", ""},
			{"wait 100ms", "done:FIRST_MESSAGE_TIMEOUT"}}},
		{"half-close before the config", nil, []step{
			{"half-close", "done:INVALID_REQUEST"}}},
		{"the first acquire fails", nil, []step{
			{"config", "acquire:caller"},
			{"acquire-failed", "done:UPSTREAM_UNAVAILABLE"}}},
		{"idle after the turn", nil, append(open,
			step{"text+flush Hi.", "text:s1:Hi. flush:s1"},
			step{"wait 10s", ""}, // speaking: not idle
			step{"end", "flushed:1 audio_end:1"},
			step{"wait 59s", ""},
			step{"wait 1s", "done:CALLER_IDLE_TIMEOUT"})},
		{"turn watchdog", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"text+flush Two.", "text:s1:Two. flush:s1"},
			step{"audio", "audio:1"},
			step{"wait 14s", ""},
			step{"audio", "audio:1"}, // progress
			step{"wait 15s", "turn_failed:1 acquire:rollover"},
			step{"acquired s2", "reconnected text:s2:Two.+flush"},
			step{"end", "flushed:2 audio_end:2"})},
		{"no watchdog while the caller is behind", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"pause", ""},
			step{"wait 1m", ""})},
		{"the caller behind keeps SLNG's turn going", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"pause", ""},
			step{"wait 30s", ""},
			step{"resume", ""},
			step{"wait 14s", ""},
			step{"end", "flushed:1 audio_end:1"})},
		{"closed between turns: the next text dials", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"end", "flushed:1 audio_end:1"},
			step{"closed", ""},
			step{"text+flush Two.", "charge:Two. acquire:rollover"},
			step{"acquired s2", "text:s2:Two.+flush"},
			step{"audio", "audio:2"},
			step{"end", "flushed:2 audio_end:2"})},
		{"closed with turns queued: replayed", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"text Two", "text:s1:Two"},
			step{"closed", "acquire:rollover"},
			step{"acquired s2", "text:s2:One.+flush text:s2:Two"},
			step{"audio", "audio:1"},
			step{"end", "flushed:1 audio_end:1"})},
		{"lost in the middle of a turn's audio", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"lost", "turn_failed:1"},
			step{"text+flush Two.", "charge:Two. acquire:rollover"})},
		{"SLNG drops the session while the caller is behind", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"held-back", "turn_failed:1"},
			step{"text+flush Two.", "charge:Two. acquire:rollover"})},
		{"held back between turns: the next text dials", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"end", "flushed:1 audio_end:1"},
			step{"held-back", ""},
			step{"text+flush Two.", "charge:Two. acquire:rollover"})},
		{"error frame after audio: the turn fails, the next goes on", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"text+flush Two.", "text:s1:Two. flush:s1"},
			step{"audio", "audio:1"},
			step{"error pronunciation_not_found", "turn_failed:1 acquire:rollover"},
			step{"acquired s2", "reconnected text:s2:Two.+flush"},
			step{"audio", "audio:2"},
			step{"end", "flushed:2 audio_end:2"},
			step{"half-close", "done:OK"})},
		{"sessions that keep closing before speaking", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"closed", "acquire:rollover"},
			step{"acquired s2", "text:s2:One.+flush"},
			step{"closed", "acquire:rollover"},
			step{"acquired s3", "text:s3:One.+flush"},
			step{"closed", "acquire:rollover"},
			step{"acquired s4", "text:s4:One.+flush"},
			step{"closed", "done:UPSTREAM_UNAVAILABLE"})},
		{"clear and cancel", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"clear", "clear:s1"},
			step{"cleared", "cleared:1"},
			step{"text+flush Two.", "charge:Two."}, // held: the session must be quiet after its answer
			step{"wait 99ms", ""},
			step{"wait 1ms", "text:s1:Two.+flush"},
			step{"cancel", "cancelled:2 clear:s1"})},
		{"audio after a clear's answer", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"clear", "clear:s1"},
			step{"cleared", "cleared:1"},
			step{"text+flush Two.", "charge:Two."},
			// The cleared turn's: dropped, and the session retired.
			step{"audio", "acquire:rollover"},
			step{"acquired s2", "text:s2:Two.+flush"})},
		{"audio after the quiet, before its timer", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"clear", "clear:s1"},
			step{"cleared", "cleared:1"},
			step{"text+flush Two.", "charge:Two."},
			step{"later 150ms", ""},
			step{"audio", "acquire:rollover"},
			step{"acquired s2", "text:s2:Two.+flush"})},
		{"a cancel in the quiet, then audio", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"clear", "clear:s1"},
			step{"cleared", "cleared:1"},
			step{"text+flush Two.", "charge:Two."},
			step{"cancel", "cancelled:2 clear:s1"},
			// Stray audio retires the session; the clear it was sent
			// is not waited for.
			step{"audio", ""},
			step{"text+flush Three.", "charge:Three. acquire:rollover"},
			step{"acquired s2", "text:s2:Three.+flush"})},
		{"drain while idle", nil, append(open,
			step{"drain", "draining done:SERVER_DRAINING"})},
		{"drain finishes the turn first", nil, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"drain", "draining"},
			step{"text Two.", "done:SERVER_DRAINING"})},
		{"drain before the config", nil, []step{
			{"drain", "done:SERVER_DRAINING"}}},
		{"maximum duration", &Config{MaxStreamDuration: time.Minute, CallerIdleTimeout: -1}, append(open,
			step{"wait 1m", "done:STREAM_DURATION_EXCEEDED"})},
		{"rollover at a turn boundary", &Config{MaxUpstreamSessionAge: time.Second}, append(open,
			step{"text+flush One.", "text:s1:One. flush:s1"},
			step{"audio", "audio:1"},
			step{"wait 1s", ""},
			step{"end", "flushed:1 audio_end:1 close:s1"},
			step{"text+flush Two.", "charge:Two. acquire:rollover"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := cfg
			if tc.cfg != nil {
				c = *tc.cfg
			}
			r := newSynthRig(t, c)
			for i, s := range tc.steps {
				if got := r.step(s.in); got != s.want {
					t.Fatalf("step %d %q: got %q, want %q", i, s.in, got, s.want)
				}
			}
		})
	}
}

// TestSynthCoreReleases: a session that ends is given back at once with
// why, so that the pool sees SLNG's failures and nothing else.
func TestSynthCoreReleases(t *testing.T) {
	t.Parallel()
	r := newSynthRig(t, Config{})
	r.step("config")
	sess := newFakeTTS("s1")
	r.c.onResult(ttsResult{lease: coreLease[TTSSession](r.c.srv, "tts", sess, sess.release)}, r.now)
	r.step("text+flush One.")
	r.step("audio")
	r.step("held-back")
	released, reused, err := sess.releasedWith()
	var held *slngclient.HeldBackError
	if !released || reused || !errors.As(err, &held) {
		t.Fatalf("released %v, reused %v, with %v; want a release with the held-back error", released, reused, err)
	}
	if _, upstream := slngclient.AsUpstreamError(err); upstream {
		t.Fatal("a session the caller held back was released as SLNG's failure")
	}
	if !sess.isClosed() {
		t.Fatal("the session was not closed")
	}
}
