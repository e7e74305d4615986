// Package service implements the gateway's gRPC API, TextToSpeechService
// and SpeechToTextService, on top of SLNG sessions handed out by an
// Upstream (a *slngpool.Pool).
//
// Each stream has two pumps (pumps.go): up, from the caller to SLNG, and
// down, from SLNG to the caller; the first error ends both. Files follow
// the seams of a stream:
//
//   - synthesize.go: a Synthesize or SynthesizeText stream, its state and
//     the ordered sending of its responses; synthesize_up.go: what the
//     caller sends (text, flush, clear, half-close) and the turn watchdog;
//     synthesize_down.go: what SLNG sends, and replacing the session when
//     it ends or fails. turns.go is the bookkeeping of the turns, a pure
//     type with no I/O.
//   - transcribe.go: a Transcribe stream and what the caller sends;
//     transcribe_down.go: transcripts, and reconnecting with replay.
//   - replay.go: the audio kept for a reconnect and audio timing.
//   - errors.go: the one table from failures to gRPC statuses.
//   - validate.go: request validation; callers.go: caller identity, access
//     and metering hooks; logfields.go, tracing.go, metrics.go: logs,
//     spans and metrics; codec.go: the gRPC codec.
//
// A Server's methods may be called concurrently. Drain asks every stream
// to finish; Wait joins the goroutines a Server started.
package service
