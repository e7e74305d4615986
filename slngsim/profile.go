package slngsim

import (
	"fmt"
	"math/rand/v2"
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
