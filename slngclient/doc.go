// Package slngclient is a client for SLNG's streaming speech WebSocket API
// (the unified "unmute bridge" protocol): TTS sessions that turn text into
// audio and STT sessions that turn audio into transcripts.
//
// A Client dials sessions; it holds no connections itself. Each session owns
// one WebSocket, one reader goroutine that hands frames to Recv one at a time
// (so a slow consumer pauses the reading instead of queueing), and one
// liveness goroutine that sends application keepalives when the session is
// quiet (SLNG's idle timer ignores WebSocket pings) and pings to find dead
// peers. A session that sat idle may be asked for a proof of life
// (ProveLife), which its next message carries: a ping right after it, no
// wait before it, and the session ends, retryably, when SLNG stays
// silent. Close or CloseNow stops these goroutines and waits for them.
//
// Every failure that comes from SLNG is an *UpstreamError: an error frame's
// code, a close code, a refused handshake's HTTP status and body, a lost
// connection or a timeout. One table (codes.go) classifies them all
// (UpstreamError.Class): whether retrying can help, whether SLNG is unwell
// (what circuit breakers count), whether it is the caller's fault, whether
// SLNG merely reaped the connection, and a Category that callers map to
// their own errors. The API key never appears in an error, a log field or
// a printed URL.
//
// The client reads what SLNG's routes really send, which varies by route
// more than the protocol documents (see slng-real-clients.md): every form
// of the end of a TTS reply LiveKit's plugin reads (flushed, audio_end,
// done, end in any letter case, `event` frames, ElevenLabs' untyped
// isFinal, ends carrying the last audio, a normal close after the audio),
// JSON audio in every shape besides binary frames, error frames in every
// shape (numeric codes included), and transcripts without timing. A TTS
// session turns them into exactly one TTSTurnEnd per flushed turn: the
// caller's flush ends the caller's turn, whatever the route signals before
// it (turns.go). It dials the host of its region, wss://{region}.api.slng.ai
// (Options.Region; there is no default), or Options.BaseURL, and sends
// only the Authorization header.
//
// The package does not import gRPC or the gateway's API: it is usable and
// testable on its own.
package slngclient
