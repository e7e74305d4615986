// Package service implements the gateway's gRPC API, TextToSpeechService
// and SpeechToTextService, on top of SLNG sessions lent by an Upstream
// (PoolUpstream adapts a *slngpool.Pool; upstream.go declares the narrow
// session interfaces the streams use, which tests fake in memory).
//
// Each stream runs three goroutines (pumps.go): the up pump reads the
// caller; the owner is the only goroutine that writes to, dials and
// replaces the stream's upstream session, in the order the pumps ask; the
// down pump relays what SLNG sends to the caller. The first error ends
// all three. Files follow the seams of a stream:
//
//   - synthesize.go: a Synthesize or SynthesizeText stream, its state and
//     the ordered sending of its responses; synthesize_up.go: what the
//     caller sends (text, flush, clear, half-close) and the turn watchdog;
//     synthesize_owner.go: the owner's requests; synthesize_down.go: what
//     SLNG sends, and replacing the session when it ends or fails.
//     turns.go is the bookkeeping of the turns, a pure type with no I/O.
//   - transcribe.go: a Transcribe stream and what the caller sends;
//     transcribe_owner.go: audio going up and the replacement of a
//     session with replay; transcribe_down.go: transcripts.
//   - replay.go: the audio kept for a reconnect and audio timing.
//   - errors.go: the one table from failures to gRPC statuses.
//   - validate.go: request validation; callers.go: caller identity, access
//     and metering hooks; logfields.go, tracing.go, metrics.go: logs,
//     spans and metrics; codec.go: the gRPC codec.
//
// A Server's methods may be called concurrently. Drain asks every stream
// to finish; Wait joins the goroutines a Server started.
package service
