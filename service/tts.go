package service

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// Default synthesis format: what SLNG's own clients use (slng-protocol.md
// section 10).
const (
	defaultTTSSampleRate = 24000
	defaultSTTSampleRate = 16000
)

// synthRequests is where a synthesis reads its requests from: the bidi
// stream, or the single request of SynthesizeText.
type synthRequests interface {
	Recv() (*speechv1.SynthesizeRequest, error)
}

// synthResponses is where a synthesis sends its responses.
type synthResponses interface {
	Send(*speechv1.SynthesizeResponse) error
}

// ttsServiceName is the full name of TextToSpeechService, for logs.
var ttsServiceName = speechv1.TextToSpeechService_ServiceDesc.ServiceName

// Synthesize implements TextToSpeechService.Synthesize.
func (s *Server) Synthesize(stream speechv1.TextToSpeechService_SynthesizeServer) error {
	return s.synthesize(stream.Context(), "Synthesize", stream, stream)
}

// SynthesizeText implements TextToSpeechService.SynthesizeText as a
// Synthesize stream of one flushed text followed by a half-close.
func (s *Server) SynthesizeText(req *speechv1.SynthesizeTextRequest, stream speechv1.TextToSpeechService_SynthesizeTextServer) error {
	if err := s.checkText("text", req.GetText()); err != nil {
		id, log := s.streamLogger(stream.Context(), ttsServiceName, "SynthesizeText")
		return s.finish(stream.Context(), "SynthesizeText", err, streamMeta{sessionID: id}, log)
	}
	cfg := req.GetConfig()
	if cfg == nil {
		cfg = &speechv1.SynthesisConfig{}
	}
	reqs := &singleText{msgs: []*speechv1.SynthesizeRequest{
		{Request: &speechv1.SynthesizeRequest_Config{Config: cfg}},
		{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: req.GetText(), Flush: true}}},
	}}
	return s.synthesize(stream.Context(), "SynthesizeText", reqs, stream)
}

// singleText replays a fixed list of requests, then reports a half-close.
type singleText struct {
	msgs []*speechv1.SynthesizeRequest
}

func (r *singleText) Recv() (*speechv1.SynthesizeRequest, error) {
	if len(r.msgs) == 0 {
		return nil, io.EOF
	}
	m := r.msgs[0]
	r.msgs = r.msgs[1:]
	return m, nil
}

func (s *Server) synthesize(ctx context.Context, rpc string, reqs synthRequests, out synthResponses) error {
	id, log := s.streamLogger(ctx, ttsServiceName, rpc)
	ctx, log, usage := s.callerContext(ctx, log, rpc)
	meta := streamMeta{sessionID: id, caller: usage.caller}
	release, err := s.admit(rpc)
	if err != nil {
		return s.finish(ctx, rpc, err, meta, log)
	}
	defer release()
	st := &synthesis{srv: s, reqs: reqs, out: out, log: log, meta: meta, failFast: rpc == "SynthesizeText", usage: usage}
	st.lastSent.Store(time.Now().UnixNano())
	ctx, activity, cancel := s.streamContext(ctx, func() bool {
		// Busy means a turn is in progress and reaching the caller: a
		// caller that stops reading is idle however many turns wait.
		recent := time.Since(time.Unix(0, st.lastSent.Load())) < s.cfg.CallerIdleTimeout
		st.mu.Lock()
		defer st.mu.Unlock()
		return recent && st.book != nil && !st.book.idle()
	})
	defer cancel()
	st.activity = activity
	err = st.run(ctx)
	meta = st.snapshotMeta()
	err = s.finish(ctx, rpc, err, meta, log)
	usage.end(log, meta.model, st.synthesizedAudio(), 0, err)
	return err
}

// synthesis is one Synthesize stream: its upstream session and its turns.
//
// Locks, always taken in this order: upMu serializes everything sent
// upstream with session replacement, so that a replayed turn reaches a new
// session before newer text; sendMu orders responses, held from computing a
// response (under mu) to sending it, so that the pumps' responses reach the
// caller in the order of the events that made them; mu guards the state.
// mu is never held during a Send: a caller that stops reading blocks the
// sender, never the state.
type synthesis struct {
	srv      *Server
	activity func() // records a message from the caller
	reqs     synthRequests
	out      synthResponses
	log      *zap.Logger
	// failFast ends the stream with the status of a failed turn instead of
	// sending turn_failed (SynthesizeText, which has one turn).
	failFast bool
	usage    *callerUsage

	cfg    *speechv1.SynthesisConfig // effective config
	ep     slngclient.Endpoint
	ttsCfg slngclient.TTSConfig

	upMu   sync.Mutex
	sendMu sync.Mutex

	mu    sync.Mutex
	meta  streamMeta
	sess  *slngclient.TTSSession
	lease *upstreamLease // sess's lease
	book  *turnBook
	// dirty is set when the current session saw anything but clean turns
	// (a clear, a cancel, a warning, text never flushed): it is then not
	// returned to the pool.
	dirty bool
	// quiet, when cancelled, stops the down pump without closing the
	// session, which goes back to the pool (see halfClose).
	quiet        context.Context
	stopQuiet    context.CancelFunc
	returnToPool bool
	// failures counts upstream failures since audio last arrived.
	failures int
	// delivered counts the audio bytes relayed to the caller, for metering.
	delivered int64
	// closed is set when the handler is done; a session dialled after that
	// is closed at once.
	closed bool
	// gone is set when the session ended between turns (some models close
	// after every audio_end; the gateway rolls over old sessions); the next
	// text dials a new one and hands it to the down pump through next.
	gone       bool
	next       chan *slngclient.TTSSession
	halfClosed bool
	draining   bool
	// recvCancel cancels the down pump's current Recv; the turn watchdog
	// uses it with errTurnTimeout.
	recvCancel context.CancelCauseFunc
	echoTimer  *time.Timer

	// lastSent is when a response last reached the caller's stream, and
	// progress when the turn being spoken last moved (Unix nanoseconds).
	lastSent  atomic.Int64
	progress  atomic.Int64
	turnTimer *time.Timer
}

var errUpstreamClosedBeforeSpeaking = &slngclient.UpstreamError{
	Kind:      slngclient.KindClose,
	CloseCode: 1000,
	Message:   "upstream kept closing the session before speaking the turn",
	Retryable: true,
}

// errTurnTimeout ends a turn that made no progress for Config.TurnTimeout.
var errTurnTimeout = errors.New("upstream made no progress on the turn within the turn timeout")

func (st *synthesis) run(ctx context.Context) error {
	first, err := st.reqs.Recv()
	if errors.Is(err, io.EOF) {
		return invalid("config", "the stream ended before a config message")
	}
	if err != nil {
		return err
	}
	cfg := first.GetConfig()
	if cfg == nil {
		return invalid("config", "the first message must be a config")
	}
	if err := st.configure(cfg); err != nil {
		return err
	}
	st.mu.Lock()
	st.meta.model = st.ep.Model
	st.book = newTurnBook(clockOf(st.cfg.Format))
	st.book.style = st.srv.endStyle(st.ep.Model)
	st.mu.Unlock()

	if st.ep.APIKey, err = st.srv.callerKey(ctx); err != nil {
		return err
	}
	st.mu.Lock()
	st.meta.callerKey = st.ep.APIKey != ""
	st.mu.Unlock()
	if err := st.usage.admit(ctx, st.srv, st.ep.Model); err != nil {
		return err
	}
	st.quiet, st.stopQuiet = context.WithCancel(context.Background())
	defer st.stopQuiet()
	sess, err := st.dial(ctx, nil)
	if err != nil {
		return err
	}
	var runErr error
	defer func() { st.release(runErr) }()
	st.turnTimer = time.AfterFunc(time.Hour, st.checkTurn)
	st.turnTimer.Stop()
	defer func() {
		st.turnTimer.Stop()
		st.mu.Lock()
		if st.echoTimer != nil {
			st.echoTimer.Stop()
		}
		st.mu.Unlock()
	}()

	started := &speechv1.SynthesisStarted{
		SessionId:         st.meta.sessionID,
		UpstreamSessionId: sess.ID(),
		UpstreamRequestId: sess.RequestID(),
		Config:            st.cfg,
		Limits:            st.srv.limits(),
		WarmSession:       st.lease.Warm,
		CallerId:          st.usage.caller,
	}
	if err := st.out.Send(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Started{Started: started}}); err != nil {
		runErr = err
		return err
	}

	runErr = st.srv.runPumps(ctx, st.pumpUp, st.pumpDown)
	if runErr == nil && !st.reusable() {
		st.mu.Lock()
		sess := st.sess
		st.mu.Unlock()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), st.srv.cfg.CloseTimeout)
		defer cancel()
		_ = sess.Close(closeCtx) // best effort: every turn is already delivered
	}
	return runErr
}

// reusable reports, once the pumps are done, whether the session may serve
// another stream: every turn finished cleanly, the caller half-closed, and
// SLNG left the socket open.
func (st *synthesis) reusable() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.returnToPool {
		return true
	}
	st.returnToPool = st.halfClosed && st.book.idle() && !st.book.awaitingEcho() &&
		!st.gone && !st.dirty && !st.draining && st.sess.Err() == nil
	return st.returnToPool
}

// release hands the session back to the pool when it is reusable and
// closes it otherwise.
func (st *synthesis) release(err error) {
	st.mu.Lock()
	st.closed = true
	st.srv.learnEndStyle(st.ep.Model, st.book.style)
	lease, reuse := st.lease, st.returnToPool && err == nil
	st.mu.Unlock()
	if !reuse {
		lease.TTS.CloseNow()
	}
	lease.release(err, reuse)
}

// configure validates cfg and fills in the effective configuration.
func (st *synthesis) configure(cfg *speechv1.SynthesisConfig) error {
	s := st.srv
	var v violations
	eff := proto.Clone(cfg).(*speechv1.SynthesisConfig)
	if eff.Model == "" {
		eff.Model = s.cfg.DefaultTTSModel
		if eff.Voice == "" {
			eff.Voice = s.cfg.DefaultVoice
		}
	}
	s.checkModel(&v, "config.model", eff.Model)
	checkFormat(&v, "config.format", eff.Format)
	if sp := eff.Speed; sp != 0 && (sp < minSpeed || sp > maxSpeed) {
		v.add("config.speed", "%g is outside %g-%g", sp, minSpeed, maxSpeed)
	}
	opts := eff.GetModelOptions().AsMap()
	checkOptions(&v, "config.model_options", opts, reservedTTSOptions)
	if err := v.err(); err != nil {
		return err
	}
	if eff.Format == nil {
		eff.Format = &speechv1.AudioFormat{}
	}
	if eff.Format.Encoding == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		eff.Format.Encoding = speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	}
	if eff.Format.SampleRateHz == 0 {
		eff.Format.SampleRateHz = defaultTTSSampleRate
	}
	st.cfg = eff
	st.ep = slngclient.Endpoint{Model: eff.Model}
	st.ttsCfg = slngclient.TTSConfig{
		Voice:      eff.Voice,
		Encoding:   encodingNames[eff.Format.Encoding],
		SampleRate: int(eff.Format.SampleRateHz),
		Language:   eff.Language,
		Speed:      eff.Speed,
		Extra:      opts,
	}
	return nil
}

// bytesPerSecond is the playback rate of uncompressed formats, 0 otherwise.
func bytesPerSecond(f *speechv1.AudioFormat) float64 {
	switch f.GetEncoding() {
	case speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16:
		return 2 * float64(f.GetSampleRateHz())
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		return float64(f.GetSampleRateHz())
	}
	return 0
}

// dial opens a new upstream session and makes it the current one. The
// session it replaces, if any, has ended; prevErr is why (nil for a normal
// close or a rollover), for the pool's breaker.
func (st *synthesis) dial(ctx context.Context, prevErr error) (*slngclient.TTSSession, error) {
	lease, err := st.srv.acquire(ctx, "tts", st.ep, func(ctx context.Context) (*slngpool.Lease, error) {
		return st.srv.upstream.AcquireTTS(ctx, st.ep, st.ttsCfg)
	})
	if err != nil {
		return nil, err
	}
	sess := lease.TTS
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		lease.release(nil, false)
		return nil, context.Canceled
	}
	if st.lease != nil {
		st.lease.TTS.CloseNow()
		st.lease.release(prevErr, false)
	}
	st.lease = lease
	st.dirty = false
	st.sess = sess
	st.meta.upstreamSessionID = sess.ID()
	st.meta.upstreamRequestID = sess.RequestID()
	return sess, nil
}

func (st *synthesis) snapshotMeta() streamMeta {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.meta
}

func (st *synthesis) session() *slngclient.TTSSession {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sess
}

// emit computes responses with f under mu and sends them in order. f must
// return responses from the turn book (or its own); they are sent after mu
// is released and before sendMu is, so nothing else reuses them meanwhile.
func (st *synthesis) emit(f func() []*speechv1.SynthesizeResponse) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	st.mu.Lock()
	out := f()
	st.mu.Unlock()
	return st.sendAll(out)
}

// sendAll sends responses; sendMu is held.
func (st *synthesis) sendAll(out []*speechv1.SynthesizeResponse) error {
	for _, resp := range out {
		if err := st.out.Send(resp); err != nil {
			return err
		}
		st.lastSent.Store(time.Now().UnixNano())
	}
	return nil
}

// pumpUp relays the caller's requests to SLNG.
func (st *synthesis) pumpUp(ctx context.Context) error {
	stopDrain := context.AfterFunc(st.srv.drainCtx, st.onDrain)
	defer stopDrain()
	for {
		req, err := st.reqs.Recv()
		if errors.Is(err, io.EOF) {
			return st.halfClose(ctx)
		}
		if err != nil {
			return err
		}
		st.activity()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		switch r := req.GetRequest().(type) {
		case *speechv1.SynthesizeRequest_Config:
			return invalid("config", "config may be sent only once, as the first message")
		case *speechv1.SynthesizeRequest_Text:
			if err := st.srv.checkText("text.text", r.Text.GetText()); err != nil {
				return err
			}
			if err := st.text(ctx, r.Text.GetText(), r.Text.GetFlush()); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Flush:
			if err := st.flush(ctx); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Clear:
			if err := st.clear(ctx, false); err != nil {
				return err
			}
		case *speechv1.SynthesizeRequest_Cancel:
			if err := st.clear(ctx, true); err != nil {
				return err
			}
		default:
			return invalid("request", "the request sets none of config, text, flush, clear, cancel")
		}
	}
}

// maxTurnText bounds the text of one turn, which the gateway keeps until the
// turn is spoken so that it can replay it on a new upstream session.
const maxTurnText = 1 << 20

// text sends text for the open turn, redialling first if the previous
// session ended, and flushes when asked.
func (st *synthesis) text(ctx context.Context, text string, flush bool) error {
	st.upMu.Lock()
	defer st.upMu.Unlock()
	st.mu.Lock()
	if st.draining {
		st.mu.Unlock()
		return errDraining
	}
	send, err := st.book.addText(text, maxTurnText)
	gone := st.gone
	st.mu.Unlock()
	if err != nil {
		return invalid("text.text", "a turn holds at most %d bytes of text: flush more often", maxTurnText)
	}
	if send {
		if err := st.usage.charge(ctx, text); err != nil {
			return err
		}
		if gone {
			if err := st.redialLocked(ctx); err != nil {
				return err
			}
		}
		if err := st.session().Text(ctx, text, false); err != nil && !writeRecoverable(err) {
			return err
		}
	}
	if flush {
		return st.flushLocked(ctx)
	}
	return nil
}

// redialLocked replaces a session that ended between turns and hands the
// new one to the down pump, which waits for it. st.upMu is held.
func (st *synthesis) redialLocked(ctx context.Context) error {
	sess, err := st.dial(slngpool.WithRollover(ctx), nil)
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.gone = false
	st.mu.Unlock()
	select {
	case st.next <- sess:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// resume replaces a session that ended while turns were waiting to be
// spoken: it dials again and replays them, flushed turns first, then the
// open turn's text. cause is why the old session ended, nil for a model's
// normal close after a turn (nothing to report then).
func (st *synthesis) resume(ctx context.Context, cause error) (*slngclient.TTSSession, error) {
	failedAt := time.Now()
	st.upMu.Lock()
	defer st.upMu.Unlock()
	prevID := st.snapshotMeta().upstreamSessionID
	sess, err := st.dial(slngpool.WithRollover(ctx), cause)
	if err != nil {
		if cause != nil {
			st.mu.Lock()
			err = st.turnFailedLocked(err)
			st.mu.Unlock()
		}
		return nil, err
	}
	st.mu.Lock()
	flushed, open := st.book.queued()
	st.mu.Unlock()
	for _, text := range flushed {
		if err := sess.Text(ctx, text, true); err != nil {
			return nil, err
		}
	}
	if open != "" {
		if err := sess.Text(ctx, open, false); err != nil {
			return nil, err
		}
	}
	if cause == nil {
		return sess, nil
	}
	reason := reconnectReason(cause)
	st.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", cause),
		zap.String("previous_upstream_session_id", prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Int("turns_replayed", len(flushed)))
	st.srv.metrics.reconnect("tts", reason)
	return sess, st.emit(func() []*speechv1.SynthesizeResponse {
		return []*speechv1.SynthesizeResponse{{Response: &speechv1.SynthesizeResponse_Reconnected{
			Reconnected: &speechv1.UpstreamReconnected{
				Reason:                    reason,
				PreviousUpstreamSessionId: prevID,
				UpstreamSessionId:         sess.ID(),
				Gap:                       durationpb.New(time.Since(failedAt)),
				WarmSession:               st.lease.Warm,
				TurnsReplayed:             uint32(len(flushed)),
			}}}}
	})
}

// turnFailedLocked is the error that ends the stream when its upstream
// failed for good: metadata names the turn in progress and how much of its
// audio the caller got, so that the caller can resume from there.
func (st *synthesis) turnFailedLocked(cause error) error {
	t := st.book.inProgress()
	if t == nil {
		return cause
	}
	return st.turnError(t, cause)
}

// turnError attaches to cause where turn t stood: how much of its audio
// the caller got.
func (st *synthesis) turnError(t *turn, cause error) error {
	d := st.book.delivery(t)
	return withMetadata(cause, map[string]string{
		"turn_id":            strconv.FormatUint(t.id, 10),
		"delivered_bytes":    strconv.FormatUint(d.GetAudioBytes(), 10),
		"delivered_audio_ms": strconv.FormatInt(d.GetAudioDuration().AsDuration().Milliseconds(), 10),
		"last_sequence":      strconv.FormatUint(d.GetLastSequence(), 10),
	})
}

// flush ends the open turn. A flush without text is ignored: SLNG treats a
// bare flush as a protocol violation.
func (st *synthesis) flush(ctx context.Context) error {
	st.upMu.Lock()
	defer st.upMu.Unlock()
	return st.flushLocked(ctx)
}

func (st *synthesis) flushLocked(ctx context.Context) error {
	st.mu.Lock()
	// Registered before the flush goes out, so that the down pump always
	// finds the turn its audio belongs to.
	t := st.book.flush(time.Now())
	first := t != nil && len(st.book.pending) == 1
	sess := st.sess
	st.mu.Unlock()
	if t == nil {
		return nil
	}
	if first {
		// The watchdog runs while turns are pending; it sleeps otherwise.
		st.progress.Store(time.Now().UnixNano())
		st.armTurnTimer(st.srv.cfg.TurnTimeout)
	}
	if err := sess.Flush(ctx); err != nil && !writeRecoverable(err) {
		return err
	}
	return nil
}

// armTurnTimer (re)starts the turn watchdog.
func (st *synthesis) armTurnTimer(d time.Duration) {
	if st.srv.cfg.TurnTimeout > 0 {
		st.turnTimer.Reset(d)
	}
}

// checkTurn is the turn watchdog: when the turn being spoken has made no
// progress for the turn timeout, it ends the down pump's Recv with
// errTurnTimeout. It never blocks.
func (st *synthesis) checkTurn() {
	st.mu.Lock()
	busy := !st.book.idle()
	cancel := st.recvCancel
	st.mu.Unlock()
	if !busy {
		return // flushLocked arms it again
	}
	if left := st.turnStale(); left > 0 {
		st.armTurnTimer(left)
		return
	}
	if cancel != nil {
		cancel(errTurnTimeout)
	}
}

// turnStale returns how long the turn in progress may still go without
// progress; zero or less means it has timed out. Progress is an event of
// the turn from upstream or a response reaching the caller, so a caller
// that reads slowly never makes a turn look stuck.
func (st *synthesis) turnStale() time.Duration {
	last := max(st.progress.Load(), st.lastSent.Load())
	return st.srv.cfg.TurnTimeout - time.Since(time.Unix(0, last))
}

// writeRecoverable reports a write that failed because SLNG had just closed the
// socket, normally (as models that close after audio_end do) or with a
// failure it may recover from. The text is already recorded in its turn,
// and the down pump, on seeing the end, replays it on a new session (see
// resume) or ends the stream, so the write itself is not an error.
//
// ErrSessionClosed counts too: the down pump closes a session it replaces
// (after a failed turn) while the up pump may be writing to it.
func writeRecoverable(err error) bool {
	if errors.Is(err, slngclient.ErrSessionClosed) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && ue.Retryable
}

// clear discards the open turn and every pending one. SLNG answers its
// `clear` with `cleared` after the last frame of the discarded turns, which
// is what lets the down pump drop them. A Cancel is acknowledged at once
// (barge-in wants no wait); a Clear when `cleared` arrives.
func (st *synthesis) clear(ctx context.Context, cancel bool) error {
	st.upMu.Lock()
	defer st.upMu.Unlock()
	var gone bool
	var sess *slngclient.TTSSession
	err := st.emit(func() []*speechv1.SynthesizeResponse {
		st.dirty = true
		gone, sess = st.gone, st.sess
		// With no session there is nothing to clear upstream: the
		// acknowledgement goes out now.
		return st.book.clear(cancel, !gone)
	})
	if err != nil || gone {
		return err
	}
	if err := sess.Clear(ctx); err != nil && !writeRecoverable(err) {
		return err
	}
	// A session that ends before `cleared` arrives: upstreamClosed
	// acknowledges the clear.
	return nil
}

// halfClose handles the caller's half-close: unflushed text is discarded,
// flushed turns complete, then the stream ends.
func (st *synthesis) halfClose(ctx context.Context) error {
	st.mu.Lock()
	st.halfClosed = true
	if st.book.openText() {
		// SLNG holds text that was never flushed: the session must not
		// serve another stream, whose first flush would speak it.
		st.dirty = true
	}
	st.book.open = nil
	idle := st.book.idle()
	gone := st.gone
	sess := st.sess
	st.mu.Unlock()
	if !idle {
		return nil // the down pump ends after the last turn
	}
	if !gone && st.reusable() {
		st.stopQuiet() // the down pump stops; the session stays open
		return nil
	}
	if gone {
		// The down pump waits for a new session: tell it there is none.
		select {
		case st.next <- nil:
		case <-ctx.Done():
		}
		return nil
	}
	closeCtx, cancel := context.WithTimeout(ctx, st.srv.cfg.CloseTimeout)
	defer cancel()
	_ = sess.Close(closeCtx) // the down pump sees the close and ends cleanly
	return nil
}

// onDrain runs when the server starts draining: an idle stream ends now, a
// busy one after its flushed turns.
func (st *synthesis) onDrain() {
	var idle bool
	var sess *slngclient.TTSSession
	// A failed send shows up in the down pump, which sends too.
	_ = st.emit(func() []*speechv1.SynthesizeResponse {
		st.draining = true
		idle, sess = st.book.idle(), st.sess
		return []*speechv1.SynthesizeResponse{{Response: &speechv1.SynthesizeResponse_Draining{
			Draining: &speechv1.ServerDraining{Grace: durationOrNil(st.srv.cfg.DrainGrace)}}}}
	})
	if idle && sess != nil {
		sess.CloseNow() // unblocks the down pump, which reports errDraining
	}
}

// pumpDown relays SLNG's events to the caller. Each pass of the loop reads
// with a context of its own, which the turn watchdog may cancel.
func (st *synthesis) pumpDown(ctx context.Context) error {
	sess := st.session()
	for {
		rctx, cancel := context.WithCancelCause(ctx)
		stop := context.AfterFunc(st.quiet, func() { cancel(nil) })
		st.mu.Lock()
		st.recvCancel = cancel
		st.mu.Unlock()
		next, err := st.relay(ctx, rctx, sess)
		stop()
		cancel(nil)
		if err != nil || next == nil {
			return err
		}
		sess = next
	}
}

// relay reads sess until the stream ends (nil, err) or the watchdog ends
// the read (the session to read next).
func (st *synthesis) relay(ctx, rctx context.Context, sess *slngclient.TTSSession) (*slngclient.TTSSession, error) {
	for {
		ev, err := sess.Recv(rctx)
		if err != nil && ctx.Err() == nil && st.quiet.Err() != nil {
			return nil, nil // the session goes back to the pool
		}
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), errEchoGrace) {
			// No second signal: the route sends one. Later streams of the
			// model need not wait (see Server.learnEndStyle).
			st.mu.Lock()
			st.book.style, st.book.echo = styleSingle, endNone
			st.mu.Unlock()
			return nil, nil
		}
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), errTurnTimeout) {
			if st.turnStale() > 0 {
				return sess, nil // progress since the watchdog fired
			}
			return st.replace(ctx, sess, errTurnTimeout)
		}
		if err != nil {
			next, err := st.upstreamEnded(ctx, err)
			if err != nil || next == nil {
				return nil, err
			}
			sess = next
			continue
		}
		if ev.Kind == slngclient.TTSWarning && ev.Err == nil {
			// Never a nil *UpstreamError inside an error interface.
			ev.Err = &slngclient.UpstreamError{Kind: slngclient.KindErrorFrame, Code: "unknown"}
		}
		done, replace, err := st.deliver(ev)
		if err != nil || done {
			return nil, err
		}
		if replace {
			return st.replace(ctx, sess, ev.Err)
		}
		if st.rolloverDue(sess) {
			return st.rollover(ctx, sess)
		}
	}
}

// deliver translates one upstream event. done reports the end of the
// stream; replace that an error frame arrived during a turn, so the session
// must be replaced.
func (st *synthesis) deliver(ev slngclient.TTSEvent) (done, replace bool, err error) {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	st.mu.Lock()
	out, res := st.book.event(ev)
	if res.warning {
		st.dirty = true
	}
	st.delivered += int64(res.audio)
	if res.audio > 0 || res.ended != nil {
		st.failures = 0
		st.progress.Store(time.Now().UnixNano())
	}
	var failErr error
	failed := res.failed != nil
	if failed && st.failFast {
		failErr = st.turnError(res.failed, ev.Err)
	}
	st.mu.Unlock()

	m := st.srv.metrics
	switch {
	case res.audio > 0:
		m.synthesizedBytes.Add(float64(res.audio))
	case res.warning && !failed:
		m.warnings.WithLabelValues("tts").Inc()
		if res.replace {
			st.log.Info("upstream error before the turn's audio; replacing the session", zap.Error(ev.Err))
		}
	case res.violation != "":
		m.protocolViolation("tts", res.violation)
	}
	if t := res.firstAudio; t != nil && !t.flushedAt.IsZero() {
		m.firstAudio.Observe(time.Since(t.flushedAt).Seconds())
	}
	if failed {
		m.turnFailed(turnOutcome(ev.Err).reason)
	}
	if failErr != nil {
		return true, false, failErr
	}
	err = st.sendAll(out)
	st.book.chunk.Data = nil // the session's buffer, valid until its next Recv
	if err != nil {
		return false, false, err
	}
	done, err = st.finished()
	return done, res.replace && !done, err
}

// finished reports whether the stream is complete after an event. A stream
// whose session may go back to the pool first waits, briefly, for the
// route's second end-of-turn signal (see awaitingEcho).
func (st *synthesis) finished() (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case !st.book.idle():
		return false, nil
	case st.halfClosed && st.book.awaitingEcho() && !st.dirty && !st.gone && !st.draining:
		if st.echoTimer == nil {
			cancel := st.recvCancel
			st.echoTimer = time.AfterFunc(echoGrace, func() { cancel(errEchoGrace) })
		}
		return false, nil
	case st.halfClosed:
		return true, nil
	case st.draining:
		return true, errDraining
	}
	return false, nil
}

// echoGrace bounds the wait for a route's second end-of-turn signal at the
// end of a stream. It is paid once per model, until the gateway has seen
// how the route ends turns.
const echoGrace = 250 * time.Millisecond

// errEchoGrace ends the wait for the second end-of-turn signal.
var errEchoGrace = errors.New("no second end-of-turn signal")

// replace ends a session that cannot finish the turn in progress: SLNG
// answered it with an error frame (cause; the turn already ended with
// turn_failed, and the same socket would keep answering so), or the turn
// made no progress for the turn timeout (cause is errTurnTimeout; the turn
// ends with turn_failed here). The session is closed, and the turns queued
// behind go to a new one.
func (st *synthesis) replace(ctx context.Context, sess *slngclient.TTSSession, cause error) (*slngclient.TTSSession, error) {
	var end *slngclient.UpstreamError
	if errors.Is(cause, errTurnTimeout) {
		var failErr error
		err := st.emit(func() []*speechv1.SynthesizeResponse {
			out, t := st.book.failInProgress(cause)
			if t != nil && st.failFast {
				failErr = st.turnError(t, cause)
				return nil
			}
			return out
		})
		st.srv.metrics.turnFailed(ReasonUpstreamTurnTimeout)
		st.log.Info("turn timed out", zap.Duration("turn_timeout", st.srv.cfg.TurnTimeout),
			zap.String("upstream_session_id", sess.ID()))
		if failErr != nil {
			return nil, failErr
		}
		if err != nil {
			return nil, err
		}
		// A stuck session counts as SLNG being unwell.
		end = &slngclient.UpstreamError{Kind: slngclient.KindTimeout, Message: "no progress on the turn", Retryable: true, Err: errTurnTimeout}
	} else {
		ue, _ := slngclient.AsUpstreamError(cause)
		if ue == nil {
			ue = &slngclient.UpstreamError{Kind: slngclient.KindErrorFrame, Code: "unknown"}
		}
		// The session is given up, not the stream: what it failed on is
		// already reported in turn_failed.
		cp := *ue
		cp.Retryable = true
		end = &cp
	}
	st.mu.Lock()
	st.dirty = true
	st.mu.Unlock()
	sess.CloseNow()
	return st.upstreamEnded(ctx, end)
}

// rolloverDue reports whether the session should be replaced at this turn
// boundary, before SLNG's maximum connection duration (30 minutes on some
// plans) ends it in the middle of a turn.
func (st *synthesis) rolloverDue(sess *slngclient.TTSSession) bool {
	age := st.srv.cfg.MaxUpstreamSessionAge
	if age <= 0 || time.Since(sess.Stats().ReadyAt) < age {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.book.idle() && !st.book.openText() && !st.halfClosed && !st.draining && !st.gone
}

// rollover closes an old session between turns; the next text dials a new
// one.
func (st *synthesis) rollover(ctx context.Context, sess *slngclient.TTSSession) (*slngclient.TTSSession, error) {
	st.upMu.Lock()
	st.mu.Lock()
	ok := st.book.idle() && !st.book.openText() && !st.halfClosed && !st.draining && !st.gone
	if ok {
		st.gone = true
		if st.next == nil {
			st.next = make(chan *slngclient.TTSSession)
		}
	}
	st.mu.Unlock()
	st.upMu.Unlock()
	if !ok {
		return sess, nil
	}
	closeCtx, cancel := context.WithTimeout(ctx, st.srv.cfg.CloseTimeout)
	_ = sess.Close(closeCtx)
	cancel()
	st.srv.metrics.reconnect("tts", "rollover")
	st.log.Info("upstream session rolled over between turns", zap.String("upstream_session_id", sess.ID()))
	return st.waitNext(ctx)
}

// waitNext waits, while gone, for the session the next text dials.
func (st *synthesis) waitNext(ctx context.Context) (*slngclient.TTSSession, error) {
	st.mu.Lock()
	next := st.next
	st.mu.Unlock()
	select {
	case sess := <-next:
		if sess == nil { // half-closed while waiting
			return nil, nil
		}
		return sess, nil
	case <-st.srv.drainCtx.Done():
		return nil, errDraining
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// upstreamEnded decides what the end of an upstream session means: the end
// of the stream, a failure, or (for models that close after every turn) a
// wait for the session of the next turn.
func (st *synthesis) upstreamEnded(ctx context.Context, recvErr error) (*slngclient.TTSSession, error) {
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	// io.EOF is SLNG's normal close; ErrSessionClosed our own close (a
	// half-close or a drain). A failure SLNG may recover from is treated like
	// a close, except that a turn must not have started reaching the caller.
	normal := recvErr == io.EOF
	closedNormally := normal || errors.Is(recvErr, slngclient.ErrSessionClosed)
	ue, isUpstream := slngclient.AsUpstreamError(recvErr)
	recoverable := normal || (isUpstream && ue.Retryable)

	type verdict int
	const (
		vDone verdict = iota
		vDrain
		vFail
		vResume
		vWait
	)
	var v verdict
	var failErr error
	// One critical section decides and records the outcome, so that a
	// half-close racing with the close cannot miss that the down pump waits.
	err := st.emit(func() []*speechv1.SynthesizeResponse {
		var out []*speechv1.SynthesizeResponse
		if closedNormally || recoverable {
			// A clean close after a turn's audio ends that turn (routes
			// that close after every turn); clears are acknowledged.
			var ended *turn
			out, ended = st.book.upstreamClosed(normal)
			if ended != nil {
				st.failures = 0
			}
		}
		idle := st.book.idle()
		openText := st.book.openText()
		if recoverable && (!idle || openText) {
			// A session that ends again before speaking, failing or closing
			// normally, counts: an upstream that keeps doing that must not be
			// redialled forever.
			st.failures++
		}
		switch {
		case idle && st.halfClosed:
			v = vDone
		case idle && st.draining:
			v = vDrain
		case !recoverable || st.failures > maxReconnects:
			cause := recvErr
			if normal {
				cause = errUpstreamClosedBeforeSpeaking
			}
			v, failErr = vFail, st.turnFailedLocked(cause)
		case !idle && st.book.pending[0].bytes > 0:
			// Part of the turn reached the caller: replaying it would
			// repeat audio.
			v, failErr = vFail, st.turnFailedLocked(recvErr)
		case !idle || openText:
			v = vResume
		default:
			// A normal close between turns: the next text dials again.
			if st.next == nil {
				st.next = make(chan *slngclient.TTSSession)
			}
			st.gone = true
			v = vWait
		}
		return out
	})
	if err != nil {
		return nil, err
	}
	switch v {
	case vDone:
		return nil, nil
	case vDrain:
		return nil, errDraining
	case vFail:
		return nil, failErr
	case vResume:
		// SLNG closed, or failed, with turns still to speak (models that
		// close after every audio_end drop the turns queued behind):
		// replay them on a new session.
		if normal {
			return st.resume(ctx, nil)
		}
		return st.resume(ctx, recvErr)
	}
	return st.waitNext(ctx)
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func warningResponse(ue *slngclient.UpstreamError) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{Warning: warningOf(ue)}}
}

// warningOf turns a non-fatal upstream error into a Warning, bounding the
// message so that an upstream cannot stuff the caller's stream.
func warningOf(ue *slngclient.UpstreamError) *speechv1.Warning {
	if ue == nil {
		return &speechv1.Warning{Code: "unknown"}
	}
	return &speechv1.Warning{Code: truncate(ue.Code, 64), Message: truncate(ue.Message, 256)}
}
