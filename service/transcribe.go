package service

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

var (
	errFinalsTimeout       = slngclient.NewTimeout("upstream did not deliver the last transcripts in time", nil)
	errUpstreamClosedEarly = slngclient.NewClosedEarly("upstream closed the session before the audio ended")
)

// Transcribe implements SpeechToTextService.Transcribe.
func (s *Server) Transcribe(stream speechv1.SpeechToTextService_TranscribeServer) error {
	const rpc = "Transcribe"
	ctx := stream.Context()
	id, log := s.streamLogger(ctx, speechv1.SpeechToTextService_ServiceDesc.ServiceName, rpc)
	ctx, log, usage := s.callerContext(ctx, log, rpc)
	meta := streamMeta{sessionID: id, caller: usage.caller}
	defer usage.end(log, "", 0, 0, errHandlerAborted) // only if the handler panics
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
