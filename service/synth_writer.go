package service

import (
	"context"
	"errors"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// ttsWriter is a Synthesize stream's upstream writer: the only goroutine
// that dials, writes to and closes the stream's SLNG sessions, in the
// order the loop queued the commands, so that a replayed turn always
// reaches a new session before newer text. It decides nothing: it reports
// what it acquired, and the writes that failed, to the loop.
type ttsWriter struct {
	c    *synthCore // read-only here: ep, ttsCfg, cfg and usage, set before the first acquire
	cmds *mailbox[ttsCmd]
	// results is unbuffered: a session acquired after the loop stopped
	// taking results is given back by the writer itself.
	results chan ttsResult
}

func newTTSWriter(c *synthCore) *ttsWriter {
	return &ttsWriter{c: c, cmds: newMailbox[ttsCmd](maxWriterQueue), results: make(chan ttsResult)}
}

// run carries out the commands until the mailbox is closed. ctx ends when
// the stream does: an acquire in progress stops, and a write blocked on a
// socket ends when the loop closes the session.
func (w *ttsWriter) run(ctx context.Context) {
	s := w.c.srv
	for {
		cmd, ok := w.cmds.take()
		if !ok {
			return
		}
		switch cmd.kind {
		case cmdAcquire:
			c := w.c
			lease, err := acquireLease(ctx, s, "tts", c.usage, c.ep, func(ctx context.Context) (Lease[TTSSession], error) {
				return s.upstream.AcquireTTS(ctx, AcquireRequest{Endpoint: c.ep, Purpose: cmd.purpose}, c.ttsCfg)
			})
			if lease != nil {
				// Before any text: a session another stream used keeps
				// what that one asked.
				lease.Session.SetAlignment(c.cfg.GetEnableTimings())
			}
			report(ctx, w.results, ttsResult{lease: lease, err: err}, lease)
		case cmdCharge:
			if err := w.c.usage.charge(ctx, cmd.text); err != nil {
				report[TTSSession](ctx, w.results, ttsResult{err: err, charge: true}, nil)
			}
		case cmdText:
			if cmd.charge {
				if err := w.c.usage.charge(ctx, cmd.text); err != nil {
					report[TTSSession](ctx, w.results, ttsResult{err: err, charge: true}, nil)
					continue
				}
			}
			w.wrote(ctx, cmd.sess, cmd.sess.Text(ctx, cmd.text, cmd.flush))
		case cmdFlush:
			w.wrote(ctx, cmd.sess, cmd.sess.Flush(ctx))
		case cmdClear:
			w.wrote(ctx, cmd.sess, cmd.sess.Clear(ctx))
		case cmdClose:
			// Every turn on the old session is over (the commands before
			// this one were its last), and the turns behind it wait for the
			// next command: its graceful close, up to CloseTimeout, runs
			// beside the writer.
			s.closeBeside(ctx, cmd.lease)
		}
	}
}

// wrote reports a write that failed.
func (w *ttsWriter) wrote(ctx context.Context, sess TTSSession, err error) {
	if err != nil && !errors.Is(err, slngclient.ErrNothingToFlush) {
		report[TTSSession](ctx, w.results, ttsResult{sess: sess, err: err}, nil)
	}
}

// report hands r to the loop on results. When the stream has ended, the
// session r acquired (lease, nil for none) is given back here: results is
// unbuffered, so it never waits there unseen.
func report[S upstreamSession, R any](ctx context.Context, results chan<- R, r R, lease *upstreamLease[S]) {
	select {
	case results <- r:
	case <-ctx.Done():
		dropLease(lease, context.Cause(ctx))
	}
}

// closeBeside closes a session the stream has done with gracefully, and
// gives it back, on a goroutine of its own that Server.Wait joins, so that
// a slow close delays no write. The stream stops paying for the session
// now.
func (s *Server) closeBeside(ctx context.Context, l *upstreamLease[TTSSession]) {
	l.stopCharging()
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CloseTimeout)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		defer cancel()
		_ = l.Session.Close(closeCtx) // best effort
		l.release(nil, false)
	}()
}
