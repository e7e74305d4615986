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
// session id and request id; TTS turns of segment_start, audio (binary frames,
// or audio_chunk JSON), segment_end, flushed and audio_end; clear (answered
// by cleared), cancel, close and keepalive; STT partial and final transcripts
// with optional words, utterance_end, finalize and close; an idle timer that
// only client data frames reset (never pings); a maximum connection duration;
// models that close after audio_end; a per-key connection limit; and faults
// injected per model (see ParseFault).
//
// Its audio means something: Synthesize encodes text as tones that Decode,
// and the simulated STT, turn back into exactly the same text, so a round
// trip proves that no byte was lost, duplicated or reordered.
//
// A Server's methods may be called concurrently. Close stops every session
// and waits for all of its goroutines.
package slngsim
