package slngsim

import (
	"fmt"
	"strings"
	"time"
)

// The named profiles (--profile) and the realistic per-model rule: each
// a Profile (profile.go) set as slng-real-clients.md says a route behaves.

// ProfileRich is the simulator's original, kindest behaviour: segments,
// `flushed` then `audio_end`, binary audio, rich finals, reaps with an
// error frame and close 1008, flat error frames, no mid-turn errors, no
// text timeout, no BYOK check.
func ProfileRich() Profile {
	return Profile{Name: "rich", TurnEnd: TurnEndBoth, Segments: true, FinalShape: FinalsRich,
		ReapErrorFrame: true}
}

// namedProfile is one profile ProfileByName knows: the rich profile with
// edit applied.
type namedProfile struct {
	name string
	edit func(*Profile)
}

// namedProfiles are the profiles ProfileByName knows, each the rich profile
// with one documented behaviour changed, so that a test run against each
// isolates that behaviour. The audio and error shapes' profiles come from
// their tables (shapes.go), so that every shape has one. "realistic" is
// handled apart (see Realistic).
func namedProfiles() []namedProfile {
	turnEnd := func(te TurnEnd, flushedType string) func(*Profile) {
		return func(p *Profile) { p.TurnEnd, p.FlushedType = te, flushedType }
	}
	list := []namedProfile{
		{"rich", nil},
		{"flushed-only", turnEnd(TurnEndFlushed, "")},
		{"flushed-capital", turnEnd(TurnEndFlushed, "Flushed")},
		{"done-only", turnEnd(TurnEndFlushed, "done")},
		{"end-only", turnEnd(TurnEndFlushed, "end")},
		{"audio-end-only", turnEnd(TurnEndAudioEnd, "")},
		{"close-after-audio", turnEnd(TurnEndClose, "")},
		{"close-after-turn", func(p *Profile) { p.CloseAfterTurn = true }},
		{"no-segments", func(p *Profile) { p.Segments = false }},
	}
	for _, shape := range AudioShapes()[1:] {
		list = append(list, namedProfile{shape.String(), func(p *Profile) { p.AudioShape = shape }})
	}
	list = append(list, []namedProfile{
		{"json-elevenlabs-final", func(p *Profile) { p.AudioShape, p.IsFinalFrame = AudioShapeElevenLabs, true }},
		{"partial-text", func(p *Profile) { p.PartialText = true }},
		{"asyncapi-finals", func(p *Profile) { p.FinalShape, p.AsyncAPIDuration = FinalsAsyncAPI, true }},
		{"asyncapi-finals-no-duration", func(p *Profile) { p.FinalShape = FinalsAsyncAPI }},
		{"asyncapi-finals-words", func(p *Profile) { p.FinalShape, p.AsyncAPIWords = FinalsAsyncAPI, true }},
		{"mid-turn-error", func(p *Profile) {
			p.MidTurnError = MidTurnError{Marker: "<error>", NoLetters: true, MaxChars: 500, Pronunciation: true, AfterChunks: 2}
		}},
		{"isfinal-only", turnEnd(TurnEndIsFinal, "")},
		{"isfinal-with-audio", func(p *Profile) {
			p.TurnEnd, p.AudioShape, p.LastAudioInEnd, p.Segments = TurnEndIsFinal, AudioShapeElevenLabs, true, false
		}},
		{"event-end", turnEnd(TurnEndEvent, "")},
		{"end-with-audio", func(p *Profile) { p.TurnEnd, p.LastAudioInEnd = TurnEndAudioEnd, true }},
		{"speak-on-text", func(p *Profile) { p.TurnEnd, p.SpeakOnText, p.Segments = TurnEndAudioEnd, true, false }},
		{"clear-answers-end", func(p *Profile) { p.ClearAnswer = ClearEnd }},
		{"clear-unanswered", func(p *Profile) { p.ClearAnswer = ClearNothing }},
		{"clear-late", func(p *Profile) { p.ClearDelay = clearDelay }},
		{"audio-after-cleared", func(p *Profile) { p.AudioAfterCleared = audioAfterCleared }},
		{"clear-late-audio-after", func(p *Profile) { p.ClearDelay, p.AudioAfterCleared = clearDelay, audioAfterCleared }},
		{"pcm24k-only", func(p *Profile) { p.Produces = AudioFormat{Encoding: "linear16", SampleRate: 24000} }},
		{"voice-refused", func(p *Profile) { p.RefusedVoice = "refused-voice" }},
		{"not-deployed", func(p *Profile) { p.NotDeployed = true }},
		{"partials-always", func(p *Profile) { p.PartialsAlways = true }},
		{"utterance-end-never", func(p *Profile) { p.UtteranceEnd = UtteranceEndNever }},
		{"utterance-end-always", func(p *Profile) { p.UtteranceEnd = UtteranceEndAlways }},
		{"finalize-lost", func(p *Profile) { p.LostFinalizes = 1 }},
		{"finalize-late", func(p *Profile) { p.FinalizeDelay = finalizeDelaySLNGHosted }},
	}...)
	for _, code := range []int{1008, 1011, 1012, 1001} {
		list = append(list, namedProfile{fmt.Sprintf("reap-silent-%d", code), func(p *Profile) { p.ReapErrorFrame, p.ReapCode = false, code }})
	}
	list = append(list, []namedProfile{
		{"reap-with-error", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = true, 1011 }},
		{"text-timeout", func(p *Profile) { p.TextTimeout, p.TextTimeoutClose = 5*time.Second, 1008 }},
		{"handshake-json", func(p *Profile) { p.JSONHandshakeBodies = true }},
	}...)
	for i := 1; i < len(errorShapeTable); i++ {
		shape := ErrorShape(i)
		list = append(list, namedProfile{"error-" + shape.String(), func(p *Profile) { p.ErrorShape = shape }})
	}
	return list
}

// The measured waits of slng-real-clients.md, and the chunks of a cleared
// turn the profiles that send them send.
var (
	// clearDelay: "`cleared` was measured 300-500 ms after `clear`".
	clearDelay = Delay{Min: 300 * time.Millisecond, Max: 500 * time.Millisecond}
	// finalizeDelaySLNGHosted and finalizeDelayExternal: finalize to
	// final, median 605 ms on slng/deepgram/nova:3-en, 280 ms on
	// deepgram/nova:3.
	finalizeDelaySLNGHosted = Fixed(605 * time.Millisecond)
	finalizeDelayExternal   = Fixed(280 * time.Millisecond)
	// audioAfterCleared: no client says how much comes; up to three chunks
	// (as many as the cleared turn had left; 60 ms at the default 20 ms)
	// come well inside the 100 ms of quiet LiveKit wants after the answer.
	audioAfterCleared = 3
)

// ProfileNames lists every name ProfileByName accepts, "rich" first and
// "realistic" last.
func ProfileNames() []string {
	list := namedProfiles()
	names := make([]string, 0, len(list)+1)
	for _, np := range list {
		names = append(names, np.name)
	}
	return append(names, "realistic")
}

// ProfileByName returns a named profile. Every name but "rich" is the rich
// profile with one behaviour changed (and RefuseBYOK, which SLNG always
// does). "realistic" depends on the model: ProfileByName returns
// Realistic(""), the rule for a provider it has no specific rule for; use
// ProfileFunc or Realistic itself for the per-model rule.
func ProfileByName(name string) (Profile, error) {
	if name == "realistic" {
		return Realistic(""), nil
	}
	for _, np := range namedProfiles() {
		if np.name == name {
			p := ProfileRich()
			if np.edit != nil {
				p.Name = np.name
				p.RefuseBYOK = true
				np.edit(&p)
			}
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("slngsim: unknown profile %q (known: %s)", name, strings.Join(ProfileNames(), ", "))
}

// ProfileFunc returns the per-model rule for a profile name, for
// Options.ProfileFor: Realistic for "realistic", otherwise the named
// profile for every model.
func ProfileFunc(name string) (func(model string) Profile, error) {
	if name == "realistic" {
		return Realistic, nil
	}
	p, err := ProfileByName(name)
	if err != nil {
		return nil, err
	}
	return func(string) Profile { return p }, nil
}

// Realistic is the documented behaviour of a model's route, by provider
// (the model's first path element, after "slng/" for SLNG-hosted models),
// following what SLNG's own clients report (docs/simulator.md):
//
//   - every route: no segment events, binary audio, AsyncAPI transcripts,
//     reaps with close 1008 and no error frame, pronunciation dictionaries
//     not found, BYOK refused on slng/ routes, a TTS session with no text
//     5 s after `init` dropped (close 1008: pipecat-slng measured the
//     bridge do it, on soniox/tts-rt:v1), and turns that end with
//     `flushed` only, except:
//   - deepgram: `flushed` then `audio_end`; finals carry `duration`;
//   - soniox: `audio_end` only;
//   - rime: no end-of-turn message; close 1000 right after the audio (as
//     LiveKit says of Rime, and as pipecat-slng saw slng/rime/arcana close
//     after each turn); a turn over 500 characters fails mid-turn ("Text
//     is too long");
//   - cartesia: no end-of-turn message; close 1000 right after the audio;
//   - elevenlabs: audio as {"audio":B64,"isFinal":false} frames, and
//     {"audio":null,"isFinal":true} after each turn's audio;
//   - sarvam: a turn with a text message that holds no letter fails
//     mid-turn; partial transcripts come even when init turns them off;
//   - every route answers `clear` 300-500 ms late and then sends up to
//     three more chunks of the cleared turn's audio (as many as it had
//     left), and answers `finalize`
//     605 ms late on slng/ routes, 280 ms late elsewhere (the two
//     routes measured: slng/deepgram/nova:3-en and deepgram/nova:3);
//   - and on STT, `utterance_end` only from soniox, after every final,
//     whatever enable_vad says (it does nothing on the bridge).
func Realistic(model string) Profile {
	p := Profile{
		Name:         "realistic",
		TurnEnd:      TurnEndFlushed,
		FinalShape:   FinalsAsyncAPI,
		ReapCode:     1008,
		MidTurnError: MidTurnError{Pronunciation: true},
		RefuseBYOK:   true,
		// The bridge's rule, not one provider's: pipecat-slng names no
		// route it spares.
		TextTimeout:      5 * time.Second,
		TextTimeoutClose: 1008,
		UtteranceEnd:     UtteranceEndNever,
		// Measured on the bridge, as the least convenient answers.
		ClearDelay:        clearDelay,
		AudioAfterCleared: audioAfterCleared,
		FinalizeDelay:     finalizeDelayExternal,
	}
	if strings.HasPrefix(model, "slng/") {
		p.FinalizeDelay = finalizeDelaySLNGHosted
	}
	provider, _, _ := strings.Cut(strings.TrimPrefix(model, "slng/"), "/")
	switch provider {
	case "deepgram":
		p.TurnEnd = TurnEndBoth
		p.AsyncAPIDuration = true
	case "soniox":
		p.TurnEnd = TurnEndAudioEnd
		p.UtteranceEnd = UtteranceEndAlways
	case "rime":
		p.TurnEnd = TurnEndClose
		p.MidTurnError.MaxChars = 500
	case "cartesia":
		p.TurnEnd = TurnEndClose
	case "elevenlabs":
		// Only the isFinal frame ends a turn: no SLNG message follows it
		// (the harder reading; LiveKit takes isFinal for the end).
		p.AudioShape, p.TurnEnd = AudioShapeElevenLabs, TurnEndIsFinal
	case "sarvam":
		p.MidTurnError.NoLetters = true
		p.PartialsAlways = true
	default:
		return p
	}
	p.Name = "realistic:" + provider
	return p
}
