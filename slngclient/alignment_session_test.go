package slngclient_test

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestTTSAlignmentEvents: a session asked for alignment yields each
// frame's alignment right after the frame's audio, with the times as the
// route sent them, whether they start again in each frame (ElevenLabs'
// documented reading, pipecat's) or run on from the start of the reply;
// one not asked yields audio alone, from the same frames.
func TestTTSAlignmentEvents(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString(make([]byte, 480)) // 10 ms at 24 kHz
	frameOf := func(spoken string, starts string) frame {
		var cs []string
		for _, r := range spoken {
			cs = append(cs, `"`+string(r)+`"`)
		}
		durs := strings.TrimSuffix(strings.Repeat("5,", len(cs)), ",")
		return text(`{"audio":"` + b64 + `","isFinal":false,"alignment":{"chars":[` + strings.Join(cs, ",") +
			`],"charStartTimesMs":[` + starts + `],"charsDurationsMs":[` + durs + `]}}`)
	}
	for _, tc := range []struct {
		name   string
		frames []frame
		starts [][]time.Duration
	}{
		{"relative to each frame", []frame{frameOf("ab", "0,5"), frameOf("cd", "0,5")},
			[][]time.Duration{{0, 5 * time.Millisecond}, {0, 5 * time.Millisecond}}},
		{"relative to the reply", []frame{frameOf("ab", "0,5"), frameOf("cd", "10,15")},
			[][]time.Duration{{0, 5 * time.Millisecond}, {10 * time.Millisecond, 15 * time.Millisecond}}},
	} {
		for _, on := range []bool{true, false} {
			name := tc.name + map[bool]string{true: ", asked", false: ", not asked"}[on]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				frames := append(tc.frames, text(`{"audio":null,"isFinal":true}`))
				c := scripted(t, script{ready: true, awaitFirst: true, frames: frames}, slngclient.Options{})
				ctx := testCtx(t)
				s, err := c.DialTTS(ctx, slngclient.Endpoint{Model: "elevenlabs/eleven-flash:2.5"}, slngclient.TTSConfig{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.CloseNow()
				s.SetAlignment(on)
				if err := s.Text(ctx, "abcd", true); err != nil {
					t.Fatal(err)
				}
				var kinds []slngclient.TTSEventKind
				var goesOn []bool // FrameGoesOn of each event
				var starts [][]time.Duration
				for {
					ev, err := s.Recv(ctx)
					if err != nil {
						t.Fatal(err)
					}
					kinds = append(kinds, ev.Kind)
					goesOn = append(goesOn, ev.FrameGoesOn)
					if ev.Kind == slngclient.TTSAlignment {
						if !ev.Alignment.AfterAudio || ev.Alignment.Normalized {
							t.Errorf("alignment %+v: want after its audio, not normalized", ev.Alignment)
						}
						var ss []time.Duration
						for _, ch := range ev.Alignment.Chars {
							ss = append(ss, ch.Start)
							if ch.Duration != 5*time.Millisecond {
								t.Errorf("character %q lasts %v, want 5ms", ch.Text, ch.Duration)
							}
						}
						starts = append(starts, ss)
					}
					if ev.Kind == slngclient.TTSTurnEnd {
						break
					}
				}
				want := []slngclient.TTSEventKind{slngclient.TTSAudio, slngclient.TTSAudio, slngclient.TTSTurnEnd}
				if on {
					want = []slngclient.TTSEventKind{slngclient.TTSAudio, slngclient.TTSAlignment, slngclient.TTSAudio, slngclient.TTSAlignment, slngclient.TTSTurnEnd}
				}
				if !slices.Equal(kinds, want) {
					t.Fatalf("events %v, want %v", kinds, want)
				}
				// An audio's alignment is the rest of its frame.
				wantOn := []bool{false, false, false}
				if on {
					wantOn = []bool{true, false, true, false, false}
				}
				if !slices.Equal(goesOn, wantOn) {
					t.Errorf("FrameGoesOn %v, want %v", goesOn, wantOn)
				}
				if on && !slices.EqualFunc(starts, tc.starts, slices.Equal) {
					t.Errorf("starts %v, want %v", starts, tc.starts)
				}
			})
		}
	}
}

// TestTTSAlignmentFromSimulator: on the simulator's ElevenLabs route, the
// characters of a turn's alignment events are its text, and each starts
// within the audio of the frame that carried it.
func TestTTSAlignmentFromSimulator(t *testing.T) {
	t.Parallel()
	p, err := slngsim.ProfileByName("json-elevenlabs")
	if err != nil {
		t.Fatal(err)
	}
	_, c := setup(t, slngsim.Options{Profile: &p}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, slngclient.Endpoint{Model: "elevenlabs/eleven-flash:2.5"}, slngclient.TTSConfig{SampleRate: 24000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	s.SetAlignment(true)
	const say = "Every character, timed."
	if err := s.Text(ctx, say, true); err != nil {
		t.Fatal(err)
	}
	var got string
	var frameBytes int
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case slngclient.TTSAudio:
			frameBytes = len(ev.Audio)
		case slngclient.TTSAlignment:
			frameLen := time.Duration(frameBytes/2) * time.Second / 24000
			for _, ch := range ev.Alignment.Chars {
				if ch.Start >= frameLen {
					t.Errorf("%q starts at %v in a frame of %v", ch.Text, ch.Start, frameLen)
				}
				got += ch.Text
			}
		}
		if ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	if got != say {
		t.Fatalf("aligned %q, want %q", got, say)
	}
}
