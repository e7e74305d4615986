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

// transcription is one Transcribe stream: three goroutines. The up pump
// reads the caller; the owner (own) is the only one that writes to, dials
// and replaces the upstream session, at the request of the up pump (audio,
// finalize, end of audio) and of the down pump (a replacement); the down
// pump relays transcripts and never waits for a socket write.
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

	ops    chan sttOp // to the owner
	replay replayBuffer
	// sent is the stream's audio sent upstream so far, in bytes; offsets
	// of transcripts without timing are estimated from it.
	sent atomic.Int64

	mu              sync.Mutex
	meta            streamMeta
	lease           *upstreamLease[STTSession] // replaced by the owner only
	base            time.Duration              // stream time of the current session's first audio byte
	closing         bool                       // the caller half-closed, or the server drains
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
	tr.lease = lease
	defer func() {
		// A used STT session is never reused: the half-close ends it.
		tr.mu.Lock()
		lease := tr.lease
		tr.mu.Unlock()
		lease.Session.CloseNow()
		lease.release(runErr, false)
	}()
	tr.meta.upstreamSessionID = lease.Session.ID()
	tr.meta.upstreamRequestID = lease.Session.RequestID()

	started := &speechv1.RecognitionStarted{
		SessionId:         tr.meta.sessionID,
		UpstreamSessionId: lease.Session.ID(),
		UpstreamRequestId: lease.Session.RequestID(),
		Config:            tr.cfg,
		Limits:            tr.srv.limits(),
		WarmSession:       lease.Warm,
		CallerId:          tr.usage.caller,
	}
	if err := tr.send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Started{Started: started}}); err != nil {
		return err
	}
	tr.ops = make(chan sttOp, sttOpQueue)
	return tr.srv.runPumps(ctx, pumps{
		up: tr.pumpUp, down: func(ctx context.Context) error { return tr.pumpDown(ctx, lease.Session) },
		own: func(ctx context.Context) error { return tr.own(ctx, lease.Session) },
		// The session is never reused: ending it unblocks a write.
		abort: func(error) { tr.currentSession().CloseNow() },
	})
}

func (tr *transcription) acquire(ctx context.Context) (*upstreamLease[STTSession], error) {
	return acquireLease(ctx, tr.srv, "stt", tr.ep, func(ctx context.Context) (Lease[STTSession], error) {
		return tr.srv.upstream.AcquireSTT(ctx, tr.ep, tr.sttCfg)
	})
}

func (tr *transcription) send(resp *speechv1.TranscribeResponse) error {
	tr.sendMu.Lock()
	defer tr.sendMu.Unlock()
	return tr.stream.Send(resp)
}

// currentSession is the upstream session the owner last set up.
func (tr *transcription) currentSession() STTSession {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.lease.Session
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
	eff.Format = formatWithDefaults(eff.Format, defaultSTTSampleRate)
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

// pumpUp relays the caller's audio and finalize requests to the owner.
func (tr *transcription) pumpUp(ctx context.Context) error {
	stopDrain := context.AfterFunc(tr.srv.drainCtx, func() { tr.onDrain(ctx) })
	defer stopDrain()
	// One request for the whole stream, as Recv would allocate one per
	// chunk: Unmarshal resets it and gives every chunk a new Audio slice,
	// so the slice handed to the owner stays the owner's.
	req := new(speechv1.TranscribeRequest)
	for {
		err := tr.stream.RecvMsg(req)
		if errors.Is(err, io.EOF) {
			if err := tr.endAudio(ctx, false); err != nil {
				return err
			}
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
			if err := tr.ask(ctx, sttOp{kind: opAudio, audio: r.Audio}); err != nil {
				return err
			}
		case *speechv1.TranscribeRequest_Finalize:
			tr.mu.Lock()
			closing := tr.closing
			if !closing {
				tr.finalizeAt = time.Now()
				tr.finalizePending = true
			}
			tr.mu.Unlock()
			if closing {
				continue
			}
			if err := tr.ask(ctx, sttOp{kind: opFinalize}); err != nil {
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
	_ = tr.endAudio(ctx, true) // fails only when the stream has ended
}

// endAudio tells SLNG, through the owner, that no more audio comes; SLNG
// then sends its last finals and closes. Called on the caller's half-close
// and on drain.
func (tr *transcription) endAudio(ctx context.Context, drain bool) error {
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
	if already {
		return nil
	}
	return tr.ask(ctx, sttOp{kind: opEndAudio})
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
