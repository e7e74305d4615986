package service

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// describe renders responses compactly: "audio:1", "flushed:1",
// "audio_end:1", "turn_failed:1", "cleared:1", "warning".
func describe(out []synthOut) string {
	var parts []string
	for _, o := range out {
		if o.resp == nil {
			parts = append(parts, fmt.Sprintf("audio:%d", o.turn))
			continue
		}
		switch m := o.resp.GetResponse().(type) {
		case *speechv1.SynthesizeResponse_Audio:
			parts = append(parts, fmt.Sprintf("audio:%d", m.Audio.GetTurnId()))
		case *speechv1.SynthesizeResponse_Flushed:
			parts = append(parts, fmt.Sprintf("flushed:%d", m.Flushed.GetTurnId()))
		case *speechv1.SynthesizeResponse_AudioEnd:
			parts = append(parts, fmt.Sprintf("audio_end:%d", m.AudioEnd.GetTurnId()))
		case *speechv1.SynthesizeResponse_TurnFailed:
			parts = append(parts, fmt.Sprintf("turn_failed:%d", m.TurnFailed.GetTurnId()))
		case *speechv1.SynthesizeResponse_Cleared:
			parts = append(parts, fmt.Sprintf("cleared:%d", m.Cleared.GetTurnId()))
		case *speechv1.SynthesizeResponse_Cancelled:
			parts = append(parts, fmt.Sprintf("cancelled:%d", m.Cancelled.GetTurnId()))
		case *speechv1.SynthesizeResponse_SegmentStart:
			parts = append(parts, fmt.Sprintf("segment_start:%d", m.SegmentStart.GetTurnId()))
		case *speechv1.SynthesizeResponse_SegmentEnd:
			parts = append(parts, fmt.Sprintf("segment_end:%d", m.SegmentEnd.GetTurnId()))
		case *speechv1.SynthesizeResponse_Warning:
			parts = append(parts, "warning")
		case *speechv1.SynthesizeResponse_Started:
			parts = append(parts, "started")
		case *speechv1.SynthesizeResponse_Reconnected:
			parts = append(parts, "reconnected")
		case *speechv1.SynthesizeResponse_Draining:
			parts = append(parts, "draining")
		default:
			parts = append(parts, fmt.Sprintf("%T", m))
		}
	}
	return strings.Join(parts, " ")
}

// A step of a turn script: what the caller or the upstream does.
type step string

const (
	stText     step = "text"      // text for the open turn
	stFlush    step = "flush"     // the caller flushes
	stAudio    step = "audio"     // upstream audio
	stEnd      step = "end"       // the end of a flushed turn
	stEarlyEnd step = "early_end" // the route spoke the text sent before the flush (TTSTextSpoken)
	stStray    step = "stray_end" // an end with no turn in flight
	stCut      step = "cut"       // the session is lost: turns whose audio it cut fail
	stSegStart step = "seg_start"
	stSegEnd   step = "seg_end"
	stWarnHard step = "error"       // an error frame SLNG will not recover from
	stWarnSoft step = "error_retry" // a retryable error frame
	stCleared  step = "cleared"
	stClear    step = "clear"
	stCancel   step = "cancel"
	stClose    step = "close"   // a clean close after a turn's audio: its end, then the close
	stLost     step = "lost"    // a failed session
	stTimeout  step = "timeout" // the turn watchdog fires
	stNewSess  step = "new_session"
	stReapNote step = "reap_frame" // idle_timeout_exceeded: a reap follows
)

// run feeds steps to b and returns everything it said.
func (b *turnBook) run(t testing.TB, steps ...step) string {
	t.Helper()
	var all []string
	for _, s := range steps {
		var out []synthOut
		switch s {
		case stText:
			if _, err := b.addText("words ", maxTurnText); err != nil {
				t.Fatal(err)
			}
			b.sentPiece(b.open.text.Len())
		case stFlush:
			b.flush(time.Now())
		case stAudio:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: []byte{1, 2, 3, 4}})
		case stEnd:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, Duration: time.Second})
		case stEarlyEnd:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTextSpoken})
		case stStray:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, Unflushed: true})
		case stCut:
			out, _ = b.cutTurns(errFakeLost)
		case stSegStart:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSSegmentStart, SegmentID: "s"})
		case stSegEnd:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSSegmentEnd, SegmentID: "s"})
		case stWarnHard:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: &slngclient.UpstreamError{
				Kind: slngclient.KindErrorFrame, Code: "pronunciation_not_found", Message: "x"}})
		case stWarnSoft:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame("provider_error", "x")})
		case stCleared:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
		case stClear:
			out = b.clear(false, true, time.Now())
		case stCancel:
			out = b.clear(true, true, time.Now())
		case stClose:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, ByClose: true})
			out = append(append([]synthOut(nil), out...), b.upstreamClosed()...)
		case stLost:
			out = b.upstreamClosed()
		case stTimeout:
			out, _ = b.failInProgress(errTurnTimeout)
		case stReapNote:
			out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame("idle_timeout_exceeded", "x")})
		case stNewSess:
		default:
			t.Fatalf("unknown step %q", s)
		}
		if d := describe(out); d != "" {
			all = append(all, d)
		}
	}
	return strings.Join(all, " ")
}

// TestTurnBookRoutes feeds the turn book what each route behaviour of
// slng-real-clients.md sends, and checks what the caller sees: the same
// end of turn, `flushed` then `audio_end`, whatever the route sent.
func TestTurnBookRoutes(t *testing.T) {
	t.Parallel()
	twoTurns := "audio:1 flushed:1 audio_end:1 audio:2 flushed:2 audio_end:2"
	tests := []struct {
		name  string
		steps []step
		want  string
		idle  bool
	}{
		{"two turns", []step{stText, stFlush, stAudio, stEnd, stText, stFlush, stAudio, stEnd}, twoTurns, true},
		{"close after the audio", []step{stText, stFlush, stAudio, stClose}, "audio:1 flushed:1 audio_end:1", true},
		{"segments", []step{stText, stFlush, stSegStart, stAudio, stSegEnd, stEnd},
			"segment_start:1 audio:1 segment_end:1 flushed:1 audio_end:1", true},
		{"pipelined turns", []step{stText, stFlush, stText, stFlush, stAudio, stEnd, stAudio, stEnd}, twoTurns, true},
		{"a turn without audio", []step{stText, stFlush, stText, stFlush, stAudio, stEnd, stEnd},
			"audio:1 flushed:1 audio_end:1 flushed:2 audio_end:2", true},
		{"the model speaks before the flush: the flush ends the turn", []step{stText, stAudio, stEarlyEnd, stText, stAudio,
			stEarlyEnd, stFlush, stEnd}, "audio:1 audio:1 flushed:1 audio_end:1", true},
		{"an early end and no flush: the turn is still open", []step{stText, stAudio, stEarlyEnd}, "audio:1", true},
		{"a cut after text spoken before the flush", []step{stText, stAudio, stEarlyEnd, stText, stAudio, stCut},
			"audio:1 audio:1 turn_failed:1", true},
		{"a cut after the open turn's text was spoken", []step{stText, stAudio, stEarlyEnd, stCut, stText, stFlush, stAudio, stEnd},
			"audio:1 audio:1 flushed:1 audio_end:1", true},
		{"a cut in the middle of a turn's audio", []step{stText, stFlush, stText, stFlush, stAudio, stCut, stAudio, stEnd},
			"audio:1 turn_failed:1 audio:2 flushed:2 audio_end:2", true},
		{"error in the middle of a turn", []step{stText, stFlush, stText, stFlush, stAudio, stWarnHard, stNewSess, stAudio, stEnd},
			"audio:1 turn_failed:1 audio:2 flushed:2 audio_end:2", true},
		{"error before the flush", []step{stText, stWarnHard, stText, stFlush, stText, stFlush, stAudio, stEnd},
			"turn_failed:1 audio:2 flushed:2 audio_end:2", true},
		{"retryable error before any audio", []step{stText, stFlush, stWarnSoft, stNewSess, stAudio, stEnd},
			"warning audio:1 flushed:1 audio_end:1", true},
		{"retryable error after audio", []step{stText, stFlush, stAudio, stWarnSoft}, "audio:1 turn_failed:1", true},
		{"retryable error twice before audio", []step{stText, stFlush, stWarnSoft, stNewSess, stWarnSoft},
			"warning turn_failed:1", true},
		{"error between turns", []step{stWarnHard}, "warning", true},
		{"reap announced between turns", []step{stText, stFlush, stAudio, stEnd, stReapNote}, "audio:1 flushed:1 audio_end:1", true},
		{"reap announced before a turn's audio", []step{stText, stFlush, stReapNote, stNewSess, stAudio, stEnd},
			"audio:1 flushed:1 audio_end:1", true},
		{"stuck turn", []step{stText, stFlush, stAudio, stTimeout}, "audio:1 turn_failed:1", true},
		{"clear drops the rest of the turn", []step{stText, stFlush, stAudio, stClear, stAudio, stEnd, stCleared, stText, stFlush, stAudio, stEnd},
			"audio:1 cleared:1 audio:2 flushed:2 audio_end:2", true},
		{"cancel is acknowledged at once", []step{stText, stFlush, stAudio, stCancel, stAudio, stCleared}, "audio:1 cancelled:1", true},
		{"a lost session acknowledges the clear", []step{stText, stFlush, stClear, stLost}, "cleared:1", true},
		{"a lost session ends no turn", []step{stText, stFlush, stAudio, stLost}, "audio:1", false},
		{"audio outside any turn", []step{stAudio, stAudio, stText, stFlush, stAudio, stEnd, stAudio},
			"warning audio:1 flushed:1 audio_end:1 warning", true},
		{"end outside any turn", []step{stStray}, "", true},
		{"an end before any flush ends no turn", []step{stText, stAudio, stStray, stFlush, stEnd}, "audio:1 flushed:1 audio_end:1", true},
		{"an early end of an unflushed turn without audio", []step{stText, stEarlyEnd, stFlush, stAudio, stEnd}, "audio:1 flushed:1 audio_end:1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newTurnBook(pcmClock{})
			if got := b.run(t, tt.steps...); got != tt.want {
				t.Errorf("run(%v) =\n %s\nwant\n %s", tt.steps, got, tt.want)
			}
			if b.idle() != tt.idle {
				t.Errorf("idle() = %v, want %v", b.idle(), tt.idle)
			}
		})
	}
}

func TestTurnBookFailedTurnStatus(t *testing.T) {
	t.Parallel()
	b := newTurnBook(clockOf(&speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 1000}))
	b.run(t, stText, stFlush, stAudio)
	out, res := b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: &slngclient.UpstreamError{
		Kind: slngclient.KindErrorFrame, Code: "invalid_request", Message: "Text is too long."}})
	if res.failed == nil || !res.replace || len(out) != 1 {
		t.Fatalf("event() = %s, %+v", describe(out), res)
	}
	tf := out[0].resp.GetTurnFailed()
	if codes.Code(tf.GetCode()) != codes.InvalidArgument || tf.GetReason() != ReasonUpstreamRequestRejected ||
		tf.GetUpstreamCode() != "invalid_request" || tf.GetDelivered().GetAudioBytes() != 4 ||
		tf.GetDelivered().GetAudioDuration().AsDuration() != 2*time.Millisecond || tf.GetMessage() == "" {
		t.Errorf("turn_failed = %v", tf)
	}
	out, _ = b.failInProgress(errTurnTimeout)
	if len(out) != 0 {
		t.Errorf("failInProgress with nothing in progress = %s", describe(out))
	}
}

// FuzzTurnBook feeds the turn book random orders of caller requests and
// upstream events. Whatever the order: no panic; sequences rise by one;
// no audio of a turn after its end; no turn ends twice; `audio_end`
// always follows its turn's `flushed`; and once the route finishes what
// is pending, every flushed turn that no clear discarded has ended exactly
// once.
func FuzzTurnBook(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 0, 1, 2, 4, 3})
	f.Add([]byte{0, 1, 0, 1, 2, 9, 2, 4, 11, 2, 3})
	f.Add([]byte{0, 2, 1, 2, 12, 10, 0, 1, 2, 5, 6, 13})
	f.Add([]byte{0, 1, 2, 7, 0, 1, 8, 2, 14, 3, 3, 4, 4})
	steps := []step{stText, stFlush, stAudio, stEnd, stEarlyEnd, stSegStart, stSegEnd, stWarnHard, stWarnSoft,
		stCleared, stClear, stCancel, stClose, stLost, stTimeout, stStray, stCut}
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 512 {
			return
		}
		b := newTurnBook(pcmClock{})
		var lastSeq uint64
		ended := map[uint64]int{}
		flushed := map[uint64]bool{}
		discarded := map[uint64]bool{}
		lastFlushed := uint64(0)
		check := func(out []synthOut) {
			for _, o := range out {
				if o.resp == nil {
					if o.seq != lastSeq+1 {
						t.Fatalf("sequence %d after %d", o.seq, lastSeq)
					}
					lastSeq = o.seq
					if ended[o.turn] > 0 {
						t.Fatalf("audio of turn %d after its end", o.turn)
					}
					continue
				}
				switch m := o.resp.GetResponse().(type) {
				case *speechv1.SynthesizeResponse_Flushed:
					lastFlushed = m.Flushed.GetTurnId()
				case *speechv1.SynthesizeResponse_AudioEnd:
					id := m.AudioEnd.GetTurnId()
					if lastFlushed != id {
						t.Fatalf("audio_end of turn %d without its flushed", id)
					}
					ended[id]++
				case *speechv1.SynthesizeResponse_TurnFailed:
					ended[m.TurnFailed.GetTurnId()]++
				}
			}
			for id, n := range ended {
				if n > 1 {
					t.Fatalf("turn %d ended %d times", id, n)
				}
			}
		}
		discard := func() {
			for _, p := range b.pending {
				discarded[p.id] = true
			}
			if b.open != nil {
				discarded[b.open.id] = true
			}
		}
		for _, c := range script {
			s := steps[int(c)%len(steps)]
			var out []synthOut
			switch s {
			case stText:
				_, _ = b.addText("w", maxTurnText)
				b.sentPiece(b.open.text.Len())
			case stFlush:
				if tt := b.flush(time.Now()); tt != nil {
					flushed[tt.id] = true
				}
			case stClear, stCancel:
				discard()
				out = b.clear(s == stCancel, true, time.Now())
			default:
				out = b.runOne(t, s)
			}
			check(out)
		}
		// The route finishes every turn still pending: audio and an end.
		for range 1024 {
			if len(b.clears) > 0 {
				check(b.runOne(t, stCleared))
				continue
			}
			if len(b.pending) == 0 {
				break
			}
			check(b.runOne(t, stAudio))
			check(b.runOne(t, stEnd))
		}
		for id := range flushed {
			if !discarded[id] && ended[id] != 1 {
				t.Fatalf("flushed turn %d ended %d times", id, ended[id])
			}
		}
	})
}

// runOne feeds one upstream step and returns a copy of the responses.
func (b *turnBook) runOne(t *testing.T, s step) []synthOut {
	var out []synthOut
	switch s {
	case stAudio:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: []byte{1}})
	case stEnd:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
	case stEarlyEnd:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTextSpoken})
	case stStray:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, Unflushed: true})
	case stCut:
		out, _ = b.cutTurns(errFakeLost)
		out = append(append([]synthOut(nil), out...), b.upstreamClosed()...)
	case stSegStart:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSSegmentStart})
	case stSegEnd:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSSegmentEnd})
	case stWarnHard:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame("x", "")})
	case stWarnSoft:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame("provider_error", "")})
	case stCleared:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
	case stClose:
		out, _ = b.event(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, ByClose: true})
		out = append(append([]synthOut(nil), out...), b.upstreamClosed()...)
	case stLost:
		out = b.upstreamClosed()
	case stTimeout:
		out, _ = b.failInProgress(errTurnTimeout)
	default:
		t.Fatalf("step %q", s)
	}
	return append([]synthOut(nil), out...)
}
