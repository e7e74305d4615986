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

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
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
	defer usage.end(log, "", 0, 0, errHandlerAborted) // only if the handler panics
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
// Three goroutines: the up pump reads the caller's requests; the owner
// (own) is the only one that writes to, dials and replaces the upstream
// session, in the order the pumps ask, so that a replayed turn reaches a
// new session before newer text; the down pump relays SLNG's events.
//
// Locks, always taken in this order: sendMu orders responses, held from computing a
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

	ops    chan ttsOp // to the owner
	sendMu sync.Mutex

	mu    sync.Mutex
	meta  streamMeta
	sess  TTSSession
	lease *upstreamLease[TTSSession] // sess's lease
	book  *turnBook
	state synthState
	// quiet, when cancelled, stops the down pump without closing the
	// session, which goes back to the pool (see halfClose).
	quiet     context.Context
	stopQuiet context.CancelFunc
	// failures counts upstream failures since audio last arrived.
	failures int
	// delivered counts the audio bytes relayed to the caller, for metering.
	delivered int64
	// next hands the down pump, waiting while the session is gone, the
	// session the next text dials (nil: the stream ends).
	next chan TTSSession
	// fastOut is what deliverFast left for the down pump.
	fastOut delivered
	// recvCancel cancels the down pump's current Recv; the turn watchdog
	// uses it with errTurnTimeout, deliverFast with errFastOutcome.
	recvCancel context.CancelCauseFunc
	echoTimer  *time.Timer

	// lastSent is when a response last reached the caller's stream, and
	// progress when the first turn of a run was flushed (Unix nanoseconds).
	lastSent  atomic.Int64
	progress  atomic.Int64
	turnTimer *time.Timer
}

var errUpstreamClosedBeforeSpeaking = slngclient.NewClosedEarly("upstream kept closing the session before speaking the turn")

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

	st.ops = make(chan ttsOp, ttsOpQueue)
	runErr = st.srv.runPumps(ctx, pumps{up: st.pumpUp, down: st.pumpDown, own: st.own,
		abort: func(err error) {
			if err != nil {
				st.session().CloseNow() // a write in progress ends
			}
		}})
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
	if st.state.upstream == upKept {
		return true
	}
	if st.state.keepable() && st.book.idle() && !st.book.awaitingEcho() && st.sess.Err() == nil {
		st.state.upstream = upKept
	}
	return st.state.upstream == upKept
}

// release hands the session back to the pool when it is reusable and
// closes it otherwise.
func (st *synthesis) release(err error) {
	st.mu.Lock()
	st.state.ending |= handlerDone
	st.srv.learnEndStyle(st.ep.Model, st.book.style)
	lease, reuse := st.lease, st.state.upstream == upKept && err == nil
	st.mu.Unlock()
	if !reuse {
		lease.Session.CloseNow()
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
	eff.Format = formatWithDefaults(eff.Format, defaultTTSSampleRate)
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

func (st *synthesis) snapshotMeta() streamMeta {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.meta
}

func (st *synthesis) session() TTSSession {
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

// finished reports whether the stream is complete after an event. A stream
// whose session may go back to the pool first waits, briefly, for the
// route's second end-of-turn signal (see awaitingEcho).
func (st *synthesis) finished() (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case !st.book.idle():
		return false, nil
	case st.state.keepable() && st.book.awaitingEcho():
		if st.echoTimer == nil {
			cancel := st.recvCancel
			st.echoTimer = time.AfterFunc(echoGrace, func() { cancel(errEchoGrace) })
		}
		return false, nil
	case st.state.has(halfClosed):
		return true, nil
	case st.state.has(draining):
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

func warningResponse(ue *slngclient.UpstreamError) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{Warning: warningOf(ue)}}
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
