package service

import (
	"context"
	"errors"
	"fmt"
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

var (
	errFinalsTimeout = &slngclient.UpstreamError{
		Kind:      slngclient.KindTimeout,
		Message:   "upstream did not deliver the last transcripts in time",
		Retryable: true,
	}
	errUpstreamClosedEarly = &slngclient.UpstreamError{
		Kind:      slngclient.KindClose,
		CloseCode: 1000,
		Message:   "upstream closed the session before the audio ended",
		Retryable: true,
	}
)

// Transcribe implements SpeechToTextService.Transcribe.
func (s *Server) Transcribe(stream speechv1.SpeechToTextService_TranscribeServer) error {
	const rpc = "Transcribe"
	ctx := stream.Context()
	id, log := s.streamLogger(ctx, speechv1.SpeechToTextService_ServiceDesc.ServiceName, rpc)
	ctx, log, usage := s.callerContext(ctx, log, rpc)
	meta := streamMeta{sessionID: id, caller: usage.caller}
	release, err := s.admit(rpc)
	if err != nil {
		return s.finish(ctx, rpc, err, meta, log)
	}
	defer release()
	tr := &transcription{srv: s, stream: stream, log: log, meta: meta, downDone: make(chan struct{}), usage: usage}
	// After the half-close, the wait for the last finals is not idleness
	// (FinalsTimeout bounds it).
	ctx, activity, cancel := s.streamContext(ctx, tr.isClosing)
	defer cancel()
	tr.activity = activity
	err = tr.run(ctx)
	meta = tr.snapshotMeta()
	err = s.finish(ctx, rpc, err, meta, log)
	usage.end(log, meta.model, 0, tr.transcribedAudio(), err)
	return err
}

// transcription is one Transcribe stream. Its upstream session may be
// replaced while it runs (see reconnect); upMu orders everything sent
// upstream with those replacements.
type transcription struct {
	srv      *Server
	activity func() // records a message from the caller
	stream   speechv1.SpeechToTextService_TranscribeServer
	log      *zap.Logger
	usage    *callerUsage

	cfg    *speechv1.RecognitionConfig // effective config
	ep     slngclient.Endpoint
	sttCfg slngclient.STTConfig
	clock  pcmClock

	downDone chan struct{}
	sendMu   sync.Mutex // serializes stream.Send

	upMu   sync.Mutex
	replay replayBuffer // under upMu
	// sent is the stream's audio sent upstream so far, in bytes; offsets
	// of transcripts without timing are estimated from it.
	sent atomic.Int64

	mu              sync.Mutex
	meta            streamMeta
	lease           *upstreamLease
	sess            *slngclient.STTSession
	base            time.Duration // stream time of the current session's first audio byte
	closing         bool          // the upstream has been told no more audio comes
	draining        bool
	finalizeAt      time.Time
	finalizePending bool          // a finalize awaits its final
	prevFinalEnd    time.Duration // stream time
	failures        int           // reconnects since the last final with text
}

// maxReconnects bounds reconnects that bring no final transcript: a
// session that fails again at once will not be saved by another.
const maxReconnects = 3

func (tr *transcription) run(ctx context.Context) (runErr error) {
	first, err := tr.stream.Recv()
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
	if tr.sttCfg, err = tr.configure(cfg); err != nil {
		return err
	}
	tr.meta.model = tr.cfg.Model
	if tr.ep.APIKey, err = tr.srv.callerKey(ctx); err != nil {
		return err
	}
	tr.meta.callerKey = tr.ep.APIKey != ""
	if err := tr.usage.admit(ctx, tr.srv, tr.ep.Model); err != nil {
		return err
	}
	if tr.clock = clockOf(tr.cfg.Format); tr.clock.ok() {
		tr.replay.max = tr.srv.cfg.TranscribeReplayBytes
	}

	lease, err := tr.acquire(ctx)
	if err != nil {
		return err
	}
	tr.lease, tr.sess = lease, lease.STT
	defer func() {
		// A used STT session is never reused: the half-close ends it.
		tr.mu.Lock()
		lease := tr.lease
		tr.mu.Unlock()
		lease.STT.CloseNow()
		lease.release(runErr, false)
	}()
	tr.meta.upstreamSessionID = lease.STT.ID()
	tr.meta.upstreamRequestID = lease.STT.RequestID()

	started := &speechv1.RecognitionStarted{
		SessionId:         tr.meta.sessionID,
		UpstreamSessionId: lease.STT.ID(),
		UpstreamRequestId: lease.STT.RequestID(),
		Config:            tr.cfg,
		Limits:            tr.srv.limits(),
		WarmSession:       lease.Warm,
		CallerId:          tr.usage.caller,
	}
	if err := tr.send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Started{Started: started}}); err != nil {
		return err
	}
	return tr.srv.runPumps(ctx, tr.pumpUp, tr.pumpDown)
}

func (tr *transcription) acquire(ctx context.Context) (*upstreamLease, error) {
	return tr.srv.acquire(ctx, "stt", tr.ep, func(ctx context.Context) (*slngpool.Lease, error) {
		return tr.srv.upstream.AcquireSTT(ctx, tr.ep, tr.sttCfg)
	})
}

func (tr *transcription) send(resp *speechv1.TranscribeResponse) error {
	tr.sendMu.Lock()
	defer tr.sendMu.Unlock()
	return tr.stream.Send(resp)
}

func (tr *transcription) session() *slngclient.STTSession {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.sess
}

func (tr *transcription) snapshotMeta() streamMeta {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.meta
}

// configure validates cfg, fills in the effective configuration and the
// endpoint, and returns SLNG's init config.
func (tr *transcription) configure(cfg *speechv1.RecognitionConfig) (slngclient.STTConfig, error) {
	s := tr.srv
	var v violations
	eff := proto.Clone(cfg).(*speechv1.RecognitionConfig)
	if eff.Model == "" {
		eff.Model = s.cfg.DefaultSTTModel
	}
	s.checkModel(&v, "config.model", eff.Model)
	checkFormat(&v, "config.format", eff.Format)
	if eff.MinSpeakers < 0 {
		v.add("config.min_speakers", "must not be negative")
	}
	if eff.MaxSpeakers < 0 || (eff.MaxSpeakers > 0 && eff.MaxSpeakers < eff.MinSpeakers) {
		v.add("config.max_speakers", "must be 0 or at least min_speakers (%d)", eff.MinSpeakers)
	}
	opts := eff.GetModelOptions().AsMap()
	checkOptions(&v, "config.model_options", opts, reservedSTTOptions)
	if err := v.err(); err != nil {
		return slngclient.STTConfig{}, err
	}
	if eff.Format == nil {
		eff.Format = &speechv1.AudioFormat{}
	}
	if eff.Format.Encoding == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		eff.Format.Encoding = speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	}
	if eff.Format.SampleRateHz == 0 {
		eff.Format.SampleRateHz = defaultSTTSampleRate
	}
	tr.cfg = eff
	tr.ep = slngclient.Endpoint{Model: eff.Model}
	return slngclient.STTConfig{
		Language:             eff.Language,
		Encoding:             encodingNames[eff.Format.Encoding],
		SampleRate:           int(eff.Format.SampleRateHz),
		EnablePartials:       eff.EnablePartials,
		EnableVAD:            eff.EnableVad,
		EnableDiarization:    eff.EnableDiarization,
		MinSpeakers:          int(eff.MinSpeakers),
		MaxSpeakers:          int(eff.MaxSpeakers),
		EnableWordTimestamps: eff.EnableWordTimestamps,
		Extra:                opts,
	}, nil
}

// pumpUp relays the caller's audio and finalize requests to SLNG. Audio is
// kept for replay first; a write that fails because the session died is
// not an error here: the down pump sees the end and reconnects, replaying
// that audio.
func (tr *transcription) pumpUp(ctx context.Context) error {
	stopDrain := context.AfterFunc(tr.srv.drainCtx, func() { tr.onDrain(ctx) })
	defer stopDrain()
	// Audio goes up without a cancellable context: with one, coder/websocket
	// registers a context.AfterFunc for every frame written. A write blocked
	// on a full socket still ends: the session is closed when the stream
	// ends (release) and when its pings go unanswered (liveness).
	audioCtx := context.WithoutCancel(ctx)
	for {
		req, err := tr.stream.Recv()
		if errors.Is(err, io.EOF) {
			tr.endAudio(ctx, false)
			return tr.awaitFinals(ctx)
		}
		if err != nil {
			return err
		}
		tr.activity()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		switch r := req.GetRequest().(type) {
		case *speechv1.TranscribeRequest_Config:
			return invalid("config", "config may be sent only once, as the first message")
		case *speechv1.TranscribeRequest_Audio:
			if err := tr.srv.checkAudio(r.Audio); err != nil {
				return err
			}
			tr.upMu.Lock()
			tr.mu.Lock()
			closing, sess := tr.closing, tr.sess
			tr.mu.Unlock()
			if closing {
				tr.upMu.Unlock()
				continue // draining: the upstream takes no more audio
			}
			tr.replay.add(r.Audio)
			tr.sent.Add(int64(len(r.Audio)))
			err := sess.SendAudio(audioCtx, r.Audio)
			tr.upMu.Unlock()
			if err != nil && !tr.recoverable(err) {
				return err
			}
			tr.srv.metrics.recognizedBytes.Add(float64(len(r.Audio)))
		case *speechv1.TranscribeRequest_Finalize:
			if tr.isClosing() {
				continue
			}
			tr.mu.Lock()
			tr.finalizeAt = time.Now()
			tr.finalizePending = true
			tr.mu.Unlock()
			tr.upMu.Lock()
			err := tr.session().Finalize(ctx)
			tr.upMu.Unlock()
			if err != nil && !tr.recoverable(err) {
				return err
			}
		default:
			return invalid("request", "the request sets none of config, audio, finalize")
		}
	}
}

func (tr *transcription) isClosing() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.closing
}

// onDrain tells the caller that the server is shutting down, then ends the
// audio so that SLNG finalizes what it heard.
func (tr *transcription) onDrain(ctx context.Context) {
	_ = tr.send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Draining{
		Draining: &speechv1.ServerDraining{Grace: durationOrNil(tr.srv.cfg.DrainGrace)}}})
	tr.endAudio(ctx, true)
}

// endAudio tells SLNG that no more audio comes; SLNG then sends its last
// finals and closes. Called on the caller's half-close and on drain.
func (tr *transcription) endAudio(ctx context.Context, drain bool) {
	tr.mu.Lock()
	if drain {
		tr.draining = true
	}
	already := tr.closing
	tr.closing = true
	if tr.finalizeAt.IsZero() {
		tr.finalizeAt = time.Now()
	}
	tr.mu.Unlock()
	if !already {
		// An error here shows up as the down pump's Recv error.
		tr.upMu.Lock()
		_ = tr.session().CloseSend(ctx)
		tr.upMu.Unlock()
	}
}

// awaitFinals bounds the wait for SLNG's last finals after a half-close.
func (tr *transcription) awaitFinals(ctx context.Context) error {
	timer := time.NewTimer(tr.srv.cfg.FinalsTimeout)
	defer timer.Stop()
	select {
	case <-tr.downDone:
		return nil
	case <-timer.C:
		return errFinalsTimeout
	case <-ctx.Done():
		return nil // the down pump reports why
	}
}

// pumpDown relays SLNG's transcripts to the caller, and replaces the
// upstream session when it fails or grows old.
func (tr *transcription) pumpDown(ctx context.Context) error {
	defer close(tr.downDone)
	var last *slngclient.STTSession
	heard := false // the current session sent a transcript
	for {
		sess := tr.session()
		if sess != last {
			last, heard = sess, false
		}
		ev, err := sess.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			tr.mu.Lock()
			closing, draining := tr.closing, tr.draining
			tr.mu.Unlock()
			switch {
			case errors.Is(err, io.EOF) && draining:
				return errDraining
			case errors.Is(err, io.EOF) && closing:
				return tr.warnUntranscribed(heard)
			case errors.Is(err, io.EOF):
				err = errUpstreamClosedEarly
			}
			if err := tr.reconnect(ctx, err); err != nil {
				return err
			}
			continue
		}
		if ev.Kind == slngclient.STTPartial || ev.Kind == slngclient.STTFinal {
			heard = true
		}
		resp := tr.translate(ev)
		if resp == nil {
			continue
		}
		if err := tr.send(resp); err != nil {
			return err
		}
		if f := resp.GetFinalTranscript(); f != nil && tr.clock.ok() {
			// Audio up to here is transcribed for good: no replay needs it.
			tr.upMu.Lock()
			tr.replay.trim(tr.clock.offset(f.GetEndOffset().AsDuration()))
			tr.upMu.Unlock()
		}
		if resp.GetFinalTranscript() != nil && tr.srv.cfg.MaxUpstreamSessionAge > 0 &&
			time.Since(sess.Stats().ReadyAt) > tr.srv.cfg.MaxUpstreamSessionAge && !tr.isClosing() {
			// Roll over at a transcript boundary, before SLNG's maximum
			// connection duration cuts the session in the middle of speech.
			if err := tr.reconnect(ctx, nil); err != nil {
				return err
			}
		}
	}
}

// untranscribedWarning is how much audio after the last final makes the
// end of a stream worth a warning: SLNG's normal close after `close` says
// it transcribed everything, but a close that crossed ours looks the same,
// and a long tail without a final may be speech it never heard.
const untranscribedWarning = time.Second

// warnUntranscribed tells the caller, at the end of the stream, how much
// audio no final transcript covered when that is more than a pause, or
// when the last session closed without a word about audio it was sent.
func (tr *transcription) warnUntranscribed(heard bool) error {
	if !tr.clock.ok() {
		return nil
	}
	tr.upMu.Lock()
	tail := tr.clock.duration(tr.replay.end - tr.replay.start)
	overflow := tr.replay.overflow
	tr.upMu.Unlock()
	if tail < untranscribedWarning && !overflow && (heard || tail < untranscribedWarning/4) {
		return nil
	}
	return tr.send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{
		Code: "untranscribed_audio",
		Message: fmt.Sprintf("the upstream session ended with %s of audio after the last final transcript; "+
			"if that was speech, it was not transcribed", tail.Round(time.Millisecond)),
	}}})
}

// recoverable reports whether a failure of the upstream session can be
// survived by replacing it: the stream's audio can be replayed, and the
// failure is SLNG's rather than the request's.
func (tr *transcription) recoverable(err error) bool {
	ue, ok := slngclient.AsUpstreamError(err)
	return tr.clock.ok() && ok && ue.Retryable
}

// reconnect replaces the upstream session: cause is why the old one ended,
// nil for a rollover. The new session hears again the audio that followed
// the last final transcript, so nothing is lost and, since its offsets are
// rebased to where that audio starts, nothing is transcribed twice.
func (tr *transcription) reconnect(ctx context.Context, cause error) error {
	failedAt := time.Now()
	fail := func(err error) error {
		tr.mu.Lock()
		last := tr.prevFinalEnd
		tr.mu.Unlock()
		return withMetadata(err, map[string]string{"last_final_end_offset_ms": strconv.FormatInt(last.Milliseconds(), 10)})
	}
	if cause != nil && !tr.recoverable(cause) {
		return fail(cause)
	}
	tr.upMu.Lock()
	defer tr.upMu.Unlock()
	tr.mu.Lock()
	tr.failures++
	failures, closing, finalize := tr.failures, tr.closing, tr.finalizePending
	old := tr.lease
	tr.mu.Unlock()
	if cause != nil && (tr.replay.overflow || failures > maxReconnects) {
		tr.log.Info("upstream lost and not recoverable", zap.Bool("replay_overflow", tr.replay.overflow), zap.Int("attempts", failures))
		return fail(cause)
	}
	lease, err := tr.acquire(slngpool.WithRollover(ctx))
	if err != nil {
		if cause == nil {
			return err
		}
		return fail(cause)
	}
	sess := lease.STT
	audio := tr.replay.buf
	chunk := max(int(tr.clock.rate/10), 1) // 100 ms frames, as a live caller sends
	for len(audio) > 0 {
		n := min(chunk, len(audio))
		if err := sess.SendAudio(ctx, audio[:n]); err != nil {
			sess.CloseNow()
			lease.release(err, false)
			return fail(err)
		}
		audio = audio[n:]
	}
	if finalize {
		_ = sess.Finalize(ctx) // a failure shows up in Recv
	}
	if closing {
		_ = sess.CloseSend(ctx)
	}
	tr.mu.Lock()
	prevID := tr.meta.upstreamSessionID
	tr.lease, tr.sess = lease, sess
	tr.base = tr.clock.duration(tr.replay.start)
	tr.meta.upstreamSessionID, tr.meta.upstreamRequestID = sess.ID(), sess.RequestID()
	tr.mu.Unlock()
	old.STT.CloseNow()
	old.release(cause, false)

	reason := reconnectReason(cause)
	replayed := tr.clock.duration(int64(len(tr.replay.buf)))
	tr.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", cause),
		zap.String("previous_upstream_session_id", prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Duration("replayed", replayed))
	tr.srv.metrics.reconnect("stt", reason)
	return tr.send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Reconnected{
		Reconnected: &speechv1.UpstreamReconnected{
			Reason:                    reason,
			PreviousUpstreamSessionId: prevID,
			UpstreamSessionId:         sess.ID(),
			AudioReplayed:             durationpb.New(replayed),
			Gap:                       durationpb.New(time.Since(failedAt)),
			WarmSession:               lease.Warm,
		}}})
}

// reconnectReason names why a session was replaced, for the caller.
func reconnectReason(cause error) string {
	if cause == nil {
		return "rollover"
	}
	if errors.Is(cause, errTurnTimeout) {
		return "turn_timeout"
	}
	if ue, ok := slngclient.AsUpstreamError(cause); ok {
		switch {
		case ue.Code != "":
			return ue.Code
		case ue.Kind == slngclient.KindClose && ue.CloseCode == 1000:
			return "closed"
		case ue.Reaped():
			return "reaped"
		}
	}
	return "connection_lost"
}

// translate maps one upstream event to a response; nil drops it.
func (tr *transcription) translate(ev slngclient.STTEvent) *speechv1.TranscribeResponse {
	switch ev.Kind {
	case slngclient.STTPartial:
		t, _ := tr.transcript(ev.Transcript, false)
		if t == nil {
			return nil
		}
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_PartialTranscript{PartialTranscript: t}}
	case slngclient.STTFinal:
		t, drop := tr.transcript(ev.Transcript, true)
		if t == nil {
			tr.srv.metrics.finalsDropped.WithLabelValues(drop).Inc()
			if drop == "no_audio" {
				tr.srv.metrics.protocolViolation("stt", "final_without_audio")
				return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{
					Code: "upstream_protocol", Message: "the upstream sent a final transcript before any audio; it was dropped"}}}
			}
			return nil
		}
		if t.GetOffsetsEstimated() {
			tr.srv.metrics.finalsEstimated.Inc()
		}
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_FinalTranscript{FinalTranscript: t}}
	case slngclient.STTUtteranceEnd:
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_UtteranceEnd{
			UtteranceEnd: &speechv1.UtteranceEnd{LastWordEnd: durationOrNil(ev.LastWordEnd)}}}
	case slngclient.STTWarning:
		tr.srv.metrics.warnings.WithLabelValues("stt").Inc()
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: warningOf(ev.Err)}}
	}
	return nil
}

// transcript converts an upstream transcript; nil drops it, and drop says
// why. Offsets count from the first audio byte of the gRPC stream. Where
// SLNG says where a transcript starts (start, or its first word), that and
// its duration (or last word) place it. SLNG's bridge often says neither
// (the AsyncAPI's final has only transcript, confidence, language and an
// optional duration): the transcript then starts where the previous final
// ended and ends at the audio sent so far, marked offsets_estimated.
func (tr *transcription) transcript(t slngclient.Transcript, final bool) (out *speechv1.Transcript, drop string) {
	sent := tr.sent.Load()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if final && t.Text != "" && sent == 0 {
		return nil, "no_audio" // a route breaking its own protocol
	}
	start, timed := tr.prevFinalEnd, false
	switch {
	case t.HasStart:
		start, timed = tr.base+t.Start, true
	case len(t.Words) > 0:
		start, timed = tr.base+t.Words[0].Start, true
	}
	var end time.Duration
	switch {
	case timed && t.HasDuration:
		end = start + t.Duration
	case timed && len(t.Words) > 0:
		end = max(start, tr.base+t.Words[len(t.Words)-1].End)
	case timed:
		end = start
	default:
		end = start
		if tr.clock.ok() {
			end = max(start, tr.clock.duration(sent))
		}
	}
	if final && timed && t.Text != "" && end <= tr.prevFinalEnd {
		return nil, "duplicate" // already delivered, from the session before a reconnect
	}
	fromFinalize := t.FromFinalize
	if final && !t.HasFromFinalize && tr.finalizePending {
		// The bridge has no finalize-correlation field: the first final
		// after a finalize answers it (pipecat-slng's tests say so).
		fromFinalize = true
	}
	out = &speechv1.Transcript{
		Text:             t.Text,
		Confidence:       float32(t.Confidence),
		Language:         t.Language,
		StartOffset:      durationpb.New(start),
		EndOffset:        durationpb.New(end),
		Duration:         durationpb.New(end - start),
		FromFinalize:     fromFinalize,
		OffsetsEstimated: !timed,
	}
	for _, w := range t.Words {
		speaker := int32(-1)
		if w.HasSpeaker {
			speaker = int32(w.Speaker)
		}
		pw := w.PunctuatedWord
		if pw == "" {
			pw = w.Word
		}
		out.Words = append(out.Words, &speechv1.WordInfo{
			Word:           w.Word,
			PunctuatedWord: pw,
			StartOffset:    durationpb.New(tr.base + w.Start),
			EndOffset:      durationpb.New(tr.base + w.End),
			Confidence:     float32(w.Confidence),
			Speaker:        speaker,
		})
	}
	if final {
		tr.prevFinalEnd = max(tr.prevFinalEnd, end)
		if t.Text != "" {
			tr.failures = 0
		}
		if fromFinalize {
			tr.finalizePending = false
			if !tr.finalizeAt.IsZero() {
				tr.srv.metrics.transcriptDelay.Observe(time.Since(tr.finalizeAt).Seconds())
				tr.finalizeAt = time.Time{}
			}
		}
	}
	return out, ""
}
