package service

import (
	"time"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// coreBase is what both stream cores (synthCore, sttCore) hold beside
// their own state: who the stream is for, where it stands, and how it
// ends. Owned by the stream's loop, as the cores are.
type coreBase struct {
	srv      *Server // read-only: its cfg, metrics and callers
	log      *zap.Logger
	usage    *callerUsage
	callerEP string // the caller's own SLNG key, "" for the gateway's
	start    time.Time
	meta     streamMeta
	ep       slngclient.Endpoint // set by the config; the writer reads it from the first acquire on

	phase streamPhase
	// dialling: an acquire is with the writer; replacing says what the
	// session it acquires replaces (nil for a stream's first session).
	dialling  bool
	replacing *replacement
	// lastCaller is when the caller last sent a message.
	lastCaller time.Time

	// done is set once the stream's end is decided: err is how it ends,
	// drainOut whether what the outbox holds is sent first.
	done     bool
	err      error
	drainOut bool
}

type streamPhase uint8

const (
	phaseConfig    streamPhase = iota // waiting for the config
	phaseOpening                      // the first session is being acquired
	phaseRunning                      // `started` went out
	phaseFinishing                    // done: what the outbox holds goes out
)

// replacement is why the session being acquired replaces another.
type replacement struct {
	cause    error // nil for a normal close, or a rollover
	prevID   string
	failedAt time.Time
	// rollover: the old session was old enough to be replaced at a turn
	// boundary, with turns queued behind it.
	rollover bool
}

func newCoreBase(srv *Server, log *zap.Logger, meta streamMeta, usage *callerUsage, callerKey string, now time.Time) coreBase {
	return coreBase{srv: srv, log: log, meta: meta, usage: usage, callerEP: callerKey, start: now, lastCaller: now}
}

// finish decides how the stream ends. The first decision stands.
func (c *coreBase) finish(err error, drainOut bool) {
	if c.done {
		return
	}
	c.done, c.err, c.drainOut = true, err, drainOut
	c.phase = phaseFinishing
}

// fail ends the stream with err, after what the outbox holds.
func (c *coreBase) fail(err error) { c.finish(err, true) }

// abort ends the stream now, without waiting for the outbox: the caller
// went, stopped accepting messages, or ran out of time. A stream already
// done keeps its error, unless it was ending well.
func (c *coreBase) abort(err error) {
	if !c.done {
		c.finish(err, false)
		return
	}
	c.drainOut = false
	if c.err == nil {
		c.err = err
	}
}

func (c *coreBase) ended() (done, drainOut bool) { return c.done, c.drainOut }

// admitModel checks the configured model against the access policy, once
// the config is valid; the endpoint then carries the caller's own key.
func (c *coreBase) admitModel() error {
	c.meta.model = c.ep.Model
	if err := c.usage.allowModel(c.ep.Model); err != nil {
		return err
	}
	c.ep.APIKey = c.callerEP
	c.meta.callerKey = c.ep.APIKey != ""
	return nil
}

// timedOut ends a stream past its maximum duration, even one that is
// sending what it holds, and one that sent no config in time. It reports
// whether it did.
func (c *coreBase) timedOut(now time.Time) bool {
	cfg := &c.srv.cfg
	switch {
	case cfg.MaxStreamDuration > 0 && now.Sub(c.start) >= cfg.MaxStreamDuration:
		c.abort(errStreamTooLong)
	case c.phase == phaseConfig && cfg.FirstMessageTimeout > 0 && now.Sub(c.start) >= cfg.FirstMessageTimeout:
		c.finish(errFirstMessageTimeout, false)
	default:
		return c.done
	}
	return true
}

// baseCheck is the earliest of coreBase's timers.
func (c *coreBase) baseCheck() time.Time {
	cfg := &c.srv.cfg
	at := never
	if c.phase == phaseConfig && cfg.FirstMessageTimeout > 0 {
		at = c.start.Add(cfg.FirstMessageTimeout)
	}
	if cfg.MaxStreamDuration > 0 {
		at = minTime(at, c.start.Add(cfg.MaxStreamDuration))
	}
	return at
}

// dispatch hands a caller's message to first (the config), next (what
// follows) or end (the end of the caller's side).
func dispatch[M any](phase streamPhase, m callerMsg[M], now time.Time, first, next func(M, time.Time), end func(error, time.Time)) {
	switch {
	case m.err != nil:
		end(m.err, now)
	case phase == phaseConfig:
		first(m.msg, now)
	default:
		next(m.msg, now)
	}
}

// dropLease closes the session of l at once and gives it back with err,
// why it ended.
func dropLease[S upstreamSession](l *upstreamLease[S], err error) {
	if l == nil {
		return
	}
	l.Session.CloseNow()
	l.release(err, false)
}

// putAll queues the commands for the writer, emptying cmds.
func putAll[C any](cmds *[]C, mb *mailbox[C]) {
	var zero C
	for i := range *cmds {
		mb.put((*cmds)[i])
		(*cmds)[i] = zero
	}
	*cmds = (*cmds)[:0]
}
