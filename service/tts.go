package service

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
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

// Synthesize implements TextToSpeechService.Synthesize.
func (s *Server) Synthesize(stream speechv1.TextToSpeechService_SynthesizeServer) error {
	return s.synthesize(stream.Context(), "Synthesize", stream, stream)
}

// SynthesizeText implements TextToSpeechService.SynthesizeText as a
// Synthesize stream of one flushed text followed by a half-close.
func (s *Server) SynthesizeText(req *speechv1.SynthesizeTextRequest, stream speechv1.TextToSpeechService_SynthesizeTextServer) error {
	if err := s.checkText("text", req.GetText()); err != nil {
		return s.finish(stream.Context(), "SynthesizeText", err, streamMeta{}, s.log)
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
	meta := streamMeta{sessionID: newSessionID()}
	log := s.log.With(zap.String("rpc", rpc), zap.String("session_id", meta.sessionID))
	release, err := s.admit(rpc)
	if err != nil {
		return s.finish(ctx, rpc, err, meta, log)
	}
	defer release()
	st := &synthesis{srv: s, reqs: reqs, out: out, log: log, meta: meta, chunk: &speechv1.AudioChunk{}}
	st.audioResp = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Audio{Audio: st.chunk}}
	st.lastSent.Store(time.Now().UnixNano())
	ctx, activity, cancel := s.streamContext(ctx, func() bool {
		// Busy means a turn is in progress and reaching the caller. A
		// caller that stops reading blocks a Send while holding st.mu, so
		// a held lock counts as busy only while sends still complete.
		recent := time.Since(time.Unix(0, st.lastSent.Load())) < s.cfg.CallerIdleTimeout
		if !st.mu.TryLock() {
			return recent
		}
		defer st.mu.Unlock()
		return !st.idleLocked() && recent
	})
	defer cancel()
	st.activity = activity
	err = st.run(ctx)
	return s.finish(ctx, rpc, err, st.snapshotMeta(), log)
}

// synthesis is one Synthesize stream: its upstream session and the state of
// its turns, shared by the two pumps under mu.
type synthesis struct {
	srv      *Server
	activity func() // records a message from the caller
	reqs     synthRequests
	out      synthResponses
	log      *zap.Logger

	cfg    *speechv1.SynthesisConfig // effective config
	ep     slngclient.Endpoint
	ttsCfg slngclient.TTSConfig
	clock  pcmClock // audio bytes to time; zero for compressed encodings

	// upMu serializes everything sent upstream with session replacement,
	// so that a replayed turn reaches a new session before newer text.
	upMu sync.Mutex

	mu    sync.Mutex
	meta  streamMeta
	sess  *slngclient.TTSSession
	lease *upstreamLease // sess's lease
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
	// lastSent is when a response last reached the caller's stream (Unix
	// nanoseconds); the idle watchdog reads it without the lock.
	lastSent atomic.Int64
	// heldSegment is a segment_start not yet sent (see deliver).
	heldSegment *speechv1.SynthesizeResponse
	// closed is set when the handler is done; a session dialled after that
	// is closed at once.
	closed bool
	// gone is set when SLNG ended the session between turns (some models
	// close after every audio_end); the next text dials a new one and hands
	// it to the down pump through next.
	gone bool
	next chan *slngclient.TTSSession

	// audioResp wraps chunk; both are reused for every chunk, because
	// Send has marshalled a message by the time it returns.
	audioResp *speechv1.SynthesizeResponse
	chunk     *speechv1.AudioChunk

	seq      uint64  // last AudioChunk.sequence sent
	lastTurn uint64  // last turn id assigned
	open     *turn   // the turn receiving text, not yet flushed
	pending  []*turn // flushed turns awaiting audio_end, oldest first
	// clears are Clear/Cancel requests sent upstream whose `cleared` has
	// not arrived; until it does, everything SLNG sends belongs to
	// discarded turns and is dropped.
	clears     []clearReq
	halfClosed bool
	draining   bool
}

// turn tracks one turn: text up to a flush and the audio that answers it.
type turn struct {
	id         uint64
	text       strings.Builder // kept to replay the turn on a new session
	flushedAt  time.Time
	firstAudio bool
	bytes      uint64
	lastSeq    uint64
}

type clearReq struct {
	cancel    bool // a Cancel (already acknowledged) rather than a Clear
	turnID    uint64
	delivered *speechv1.TurnDelivery
}

var errUpstreamClosedBeforeSpeaking = &slngclient.UpstreamError{
	Kind:      slngclient.KindClose,
	CloseCode: 1000,
	Message:   "upstream kept closing the session before speaking the turn",
	Retryable: true,
}

var errUpstreamClosedMidTurn = &slngclient.UpstreamError{
	Kind:      slngclient.KindClose,
	CloseCode: 1000,
	Message:   "upstream closed the session during a turn",
	Retryable: true,
}

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
	st.mu.Unlock()

	if st.ep.APIKey, err = st.srv.callerKey(ctx); err != nil {
		return err
	}
	st.quiet, st.stopQuiet = context.WithCancel(context.Background())
	defer st.stopQuiet()
	sess, err := st.dial(ctx)
	if err != nil {
		return err
	}
	var runErr error
	defer func() { st.release(runErr) }()

	started := &speechv1.SynthesisStarted{
		SessionId:         st.meta.sessionID,
		UpstreamSessionId: sess.ID(),
		UpstreamRequestId: sess.RequestID(),
		Config:            st.cfg,
		Limits:            st.srv.limits(),
		WarmSession:       st.lease.Warm,
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
	st.returnToPool = st.halfClosed && st.idleLocked() && !st.gone && !st.dirty && !st.draining && st.sess.Err() == nil
	return st.returnToPool
}

// release hands the session back to the pool when it is reusable and
// closes it otherwise.
func (st *synthesis) release(err error) {
	st.mu.Lock()
	st.closed = true
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
	st.clock = clockOf(eff.Format)
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

// dial opens a new upstream session and makes it the current one.
func (st *synthesis) dial(ctx context.Context) (*slngclient.TTSSession, error) {
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
		// The session this replaces was closed by SLNG, normally.
		st.lease.release(nil, false)
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

// text sends text for the open turn, redialling first if SLNG ended the
// previous session, and flushes when asked.
func (st *synthesis) text(ctx context.Context, text string, flush bool) error {
	st.upMu.Lock()
	defer st.upMu.Unlock()
	st.mu.Lock()
	if st.draining {
		st.mu.Unlock()
		return errDraining
	}
	if st.open == nil {
		st.lastTurn++
		st.open = &turn{id: st.lastTurn}
	}
	if st.open.text.Len()+len(text) > maxTurnText {
		st.mu.Unlock()
		return invalid("text.text", "a turn holds at most %d bytes of text: flush more often", maxTurnText)
	}
	st.open.text.WriteString(text)
	gone := st.gone
	st.mu.Unlock()

	if gone {
		if err := st.redialLocked(ctx); err != nil {
			return err
		}
	}
	if err := st.session().Text(ctx, text, false); err != nil && !writeRecoverable(err) {
		return err
	}
	if flush {
		return st.flushLocked(ctx)
	}
	return nil
}

// redialLocked replaces a session SLNG ended between turns and hands the
// new one to the down pump, which waits for it. st.upMu is held.
func (st *synthesis) redialLocked(ctx context.Context) error {
	sess, err := st.dial(ctx)
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

// resume replaces a session SLNG closed while turns were waiting to be
// spoken: it dials again and replays them, flushed turns first, then the
// open turn's text.
func (st *synthesis) resume(ctx context.Context, cause error) (*slngclient.TTSSession, error) {
	failedAt := time.Now()
	st.upMu.Lock()
	defer st.upMu.Unlock()
	prevID := st.snapshotMeta().upstreamSessionID
	sess, err := st.dial(ctx)
	if err != nil {
		if cause != nil {
			st.mu.Lock()
			err = st.turnFailedLocked(err)
			st.mu.Unlock()
		}
		return nil, err
	}
	st.mu.Lock()
	st.heldSegment = nil // its segment never spoke
	var flushed []string
	for _, t := range st.pending {
		flushed = append(flushed, t.text.String())
	}
	var open string
	if st.open != nil {
		open = st.open.text.String()
	}
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
		return sess, nil // the model's own close after a turn: nothing to report
	}
	reason := reconnectReason(cause)
	st.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", cause),
		zap.String("previous_upstream_session_id", prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Int("turns_replayed", len(flushed)))
	st.srv.metrics.reconnect("tts", reason)
	st.mu.Lock()
	defer st.mu.Unlock()
	return sess, st.sendLocked(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Reconnected{
		Reconnected: &speechv1.UpstreamReconnected{
			Reason:                    reason,
			PreviousUpstreamSessionId: prevID,
			UpstreamSessionId:         sess.ID(),
			Gap:                       durationpb.New(time.Since(failedAt)),
			WarmSession:               st.lease.Warm,
			TurnsReplayed:             uint32(len(flushed)),
		}}})
}

// inProgressLocked is the turn being spoken or, failing that, the one
// receiving text; nil when there is neither.
func (st *synthesis) inProgressLocked() *turn {
	if len(st.pending) > 0 {
		return st.pending[0]
	}
	return st.open
}

// turnFailedLocked is the error that ends the stream when its upstream
// failed for good: metadata names the turn in progress and how much of its
// audio the caller got, so that the caller can resume from there.
func (st *synthesis) turnFailedLocked(cause error) error {
	t := st.inProgressLocked()
	if t == nil {
		return cause
	}
	d := st.delivery(t)
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
	t := st.open
	if t == nil {
		st.mu.Unlock()
		return nil
	}
	st.open = nil
	t.flushedAt = time.Now()
	// Registered before the flush goes out, so that the down pump always
	// finds the turn its audio belongs to.
	st.pending = append(st.pending, t)
	sess := st.sess
	st.mu.Unlock()
	if err := sess.Flush(ctx); err != nil && !writeRecoverable(err) {
		return err
	}
	return nil
}

// writeRecoverable reports a write that failed because SLNG had just closed the
// socket, normally (as models that close after audio_end do) or with a
// failure it may recover from. The text is already recorded in its turn,
// and the down pump, on seeing the end, replays it on a new session (see
// resume) or ends the stream, so the write itself is not an error.
func writeRecoverable(err error) bool {
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
	st.mu.Lock()
	req := clearReq{cancel: cancel}
	if cur := st.inProgressLocked(); cur != nil {
		req.turnID = cur.id
		req.delivered = st.delivery(cur)
	} else {
		req.delivered = &speechv1.TurnDelivery{}
	}
	st.pending = nil
	st.open = nil
	st.dirty = true
	gone := st.gone
	if !gone {
		st.clears = append(st.clears, req)
	}
	var sendErr error
	if cancel || gone {
		// With no session there is nothing to clear upstream: acknowledge
		// now.
		sendErr = st.sendLocked(ackFor(req))
	}
	sess := st.sess
	st.mu.Unlock()
	if sendErr != nil {
		return sendErr
	}
	if gone {
		return nil
	}
	return sess.Clear(ctx)
}

func ackFor(req clearReq) *speechv1.SynthesizeResponse {
	if req.cancel {
		return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cancelled{
			Cancelled: &speechv1.Cancelled{TurnId: req.turnID, Delivered: req.delivered}}}
	}
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cleared{
		Cleared: &speechv1.Cleared{TurnId: req.turnID, Delivered: req.delivered}}}
}

// halfClose handles the caller's half-close: unflushed text is discarded,
// flushed turns complete, then the stream ends.
func (st *synthesis) halfClose(ctx context.Context) error {
	st.mu.Lock()
	st.halfClosed = true
	if st.open != nil && st.open.text.Len() > 0 {
		// SLNG holds text that was never flushed: the session must not
		// serve another stream, whose first flush would speak it.
		st.dirty = true
	}
	st.open = nil
	idle := st.idleLocked()
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
	st.mu.Lock()
	st.draining = true
	// A failed send shows up in the down pump, which sends too.
	_ = st.sendLocked(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Draining{
		Draining: &speechv1.ServerDraining{Grace: durationOrNil(st.srv.cfg.DrainGrace)}}})
	idle := st.idleLocked()
	sess := st.sess
	st.mu.Unlock()
	if idle && sess != nil {
		sess.CloseNow() // unblocks the down pump, which reports errDraining
	}
}

func (st *synthesis) idleLocked() bool {
	return len(st.pending) == 0 && len(st.clears) == 0
}

// pumpDown relays SLNG's events to the caller.
func (st *synthesis) pumpDown(ctx context.Context) error {
	sess := st.session()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(st.quiet, cancel)()
	for {
		ev, err := sess.Recv(rctx)
		if err != nil && ctx.Err() == nil && st.quiet.Err() != nil {
			return nil // the session goes back to the pool
		}
		if err != nil {
			next, err := st.upstreamEnded(ctx, err)
			if err != nil || next == nil {
				return err
			}
			sess = next
			continue
		}
		done, err := st.deliver(ev)
		if err != nil || done {
			return err
		}
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
	// One critical section decides and records the outcome, so that a
	// half-close racing with the close cannot miss that the down pump waits.
	st.mu.Lock()
	if closedNormally || recoverable {
		// A closed socket will not acknowledge clears: do it here.
		for _, req := range st.clears {
			if !req.cancel {
				if err := st.sendLocked(ackFor(req)); err != nil {
					st.mu.Unlock()
					return nil, err
				}
			}
		}
		st.clears = nil
	}
	idle := st.idleLocked()
	openText := st.open != nil && st.open.text.Len() > 0
	if recoverable && (!idle || openText) {
		// A session that ends again before speaking, failing or closing
		// normally, counts: an upstream that keeps doing that must not be
		// redialled forever.
		st.failures++
	}
	switch {
	case idle && st.halfClosed:
		st.mu.Unlock()
		return nil, nil
	case idle && st.draining:
		st.mu.Unlock()
		return nil, errDraining
	case !recoverable || st.failures > maxReconnects:
		cause := recvErr
		if normal {
			cause = errUpstreamClosedBeforeSpeaking
		}
		err := st.turnFailedLocked(cause)
		st.mu.Unlock()
		return nil, err
	case !idle && (st.pending[0].bytes > 0):
		// Part of the turn reached the caller: replaying it would repeat
		// audio.
		cause := recvErr
		if normal {
			cause = errUpstreamClosedMidTurn
		}
		err := st.turnFailedLocked(cause)
		st.mu.Unlock()
		return nil, err
	case !idle || openText:
		// SLNG closed, or failed, with turns still to speak (models that
		// close after every audio_end drop the turns queued behind):
		// replay them on a new session.
		st.mu.Unlock()
		if normal {
			return st.resume(ctx, nil)
		}
		return st.resume(ctx, recvErr)
	}
	// A normal close between turns: the next text dials again.
	if st.next == nil {
		st.next = make(chan *slngclient.TTSSession)
	}
	st.gone = true
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

// deliver translates one upstream event; done reports the end of the stream.
func (st *synthesis) deliver(ev slngclient.TTSEvent) (done bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if ev.Kind == slngclient.TTSWarning {
		st.srv.metrics.warnings.WithLabelValues("tts").Inc()
		st.dirty = true
		return false, st.sendLocked(warningResponse(ev.Err))
	}
	if ev.Kind == slngclient.TTSCleared {
		if len(st.clears) == 0 {
			return false, nil // not ours to acknowledge
		}
		req := st.clears[0]
		st.clears = st.clears[1:]
		if !req.cancel {
			if err := st.sendLocked(ackFor(req)); err != nil {
				return false, err
			}
		}
		return st.finishedLocked()
	}
	if len(st.clears) > 0 {
		return false, nil // a frame of a discarded turn
	}
	t := st.currentLocked()
	var resp *speechv1.SynthesizeResponse
	switch ev.Kind {
	case slngclient.TTSAudio:
		if len(ev.Audio) == 0 {
			return false, nil
		}
		st.seq++
		st.failures = 0
		t.bytes += uint64(len(ev.Audio))
		t.lastSeq = st.seq
		if !t.firstAudio {
			t.firstAudio = true
			if !t.flushedAt.IsZero() {
				st.srv.metrics.firstAudio.Observe(time.Since(t.flushedAt).Seconds())
			}
		}
		st.srv.metrics.synthesizedBytes.Add(float64(len(ev.Audio)))
		st.chunk.Data, st.chunk.Sequence, st.chunk.TurnId = ev.Audio, st.seq, t.id
		resp = st.audioResp
	case slngclient.TTSSegmentStart:
		// Held until the segment's first audio (or its end), so that a turn
		// replayed on a new session does not show the caller a segment
		// that never spoke.
		st.heldSegment = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_SegmentStart{
			SegmentStart: &speechv1.SegmentStart{SegmentId: ev.SegmentID, TurnId: t.id}}}
		return false, nil
	case slngclient.TTSSegmentEnd:
		resp = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_SegmentEnd{
			SegmentEnd: &speechv1.SegmentEnd{SegmentId: ev.SegmentID, TurnId: t.id}}}
	case slngclient.TTSFlushed:
		resp = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Flushed{
			Flushed: &speechv1.Flushed{TurnId: t.id}}}
	case slngclient.TTSAudioEnd:
		resp = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_AudioEnd{
			AudioEnd: &speechv1.AudioEnd{TurnId: t.id, Duration: durationOrNil(ev.Duration), Delivered: st.delivery(t)}}}
		if len(st.pending) > 0 && st.pending[0] == t {
			st.pending = st.pending[1:]
		} else if st.open == t {
			// The model ended a turn the caller had not flushed.
			st.open = nil
		}
	default:
		return false, nil
	}
	if held := st.heldSegment; held != nil {
		st.heldSegment = nil
		if err := st.sendLocked(held); err != nil {
			return false, err
		}
	}
	err = st.sendLocked(resp)
	st.chunk.Data = nil // the session's buffer, valid until its next Recv
	if err != nil {
		return false, err
	}
	return st.finishedLocked()
}

// finishedLocked reports whether the stream is complete after an event.
func (st *synthesis) finishedLocked() (bool, error) {
	if !st.idleLocked() {
		return false, nil
	}
	if st.halfClosed {
		return true, nil
	}
	if st.draining {
		return true, errDraining
	}
	return false, nil
}

// currentLocked is the turn SLNG's next frame belongs to: the oldest flushed
// one, else the open one (models may speak before the flush).
func (st *synthesis) currentLocked() *turn {
	if len(st.pending) > 0 {
		return st.pending[0]
	}
	if st.open == nil {
		// Frames with no turn of the caller's (e.g. stray audio): account
		// them to a fresh turn rather than drop them silently.
		st.lastTurn++
		st.open = &turn{id: st.lastTurn}
	}
	return st.open
}

func (st *synthesis) delivery(t *turn) *speechv1.TurnDelivery {
	d := &speechv1.TurnDelivery{AudioBytes: t.bytes, LastSequence: t.lastSeq}
	if st.clock.ok() {
		d.AudioDuration = durationpb.New(st.clock.duration(int64(t.bytes)))
	}
	return d
}

// sendLocked sends one response; st.mu serializes sends from both pumps.
func (st *synthesis) sendLocked(resp *speechv1.SynthesizeResponse) error {
	if err := st.out.Send(resp); err != nil {
		return err
	}
	st.lastSent.Store(time.Now().UnixNano())
	return nil
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
