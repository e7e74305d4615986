package slngsim

import (
	"encoding/base64"
	"fmt"
	"strconv"
)

// The shapes below are the values a Profile chooses among. Each has one
// table, indexed by the value, that gives its name (String, and the named
// profile that shows it) and, for audio, its framing; nothing else lists
// them.

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
	// TurnEndIsFinal sends only ElevenLabs' last message of a generation,
	// {"audio":null,"isFinal":true}, with no type: LiveKit's plugin takes
	// it for the end of the reply.
	TurnEndIsFinal
	// TurnEndEvent sends only {"type":"event","data":{K: N}}, where the
	// key K is "event" or "event_type" and N one of "complete",
	// "completed", "done", "end", "final", taken in turn: every name
	// LiveKit's plugin takes for the end of a reply.
	TurnEndEvent
)

var turnEndNames = []string{"flushed+audio_end", "flushed", "audio_end", "close", "isFinal", "event"}

// eventEnds are the names TurnEndEvent gives the end of a turn, turn by
// turn.
var eventEnds = []string{"complete", "completed", "done", "end", "final"}

// ClearAnswer is how a TTS route answers `clear`.
type ClearAnswer int

const (
	// ClearCleared answers `cleared` after the last frame of the
	// discarded turn, as the protocol documents.
	ClearCleared ClearAnswer = iota
	// ClearEnd answers with the profile's end of a turn instead (e.g.
	// `audio_end`), which LiveKit's plugin also takes for the answer.
	ClearEnd
	// ClearNothing answers nothing: the turn stops and no frame says so.
	// LiveKit waits 1 s, then discards the socket; pipecat-slng never
	// waits.
	ClearNothing
)

var clearAnswerNames = []string{"cleared", "end", "nothing"}

// String names the answer.
func (c ClearAnswer) String() string { return enumName(clearAnswerNames, c, "ClearAnswer") }

// UtteranceEnd says when the simulated STT sends `utterance_end`.
type UtteranceEnd int

const (
	// UtteranceEndVAD sends one after each utterance's final when init
	// sets enable_vad, the simulator's original behaviour.
	UtteranceEndVAD UtteranceEnd = iota
	// UtteranceEndNever sends none, whatever init says: enable_vad does
	// nothing on the bridge, and Deepgram Nova was never seen to send one
	// (pipecat-slng's live tests).
	UtteranceEndNever
	// UtteranceEndAlways sends one after each utterance's final, whatever
	// init says, as models whose catalog declares final markers
	// (Soniox) do.
	UtteranceEndAlways
)

var utteranceEndNames = []string{"vad", "never", "always"}

// String names the rule.
func (u UtteranceEnd) String() string { return enumName(utteranceEndNames, u, "UtteranceEnd") }

// String names the turn end as the profile names do.
func (t TurnEnd) String() string { return enumName(turnEndNames, t, "TurnEnd") }

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

// audioShapeTable names each audio shape (its String and the named profile
// that shows it) and frames it: a JSON frame is head, the base64 payload,
// then tail (and, for audio_chunk, the sequence and "}").
var audioShapeTable = []struct{ name, head, tail string }{
	AudioShapeBinary:       {"binary", "", ""},
	AudioShapeAudioChunk:   {"json-audio-chunk", `{"type":"audio_chunk","data":"`, `","sequence":`},
	AudioShapeAudio:        {"json-audio", `{"type":"audio","data":"`, `"}`},
	AudioShapeAudioCapital: {"json-Audio", `{"type":"Audio","data":"`, `"}`},
	AudioShapeChunk:        {"json-chunk", `{"type":"chunk","data":"`, `"}`},
	AudioShapeNested:       {"json-nested", `{"type":"audio_chunk","data":{"audio":"`, `"}}`},
	AudioShapeAudioField:   {"json-audio-field", `{"type":"audio","audio":"`, `"}`},
	AudioShapeElevenLabs:   {"json-elevenlabs", `{"audio":"`, `","isFinal":false}`},
}

// AudioShapes lists every audio shape, binary first.
func AudioShapes() []AudioShape {
	out := make([]AudioShape, len(audioShapeTable))
	for i := range out {
		out[i] = AudioShape(i)
	}
	return out
}

// String names the shape as its profile does, e.g. "json-nested".
func (a AudioShape) String() string {
	if known(audioShapeTable, a) {
		return audioShapeTable[a].name
	}
	return fmt.Sprintf("AudioShape(%d)", int(a))
}

// appendAudioFrame appends one chunk of audio framed as a JSON shape to
// dst: the payload is base64-encoded straight into dst, so that a reused
// dst costs no allocation per chunk. seq is the audio_chunk sequence.
func appendAudioFrame(dst []byte, shape AudioShape, chunk []byte, seq int) []byte {
	f := audioShapeTable[shape]
	dst = append(dst, f.head...)
	dst = base64.StdEncoding.AppendEncode(dst, chunk)
	dst = append(dst, f.tail...)
	if shape == AudioShapeAudioChunk {
		dst = append(strconv.AppendInt(dst, int64(seq), 10), '}')
	}
	return dst
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
	// from_finalize, and words only with AsyncAPIWords: a `finalize` is
	// answered by an ordinary final (an empty one when nothing is pending).
	FinalsAsyncAPI
)

var finalShapeNames = []string{"rich", "asyncapi"}

// String names the shape.
func (f FinalShape) String() string { return enumName(finalShapeNames, f, "FinalShape") }

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
	// ErrorShapeObjectMessage is {"type":"error","error":{"message":M}}:
	// an error object holding only a message, as SLNG's clients describe
	// it, so that the frame names no code at all.
	ErrorShapeObjectMessage
	// ErrorShapeEvent is {"type":"event","data":{"event":"failed",
	// "code":C,"message":M}}, which LiveKit's plugin reads as an error.
	ErrorShapeEvent
	// ErrorShapeUntyped is {"error":{"code":C,"message":M}} with no type,
	// as routes passing ElevenLabs' frames through send errors.
	ErrorShapeUntyped
	// ErrorShapeNumeric is {"type":"error","code":N,"message":M}, with the
	// code a number: the HTTP status LiveKit's plugin reads for SLNG's
	// code (e.g. 429 for rate_limit_exceeded, 502 for provider_error), and
	// for a reap's frame 1008, as Gradium sends through SLNG.
	ErrorShapeNumeric
	// ErrorShapeNumericNested is {"type":"error","data":{"status_code":N,
	// "message":M}}, the same numbers in data.status_code.
	ErrorShapeNumericNested
)

// errorShapeTable names each error shape (the named profile that shows one
// is "error-" and its name) and builds its frames.
var errorShapeTable = []struct {
	name  string
	frame func(code, msg string) map[string]any
}{
	ErrorShapeFlat: {"flat", func(code, msg string) map[string]any {
		return map[string]any{"type": "error", "code": code, "message": msg}
	}},
	ErrorShapeCapital: {"capital", func(code, msg string) map[string]any {
		return map[string]any{"type": "Error", "code": code, "message": msg}
	}},
	ErrorShapeNested: {"nested", func(code, msg string) map[string]any {
		return map[string]any{"type": "error", "data": map[string]any{"code": code, "message": msg}}
	}},
	ErrorShapeObject: {"object", func(code, msg string) map[string]any {
		return map[string]any{"type": "error", "error": map[string]any{"message": msg, "code": code}}
	}},
	ErrorShapeObjectMessage: {"object-message", func(_, msg string) map[string]any {
		return map[string]any{"type": "error", "error": map[string]any{"message": msg}}
	}},
	ErrorShapeEvent: {"event", func(code, msg string) map[string]any {
		return map[string]any{"type": "event", "data": map[string]any{"event": "failed", "code": code, "message": msg}}
	}},
	ErrorShapeUntyped: {"untyped", func(code, msg string) map[string]any {
		return map[string]any{"error": map[string]any{"code": code, "message": msg}}
	}},
	ErrorShapeNumeric: {"numeric", func(code, msg string) map[string]any {
		return map[string]any{"type": "error", "code": numericStatus(code), "message": msg}
	}},
	ErrorShapeNumericNested: {"numeric-nested", func(code, msg string) map[string]any {
		return map[string]any{"type": "error", "data": map[string]any{"status_code": numericStatus(code), "message": msg}}
	}},
}

// numericStatuses are the numbers ErrorShapeNumeric sends for SLNG's
// codes: the HTTP statuses of LiveKit's plugin (gateway_adapter.py), and
// 1008 for the frames before a reap, which LiveKit maps to 408 but Gradium
// sends as the close code.
var numericStatuses = map[string]int{
	"auth_error": 401, "config_error": 400, "invalid_request": 400, "payload_too_large": 413,
	"rate_limit": 429, "rate_limit_exceeded": 429, "not_ready": 503, "backpressure": 503,
	"stt_metering_unavailable": 503, "translation_error": 500, "provider_error": 502, "backend_error": 502,
	"backend_connection_failed": 502, "pronunciation_not_found": 400,
	"idle_timeout_exceeded": 1008, "max_connection_duration_exceeded": 1008,
}

// numericStatus is the number ErrorShapeNumeric sends for code: 500 for a
// code it does not know.
func numericStatus(code string) int {
	if n, ok := numericStatuses[code]; ok {
		return n
	}
	return 500
}

// String names the shape.
func (e ErrorShape) String() string {
	if known(errorShapeTable, e) {
		return errorShapeTable[e].name
	}
	return fmt.Sprintf("ErrorShape(%d)", int(e))
}

// errorFrame is an error frame in shape, which must be known.
func errorFrame(shape ErrorShape, code, msg string) map[string]any {
	return errorShapeTable[shape].frame(code, msg)
}

// enumName is the name of v in names, or typ(v) for a value out of range.
func enumName[T ~int](names []string, v T, typ string) string {
	if known(names, v) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", typ, int(v))
}

// known reports whether v is one of the values table lists.
func known[E any, T ~int](table []E, v T) bool {
	return v >= 0 && int(v) < len(table)
}
