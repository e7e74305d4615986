// Package slngsim simulates SLNG's streaming speech API: the unified
// ("unmute bridge") WebSocket protocol for TTS and STT, served on both route
// families (/v1/bridges/unmute/{tts|stt}/{model} and /v1/{tts|stt}/{model}).
//
// It is a part of the product, not a test double: speech-gateway embeds it
// in dev mode (--dev), the tests and benchmarks drive the real client and
// gateway against it over loopback, and cmd/slngsim serves it to callers'
// own integration tests.
//
// What it does, following docs/ARCHITECTURE.md and SLNG's published protocol:
// Bearer or ?token= auth (HTTP 401 otherwise); `init` then `ready` with a
// session id and request id; TTS turns of audio ending in `flushed` and/or
// `audio_end`; clear (answered by cleared), cancel, close and keepalive; STT
// partial and final transcripts, utterance_end, finalize and close; an idle
// timer that only client data frames reset (never pings); a maximum
// connection duration; a per-key connection limit; and faults injected per
// model (see ParseFault).
//
// Routes differ, and SLNG's own clients show that the live service is less
// uniform and less kind than its documentation. A Profile, chosen per model
// (Options.Profile, Options.ProfileFor), sets each such behaviour: how a
// turn ends (`flushed`, `audio_end`, both, or a close 1000 after the audio),
// segment events, the framing of audio (binary or one of seven JSON shapes,
// and ElevenLabs' {"audio":null,"isFinal":true} after a turn's audio),
// errors in the middle of a turn that never finishes it, TTS sessions
// dropped when no text follows `init`, the shape of transcripts (rich, or
// the AsyncAPI's with no start or from_finalize, with or without words),
// reaps with or without an error frame and their close codes, the shape of
// error frames, refused handshakes with text or JSON bodies, and BYOK
// refused on SLNG-hosted routes. Realistic is the documented rule
// per provider; ProfileRich, the default, is the original, kindest
// behaviour. docs/simulator.md gives the source of each behaviour and what
// the simulator cannot show.
//
// Its audio means something: Synthesize encodes text as tones that Decode,
// and the simulated STT, turn back into exactly the same text, so a round
// trip proves that no byte was lost, duplicated or reordered, in every
// profile and audio shape.
//
// A Server's methods may be called concurrently. Close stops every session
// and waits for all of its goroutines.
package slngsim
