// Package slngclient is a client for SLNG's streaming speech WebSocket API
// (the unified "unmute bridge" protocol): TTS sessions that turn text into
// audio and STT sessions that turn audio into transcripts.
//
// A Client dials sessions; it holds no connections itself. Each session owns
// one WebSocket, one reader goroutine that hands frames to Recv one at a time
// (so a slow consumer pauses the reading instead of queueing), and one
// liveness goroutine that sends application keepalives when the session is
// quiet (SLNG's idle timer ignores WebSocket pings) and pings to find dead
// peers. Close or CloseNow stops both and waits for them.
//
// Every failure that comes from SLNG is an *UpstreamError: an error frame's
// code, a close code, a refused handshake's HTTP status, a lost connection
// or a timeout, with whether retrying can help. The API key never appears in
// an error, a log field or a printed URL.
//
// The package does not import gRPC or the gateway's API: it is usable and
// testable on its own.
package slngclient
