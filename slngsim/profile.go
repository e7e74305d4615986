package slngsim

import (
	"fmt"
	"slices"
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

	// RefuseBYOK refuses, with HTTP 400 and SLNG's body "BYOK is only
	// supported for external STT/TTS routes", a handshake that sends
	// X-Slng-Provider-Key to an SLNG-hosted (`slng/...`) model.
	RefuseBYOK bool
}

// TurnEnd is how a TTS turn ends after its last audio.
type TurnEnd int

const (
	// TurnEndBoth sends `flushed` then `audio_end`.
	TurnEndBoth TurnEnd = iota
	// TurnEndFlushed sends only `flushed`.
	TurnEndFlushed
	// TurnEndAudioEnd sends only `audio_end`, as soniox/tts-rt:v1 does.
	TurnEndAudioEnd
	// TurnEndClose sends no end-of-turn message: the socket closes with
	// 1000 right after the turn's last audio, before any segment_end
	// (LiveKit names Rime and Cartesia).
	TurnEndClose
)

// String names the turn end as the profile names do.
func (t TurnEnd) String() string {
	switch t {
	case TurnEndBoth:
		return "flushed+audio_end"
	case TurnEndFlushed:
		return "flushed"
	case TurnEndAudioEnd:
		return "audio_end"
	case TurnEndClose:
		return "close"
	}
	return fmt.Sprintf("TurnEnd(%d)", int(t))
}

// AudioShape is how the simulated TTS sends audio. Every shape carries the
// same bytes; only the framing differs. The JSON shapes are those LiveKit's
// plugin accepts.
type AudioShape int

const (
	// AudioShapeBinary sends raw audio as binary frames, as the bridge does.
	AudioShapeBinary AudioShape = iota
	// AudioShapeAudioChunk sends {"type":"audio_chunk","data":B64,"sequence":N},
	// the documented form (N counts from 1 per session).
	AudioShapeAudioChunk
	// AudioShapeAudio sends {"type":"audio","data":B64}.
	AudioShapeAudio
	// AudioShapeAudioCapital sends {"type":"Audio","data":B64}.
	AudioShapeAudioCapital
	// AudioShapeChunk sends {"type":"chunk","data":B64}.
	AudioShapeChunk
	// AudioShapeNested sends {"type":"audio_chunk","data":{"audio":B64}}.
	AudioShapeNested
	// AudioShapeAudioField sends {"type":"audio","audio":B64}.
	AudioShapeAudioField
	// AudioShapeElevenLabs sends {"audio":B64,"isFinal":false} with no
	// type, as ElevenLabs routes pass it through.
	AudioShapeElevenLabs
)

// AudioShapes lists every audio shape, binary first.
func AudioShapes() []AudioShape {
	return []AudioShape{AudioShapeBinary, AudioShapeAudioChunk, AudioShapeAudio, AudioShapeAudioCapital,
		AudioShapeChunk, AudioShapeNested, AudioShapeAudioField, AudioShapeElevenLabs}
}

// String names the shape as its profile does, e.g. "json-nested".
func (a AudioShape) String() string {
	switch a {
	case AudioShapeBinary:
		return "binary"
	case AudioShapeAudioChunk:
		return "json-audio-chunk"
	case AudioShapeAudio:
		return "json-audio"
	case AudioShapeAudioCapital:
		return "json-Audio"
	case AudioShapeChunk:
		return "json-chunk"
	case AudioShapeNested:
		return "json-nested"
	case AudioShapeAudioField:
		return "json-audio-field"
	case AudioShapeElevenLabs:
		return "json-elevenlabs"
	}
	return fmt.Sprintf("AudioShape(%d)", int(a))
}

// FinalShape is the shape of STT transcripts.
type FinalShape int

const (
	// FinalsRich sends finals with transcript, confidence, language,
	// start, duration, from_finalize and (when asked for) words, and
	// partials with start and duration.
	FinalsRich FinalShape = iota
	// FinalsAsyncAPI sends what SLNG's AsyncAPI defines: finals with
	// transcript, confidence, language and, with AsyncAPIDuration,
	// duration; partials with transcript and confidence. No start, no
	// words, no from_finalize: a `finalize` is answered by an ordinary
	// final (an empty one when nothing is pending).
	FinalsAsyncAPI
)

// String names the shape.
func (f FinalShape) String() string {
	switch f {
	case FinalsRich:
		return "rich"
	case FinalsAsyncAPI:
		return "asyncapi"
	}
	return fmt.Sprintf("FinalShape(%d)", int(f))
}

// ErrorShape is the shape of error frames. Each is one that LiveKit's
// plugin reads.
type ErrorShape int

const (
	// ErrorShapeFlat is {"type":"error","code":C,"message":M}.
	ErrorShapeFlat ErrorShape = iota
	// ErrorShapeCapital is {"type":"Error","code":C,"message":M}.
	ErrorShapeCapital
	// ErrorShapeNested is {"type":"error","data":{"code":C,"message":M}}.
	ErrorShapeNested
	// ErrorShapeObject is {"type":"error","error":{"message":M,"code":C}}.
	ErrorShapeObject
)

// String names the shape.
func (e ErrorShape) String() string {
	switch e {
	case ErrorShapeFlat:
		return "flat"
	case ErrorShapeCapital:
		return "Error"
	case ErrorShapeNested:
		return "nested"
	case ErrorShapeObject:
		return "object"
	}
	return fmt.Sprintf("ErrorShape(%d)", int(e))
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

// ProfileRich is the simulator's original, kindest behaviour: segments,
// `flushed` then `audio_end`, binary audio, rich finals, reaps with an
// error frame and close 1008, flat error frames, no mid-turn errors, no
// text timeout, no BYOK check.
func ProfileRich() Profile {
	return Profile{Name: "rich", TurnEnd: TurnEndBoth, Segments: true, FinalShape: FinalsRich,
		ReapErrorFrame: true}
}

// namedProfiles are the profiles ProfileByName knows, each the rich profile
// with one documented behaviour changed, so that a test run against each
// isolates that behaviour. "realistic" is handled apart (see Realistic).
var namedProfiles = []struct {
	name string
	edit func(*Profile)
}{
	{"rich", nil},
	{"flushed-only", func(p *Profile) { p.TurnEnd = TurnEndFlushed }},
	{"flushed-capital", func(p *Profile) { p.TurnEnd, p.FlushedType = TurnEndFlushed, "Flushed" }},
	{"done-only", func(p *Profile) { p.TurnEnd, p.FlushedType = TurnEndFlushed, "done" }},
	{"end-only", func(p *Profile) { p.TurnEnd, p.FlushedType = TurnEndFlushed, "end" }},
	{"audio-end-only", func(p *Profile) { p.TurnEnd = TurnEndAudioEnd }},
	{"close-after-audio", func(p *Profile) { p.TurnEnd = TurnEndClose }},
	{"close-after-turn", func(p *Profile) { p.CloseAfterTurn = true }},
	{"no-segments", func(p *Profile) { p.Segments = false }},
	{"json-audio-chunk", func(p *Profile) { p.AudioShape = AudioShapeAudioChunk }},
	{"json-audio", func(p *Profile) { p.AudioShape = AudioShapeAudio }},
	{"json-Audio", func(p *Profile) { p.AudioShape = AudioShapeAudioCapital }},
	{"json-chunk", func(p *Profile) { p.AudioShape = AudioShapeChunk }},
	{"json-nested", func(p *Profile) { p.AudioShape = AudioShapeNested }},
	{"json-audio-field", func(p *Profile) { p.AudioShape = AudioShapeAudioField }},
	{"json-elevenlabs", func(p *Profile) { p.AudioShape = AudioShapeElevenLabs }},
	{"partial-text", func(p *Profile) { p.PartialText = true }},
	{"asyncapi-finals", func(p *Profile) { p.FinalShape, p.AsyncAPIDuration = FinalsAsyncAPI, true }},
	{"asyncapi-finals-no-duration", func(p *Profile) { p.FinalShape = FinalsAsyncAPI }},
	{"mid-turn-error", func(p *Profile) {
		p.MidTurnError = MidTurnError{Marker: "<error>", NoLetters: true, MaxChars: 500, Pronunciation: true, AfterChunks: 2}
	}},
	{"reap-silent-1008", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = false, 1008 }},
	{"reap-silent-1011", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = false, 1011 }},
	{"reap-silent-1012", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = false, 1012 }},
	{"reap-silent-1001", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = false, 1001 }},
	{"reap-with-error", func(p *Profile) { p.ReapErrorFrame, p.ReapCode = true, 1011 }},
	{"text-timeout", func(p *Profile) { p.TextTimeout, p.TextTimeoutClose = 5*time.Second, 1008 }},
	{"error-capital", func(p *Profile) { p.ErrorShape = ErrorShapeCapital }},
	{"error-nested", func(p *Profile) { p.ErrorShape = ErrorShapeNested }},
	{"error-object", func(p *Profile) { p.ErrorShape = ErrorShapeObject }},
}

// ProfileNames lists every name ProfileByName accepts, "rich" first and
// "realistic" last.
func ProfileNames() []string {
	names := make([]string, 0, len(namedProfiles)+1)
	for _, np := range namedProfiles {
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
	for _, np := range namedProfiles {
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
//     not found, BYOK refused on slng/ routes, and turns that end with
//     `flushed` only, except:
//   - deepgram: `flushed` then `audio_end`; finals carry `duration`;
//   - soniox: `audio_end` only, and a TTS session with no text 5 s after
//     `ready` is dropped (close 1008);
//   - rime: `flushed` and `audio_end`, then close 1000 after every turn;
//     a turn over 500 characters fails mid-turn ("Text is too long");
//   - cartesia: no end-of-turn message; close 1000 right after the audio;
//   - elevenlabs: audio as {"audio":B64,"isFinal":false} frames;
//   - sarvam: a turn with a text message that holds no letter fails
//     mid-turn.
func Realistic(model string) Profile {
	p := Profile{
		Name:         "realistic",
		TurnEnd:      TurnEndFlushed,
		FinalShape:   FinalsAsyncAPI,
		ReapCode:     1008,
		MidTurnError: MidTurnError{Pronunciation: true},
		RefuseBYOK:   true,
	}
	provider, _, _ := strings.Cut(strings.TrimPrefix(model, "slng/"), "/")
	switch provider {
	case "deepgram":
		p.TurnEnd = TurnEndBoth
		p.AsyncAPIDuration = true
	case "soniox":
		p.TurnEnd = TurnEndAudioEnd
		p.TextTimeout, p.TextTimeoutClose = 5*time.Second, 1008
	case "rime":
		p.TurnEnd = TurnEndBoth
		p.CloseAfterTurn = true
		p.MidTurnError.MaxChars = 500
	case "cartesia":
		p.TurnEnd = TurnEndClose
	case "elevenlabs":
		p.AudioShape = AudioShapeElevenLabs
	case "sarvam":
		p.MidTurnError.NoLetters = true
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
	if !slices.Contains(AudioShapes(), p.AudioShape) || p.TurnEnd < TurnEndBoth || p.TurnEnd > TurnEndClose ||
		p.FinalShape < FinalsRich || p.FinalShape > FinalsAsyncAPI || p.ErrorShape < ErrorShapeFlat || p.ErrorShape > ErrorShapeObject {
		return fmt.Errorf("slngsim: profile %q: unknown TurnEnd, AudioShape, FinalShape or ErrorShape", p.Name)
	}
	if p.MidTurnError.MaxChars < 0 || p.MidTurnError.AfterChunks < 0 || p.ReapAfter < 0 {
		return fmt.Errorf("slngsim: profile %q: negative MaxChars, AfterChunks or ReapAfter", p.Name)
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
