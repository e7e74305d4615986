package service

import (
	"context"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// AcquireRequest says what a stream asks of the pool: the endpoint, and
// why (a stream's first session, or one replacing a session it had).
type AcquireRequest struct {
	Endpoint slngclient.Endpoint
	Purpose  slngpool.Purpose
}

// The upstream seam: what a stream needs of SLNG, declared here where it is
// used. *slngclient.TTSSession and *slngclient.STTSession implement the
// session interfaces, PoolUpstream adapts a *slngpool.Pool, and the
// service's unit tests use in-memory fakes.

// Upstream lends SLNG sessions to streams.
type Upstream interface {
	// AcquireTTS returns a TTS session for req and cfg. Its errors are
	// the pool's (see slngpool.Pool.AcquireTTS).
	AcquireTTS(ctx context.Context, req AcquireRequest, cfg slngclient.TTSConfig) (Lease[TTSSession], error)
	// AcquireSTT is AcquireTTS for speech to text.
	AcquireSTT(ctx context.Context, req AcquireRequest, cfg slngclient.STTConfig) (Lease[STTSession], error)
}

// Lease is one upstream session lent to a stream.
type Lease[S any] struct {
	Session S
	// Warm reports that a standby session served the acquire.
	Warm bool
	// Release hands the session back: err is why the stream stopped using
	// it (nil if it ended well), reusable that every turn is complete and
	// the socket open, so that it may serve another stream. Only the first
	// call counts.
	Release func(err error, reusable bool)
}

// upstreamSession is what both kinds of session share.
type upstreamSession interface {
	ID() string
	RequestID() string
	Stats() slngclient.Stats
	Err() error
	Close(ctx context.Context) error
	CloseNow()
}

// TTSSession is an SLNG text-to-speech session, as a Synthesize stream
// uses it. Events is closed when the session has ended (Err says why); an
// event's audio is valid until the next event is received.
type TTSSession interface {
	upstreamSession
	Text(ctx context.Context, text string, flush bool) error
	Flush(ctx context.Context) error
	Clear(ctx context.Context) error
	Events() <-chan slngclient.TTSEvent
	// Reusable reports that the session may serve another stream as it is.
	Reusable() bool
	// SetAlignment says whether the session yields the route's alignment
	// (slngclient.TTSAlignment events); off, it is skipped unread.
	SetAlignment(on bool)
}

// STTSession is an SLNG speech-to-text session, as a Transcribe stream
// uses it. Events is as TTSSession's.
type STTSession interface {
	upstreamSession
	SendAudio(ctx context.Context, audio []byte) error
	Finalize(ctx context.Context) error
	CloseSend(ctx context.Context) error
	Events() <-chan slngclient.STTEvent
}

// PoolUpstream lends the sessions of p.
func PoolUpstream(p *slngpool.Pool) Upstream { return poolUpstream{p} }

type poolUpstream struct{ p *slngpool.Pool }

func (u poolUpstream) AcquireTTS(ctx context.Context, req AcquireRequest, cfg slngclient.TTSConfig) (Lease[TTSSession], error) {
	l, err := u.p.AcquireTTS(ctx, slngpool.Request{Endpoint: req.Endpoint, Purpose: req.Purpose}, cfg)
	if err != nil {
		return Lease[TTSSession]{}, err
	}
	return Lease[TTSSession]{Session: l.Session, Warm: l.Warm, Release: l.Release}, nil
}

func (u poolUpstream) AcquireSTT(ctx context.Context, req AcquireRequest, cfg slngclient.STTConfig) (Lease[STTSession], error) {
	l, err := u.p.AcquireSTT(ctx, slngpool.Request{Endpoint: req.Endpoint, Purpose: req.Purpose}, cfg)
	if err != nil {
		return Lease[STTSession]{}, err
	}
	return Lease[STTSession]{Session: l.Session, Warm: l.Warm, Release: l.Release}, nil
}
