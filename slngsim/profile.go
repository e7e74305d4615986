package slngsim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Profile is how one route behaves where SLNG's routes differ from each
// other or from SLNG's documentation. SLNG's own clients (LiveKit's plugin,
// pipecat-slng, SLNG's generated SDKs) show that the live service is less
// uniform than its docs: docs/simulator.md lists each behaviour, its source
// and the field below that shows it.
//
// A Profile is a plain value: copy one from ProfileRich, ProfileByName or
// Realistic and change fields as a test needs. The zero value of every
// field is its documented default.
type Profile struct {
	// Name labels the profile in logs and SessionInfo.Profile.
	Name string

	// TurnEnd is how a TTS turn ends after its last audio. Default
	// TurnEndBoth.
	TurnEnd TurnEnd
	// FlushedType is the type of the `flushed` message, e.g. "Flushed" as
	// Deepgram-native routes spell it, or "done" or "end", which LiveKit
	// also takes for the end of a turn. Default "flushed". "Flushed"
	// carries a sequence_id, as Deepgram's does.
	FlushedType string
	// CloseAfterTurn closes the socket with 1000 after each turn's
	// end-of-turn messages, as pipecat-slng saw slng/rime/arcana do.
	CloseAfterTurn bool
	// Segments sends segment_start and segment_end around each turn's
	// audio. No client relies on them, and routes may not send them.
	Segments bool
	// AudioShape is how TTS audio travels. Default AudioShapeBinary, what
	// the bridge sends.
	AudioShape AudioShape
	// IsFinalFrame sends ElevenLabs' last message of a generation,
	// {"audio":null,"isFinal":true}, right after each turn's last audio
	// (before segment_end and the end-of-turn messages, or the close), as
	// an ElevenLabs route passes it through. It carries no audio and ends
	// nothing: the turn ends as TurnEnd says.
	IsFinalFrame bool
	// SpeakOnText speaks each `text` message at once, as a turn of its
	// own (its audio, then the end messages TurnEnd says), and answers
	// each `flush` with the end messages alone: routes that voice every
	// text frame (LiveKit: Rime Coda with segment="immediate"; pipecat-slng
	// 0.5.2: "segment terminals before the input flush do not end the
	// utterance"). TurnEnd must not be TurnEndClose.
	SpeakOnText bool
	// LastAudioInEnd sends each turn's last audio chunk inside its first
	// end-of-turn message instead of as audio: in data, data.audio or
	// audio, turn by turn (audio for TurnEndIsFinal), the places LiveKit's
	// plugin reads it from.
	LastAudioInEnd bool
	// ClearAnswer is how `clear` is answered. Default ClearCleared.
	ClearAnswer ClearAnswer
	// ClearDelay holds the answer to each `clear` (ClearAnswer) this long
	// after the clear is taken in turn: `cleared` was measured 300-500 ms
	// after `clear` (LiveKit). The turn's audio stops at once; the
	// session speaks nothing else meanwhile. Zero answers at once.
	ClearDelay Delay
	// AudioAfterCleared sends up to this many audio chunks of the cleared
	// turn after the clear's answer (after nothing, with ClearNothing), as
	// SLNG does at times: LiveKit discards a socket that sends "audio after
	// the acknowledgement". The chunks are the turn's next audio, in the
	// profile's AudioShape, without alignment. 0 sends none.
	AudioAfterCleared int
	// Produces, when its Encoding is set, is the only audio the TTS route
	// produces, whatever encoding and sample rate `init` asks for: a
	// route whose provider makes one format. SLNG documents no formats per
	// model, and its clients show routes doing other than asked (LiveKit
	// always sends the encoding because "some SLNG models default to MP3
	// unless explicitly requested"); sending the format regardless, rather
	// than refusing, is the harder case, since nothing in the session says
	// so.
	Produces AudioFormat
	// MidTurnDrop loses the connection (no close frame) in the middle of
	// some turns' audio; the zero value loses none.
	MidTurnDrop MidTurnDrop
	// RefusedVoice, when set, makes the provider refuse a TTS session
	// whose init names this voice: init is answered with an error frame
	// (provider_error) and a close 1011, and no ready, as LiveKit
	// describes a session that "never worked, as when the provider refuses
	// the voice".
	RefusedVoice string
	// NotDeployed refuses every handshake of the model with HTTP 404
	// ("... is not deployed in this region"): SLNG's region page says not
	// every model is deployed in every region, and requests are not
	// routed between regions.
	NotDeployed bool
	// PartialText announces `accepts_partial_text: true` in TTS `ready`,
	// as routes that take the `partial` text flag do. The simulator speaks
	// partial text like any other.
	PartialText bool
	// MidTurnError makes some turns fail in the middle; the zero value
	// fails none.
	MidTurnError MidTurnError
	// TextTimeout closes a TTS session that receives no `text` within
	// this long of `init`, with close code TextTimeoutClose (default
	// 1008) and no error frame, as pipecat-slng measured on
	// soniox/tts-rt:v1 (5.05 s). 0 disables.
	TextTimeout      time.Duration
	TextTimeoutClose int

	// FinalShape is the shape of STT partial and final transcripts.
	// Default FinalsRich.
	FinalShape FinalShape
	// AsyncAPIDuration sends `duration` in FinalsAsyncAPI finals, where
	// the AsyncAPI makes it optional.
	AsyncAPIDuration bool
	// PartialsAlways sends partial transcripts even when init turns them
	// off, as Sarvam Saaras does (LiveKit drops them itself).
	PartialsAlways bool
	// UtteranceEnd says when `utterance_end` is sent. Default
	// UtteranceEndVAD.
	UtteranceEnd UtteranceEnd
	// LostFinalizes leaves the first LostFinalizes `finalize` messages
	// the simulator gets for the model, on any of its sessions, unanswered
	// (no final, however long), as a provider that loses one now and then
	// does: LiveKit keeps a watchdog after a finalize because "a provider
	// that never sends the final would hang the stream". Negative: every
	// one.
	LostFinalizes int
	// FinalizeDelay holds the final that answers a `finalize` this long:
	// SLNG measured a median of 605 ms on slng/deepgram/nova:3-en and
	// 280 ms on deepgram/nova:3. The session hears nothing more until it is
	// sent, so audio sent after the finalize is transcribed after its
	// final, in order, as a provider that flushes does. Zero answers at
	// once.
	FinalizeDelay Delay
	// AsyncAPIWords sends Deepgram-shaped `words` in every FinalsAsyncAPI
	// final with text, asked for or not: the AsyncAPI does not define
	// them, but LiveKit reads a final's times from words[0].start and
	// words[-1].end when a route sends them, and then they are the only
	// times the final has.
	AsyncAPIWords bool

	// ReapAfter reaps any session this old (as well as Options'
	// MaxConnectionDuration and IdleTimeout, which reap in the same way).
	// 0 adds no limit of its own.
	ReapAfter time.Duration
	// ReapCode is the close code of every reap: idle, maximum duration and
	// ReapAfter. LiveKit names 1008, 1011 and 1012. Default 1008.
	ReapCode int
	// ReapErrorFrame sends an error frame (idle_timeout_exceeded or
	// max_connection_duration_exceeded) before a reap's close. LiveKit
	// says a reap may come without one.
	ReapErrorFrame bool

	// ErrorShape is the shape of every error frame. Default
	// ErrorShapeFlat, the AsyncAPI's.
	ErrorShape ErrorShape

	// JSONHandshakeBodies answers every refused handshake of the model
	// (bad key, connection limit, BYOK, handshake faults) with a JSON body
	// in the shape of the OpenAPI document's errors, {"error": M,
	// "status": N} (403: {"error", "message", "statusCode"}), and
	// Content-Type application/json, instead of plain text. A fault's own
	// body that is already JSON is sent as it is.
	JSONHandshakeBodies bool

	// RefuseBYOK refuses, with HTTP 400 and SLNG's body "BYOK is only
	// supported for external STT/TTS routes", a handshake that sends
	// X-Slng-Provider-Key to an SLNG-hosted (`slng/...`) model.
	RefuseBYOK bool
}

// Delay is a wait drawn uniformly from Min to Max for each use; a Max
// below Min waits Min.
type Delay struct{ Min, Max time.Duration }

// Fixed is a Delay of exactly d.
func Fixed(d time.Duration) Delay { return Delay{Min: d, Max: d} }

// draw is one wait of the delay.
func (d Delay) draw() time.Duration {
	if d.Max <= d.Min {
		return max(d.Min, 0)
	}
	return d.Min + rand.N(d.Max-d.Min+1)
}

// SendsAlignment reports whether the profile's TTS routes send, with their
// audio, when each character is heard: ElevenLabs' frames do
// (AudioShapeElevenLabs; alignment.go).
func (p Profile) SendsAlignment() bool { return p.AudioShape == AudioShapeElevenLabs }

// AudioFormat is an encoding ("linear16", "mulaw", "alaw", or the
// stand-ins "mp3" and "opus") and a sample rate in Hz.
type AudioFormat struct {
	Encoding   string
	SampleRate int
}

// MidTurnError makes turns fail in the middle, as SLNG routes do on a
// socket they keep open: after AfterChunks audio chunks of the turn, an
// error frame arrives and the turn never ends (no segment_end, flushed,
// audio_end or close). As pipecat-slng found, the same socket then answers
// every later turn with the same error frame, at once and without audio.
// `clear`, `keepalive` and `close` still work.
//
// A turn fails when any rule below matches. The zero value fails none.
type MidTurnError struct {
	// Marker fails a turn whose text contains it, e.g. "<error>", so
	// that tests can fail a turn deterministically on any route. Code
	// provider_error.
	Marker string
	// NoLetters fails a turn with a `text` message that holds no letter,
	// as Sarvam routes reject such text. Code provider_error.
	NoLetters bool
	// MaxChars fails a turn of more than MaxChars characters, as Rime
	// does with "Text is too long. Maximum 500 characters per request.".
	// Code provider_error. 0 means no limit.
	MaxChars int
	// Pronunciation fails every turn of a session whose init config, or
	// whose `text` message, names a pronunciation dictionary
	// (`pronunciation`): the simulator holds none, so each is
	// pronunciation_not_found.
	Pronunciation bool
	// Code and Message, when set, replace every rule's own.
	Code, Message string
	// AfterChunks is how many audio chunks of a failing turn are sent
	// before its error frame. 0 sends none.
	AfterChunks int
}

// MidTurnDrop loses the connection of a turn whose text contains Marker
// after AfterChunks of its audio chunks (at least one), without a close
// frame, as a provider crash or a network fault does. It is for tests:
// no client names a route that does it on purpose.
type MidTurnDrop struct {
	Marker      string
	AfterChunks int
}

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
	// audioAfterCleared: no client says how much comes; three chunks
	// (60 ms at the default 20 ms) come well inside the 100 ms of quiet
	// LiveKit wants after the answer.
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
//   - every route answers `clear` 300-500 ms late and then sends three
//     more chunks of the cleared turn's audio, and answers `finalize`
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

// withDefaults fills in the documented defaults of unset fields.
func (p Profile) withDefaults() Profile {
	if p.FlushedType == "" {
		p.FlushedType = "flushed"
	}
	if p.ReapCode == 0 {
		p.ReapCode = 1008
	}
	if p.TextTimeoutClose == 0 {
		p.TextTimeoutClose = 1008
	}
	if p.TextTimeout < 0 {
		p.TextTimeout = 0
	}
	return p
}

// validate reports a profile that cannot be served.
func (p Profile) validate() error {
	if !validCloseCode(p.ReapCode) || !validCloseCode(p.TextTimeoutClose) {
		return fmt.Errorf("slngsim: profile %q: close codes must be 1000-1014 or 3000-4999", p.Name)
	}
	if !known(audioShapeTable, p.AudioShape) || !known(turnEndNames, p.TurnEnd) ||
		!known(finalShapeNames, p.FinalShape) || !known(errorShapeTable, p.ErrorShape) ||
		!known(clearAnswerNames, p.ClearAnswer) || !known(utteranceEndNames, p.UtteranceEnd) {
		return fmt.Errorf("slngsim: profile %q: unknown TurnEnd, AudioShape, FinalShape, ErrorShape, ClearAnswer or UtteranceEnd", p.Name)
	}
	if f := p.Produces; f.Encoding != "" && (bytesPerSample(f.Encoding) == 0 || f.SampleRate < 8000 || f.SampleRate > 48000) {
		return fmt.Errorf("slngsim: profile %q: Produces %q at %d Hz: an encoding the simulator speaks, at 8000 to 48000 Hz", p.Name, f.Encoding, f.SampleRate)
	}
	if p.MidTurnError.MaxChars < 0 || p.MidTurnError.AfterChunks < 0 || p.MidTurnDrop.AfterChunks < 0 || p.ReapAfter < 0 ||
		p.AudioAfterCleared < 0 || p.ClearDelay.Min < 0 || p.FinalizeDelay.Min < 0 {
		return fmt.Errorf("slngsim: profile %q: negative MaxChars, AfterChunks, ReapAfter, AudioAfterCleared or delay", p.Name)
	}
	if p.SpeakOnText && p.TurnEnd == TurnEndClose {
		return fmt.Errorf("slngsim: profile %q: SpeakOnText needs an end-of-turn message, not a close", p.Name)
	}
	return nil
}

// validCloseCode reports whether code may be sent in a close frame
// (RFC 6455 section 7.4; 1004-1006 and 1015 never go on the wire).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1014:
		return code < 1004 || code > 1006
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
