// Package service implements the gateway's gRPC API, TextToSpeechService
// and SpeechToTextService, on top of SLNG sessions lent by an Upstream
// (PoolUpstream adapts a *slngpool.Pool; upstream.go declares the narrow
// session interfaces the streams use, which tests fake in memory).
//
// Each stream has one loop goroutine (loop.go) that owns all of its state,
// kept in a core that decides everything and does no I/O (synthCore,
// sttCore: events in, responses and commands out), and goroutines that
// only do I/O (stream.go): the caller's reader, the sender of a bounded
// outbox, and the upstream writer, the only goroutine that dials, writes
// to and closes the stream's SLNG sessions, in the order the core asked.
// Every stream timer lives in the loop, on Config.Clock. Files follow
// the seams of a stream:
//
//   - core.go: what both cores share (config, admission, timers);
//     start.go: a stream's admission and its first message.
//   - synth_core.go, synth_text.go, synth_events.go, synthstate.go:
//     Synthesize's decisions (the caller's text, SLNG's events and the
//     clock); turns.go: the bookkeeping of turns, a pure type;
//     synth_loop.go and synth_writer.go: its loop and upstream writer;
//     timings.go: word timings.
//   - stt_core.go, stt_events.go: Transcribe's decisions; replay.go: the
//     audio kept for a new session; stt_loop.go, stt_writer.go: its loop
//     and writer.
//   - convert.go: audio conversion between the caller's format and SLNG's.
//   - errors.go: the one table from failures to gRPC statuses.
//   - validate.go: request validation; callers.go: caller identity, access
//     and metering hooks; catalog.go: CatalogService; logfields.go,
//     tracing.go, metrics.go: logs, spans and metrics; codec.go: the gRPC
//     codec.
//
// A Server's methods may be called concurrently. Drain asks every stream
// to finish; Wait joins the goroutines a Server started.
package service
