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
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
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
	meta := streamMeta{sessionID: newSessionID()}
	log := s.log.With(zap.String("rpc", rpc), zap.String("session_id", meta.sessionID))
	release, err := s.admit(rpc)
	if err != nil {
		return s.finish(ctx, rpc, err, meta, log)
	}
	defer release()
	ctx, cancel := s.streamContext(ctx)
	defer cancel()

	tr := &transcription{srv: s, stream: stream, log: log, meta: meta, downDone: make(chan struct{})}
	err = tr.run(ctx)
	return s.finish(ctx, rpc, err, tr.meta, log)
}

// transcription is one Transcribe stream.
type transcription struct {
	srv    *Server
	stream speechv1.SpeechToTextService_TranscribeServer
	log    *zap.Logger
	meta   streamMeta // written before the pumps start, read after

	cfg  *speechv1.RecognitionConfig // effective config
	sess *slngclient.STTSession

	// audioBytes counts audio forwarded upstream (up pump writes, down
	// pump reads).
	audioBytes atomic.Int64
	downDone   chan struct{}

	mu           sync.Mutex
	closing      bool // the upstream has been told no more audio comes
	draining     bool
	finalizeAt   time.Time
	prevFinalEnd time.Duration
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
	sttCfg, err := tr.configure(cfg)
	if err != nil {
		return err
	}
	tr.meta.model = tr.cfg.Model

	ep := slngclient.Endpoint{Model: tr.cfg.Model}
	if ep.APIKey, err = tr.srv.callerKey(ctx); err != nil {
		return err
	}
	start := time.Now()
	lease, err := tr.srv.upstream.AcquireSTT(ctx, ep, sttCfg)
	tr.srv.metrics.observeAcquire("stt", start, lease, err)
	if err != nil {
		return err
	}
	sess := lease.STT
	// A used STT session is never reused: the half-close ends it upstream.
	defer func() {
		sess.CloseNow()
		lease.Release(runErr, false)
	}()
	tr.sess = sess
	tr.meta.upstreamSessionID = sess.ID()
	tr.meta.upstreamRequestID = sess.RequestID()

	started := &speechv1.RecognitionStarted{
		SessionId:         tr.meta.sessionID,
		UpstreamSessionId: sess.ID(),
		UpstreamRequestId: sess.RequestID(),
		Config:            tr.cfg,
		Limits:            tr.srv.limits(),
		WarmSession:       lease.Warm,
	}
	if err := tr.stream.Send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Started{Started: started}}); err != nil {
		return err
	}
	return tr.srv.runPumps(ctx, tr.pumpUp, tr.pumpDown)
}

// configure validates cfg, fills in the effective configuration and returns
// SLNG's init config.
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

// pumpUp relays the caller's audio and finalize requests to SLNG.
func (tr *transcription) pumpUp(ctx context.Context) error {
	stopDrain := context.AfterFunc(tr.srv.drainCtx, func() { tr.endAudio(ctx, true) })
	defer stopDrain()
	for {
		req, err := tr.stream.Recv()
		if errors.Is(err, io.EOF) {
			tr.endAudio(ctx, false)
			return tr.awaitFinals(ctx)
		}
		if err != nil {
			return err
		}
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
			if tr.isClosing() {
				continue // draining: the upstream takes no more audio
			}
			if err := tr.sess.SendAudio(ctx, r.Audio); err != nil {
				return err
			}
			tr.audioBytes.Add(int64(len(r.Audio)))
			tr.srv.metrics.audioBytes.WithLabelValues("recognized").Add(float64(len(r.Audio)))
		case *speechv1.TranscribeRequest_Finalize:
			if tr.isClosing() {
				continue
			}
			tr.mu.Lock()
			tr.finalizeAt = time.Now()
			tr.mu.Unlock()
			if err := tr.sess.Finalize(ctx); err != nil {
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
		_ = tr.sess.CloseSend(ctx)
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

// pumpDown relays SLNG's transcripts to the caller.
func (tr *transcription) pumpDown(ctx context.Context) error {
	defer close(tr.downDone)
	for {
		ev, err := tr.sess.Recv(ctx)
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
				return nil
			case errors.Is(err, io.EOF):
				return errUpstreamClosedEarly
			}
			return err
		}
		resp := tr.translate(ev)
		if resp == nil {
			continue
		}
		if err := tr.stream.Send(resp); err != nil {
			return err
		}
	}
}

// translate maps one upstream event to a response; nil drops it.
func (tr *transcription) translate(ev slngclient.STTEvent) *speechv1.TranscribeResponse {
	switch ev.Kind {
	case slngclient.STTPartial:
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_PartialTranscript{
			PartialTranscript: tr.transcript(ev.Transcript, false)}}
	case slngclient.STTFinal:
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_FinalTranscript{
			FinalTranscript: tr.transcript(ev.Transcript, true)}}
	case slngclient.STTUtteranceEnd:
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_UtteranceEnd{
			UtteranceEnd: &speechv1.UtteranceEnd{LastWordEnd: durationOrNil(ev.LastWordEnd)}}}
	case slngclient.STTWarning:
		tr.srv.metrics.warnings.WithLabelValues("stt").Inc()
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: warningOf(ev.Err)}}
	}
	return nil
}

// transcript converts an upstream transcript. Offsets count from the first
// audio byte of the gRPC stream, which is also the first byte of the one
// upstream session; when SLNG does not say where a transcript starts, the
// first word's start, else the previous final's end, stands in.
func (tr *transcription) transcript(t slngclient.Transcript, final bool) *speechv1.Transcript {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	start := tr.prevFinalEnd
	switch {
	case t.HasStart:
		start = t.Start
	case len(t.Words) > 0:
		start = t.Words[0].Start
	}
	end := start + t.Duration
	out := &speechv1.Transcript{
		Text:         t.Text,
		Confidence:   float32(t.Confidence),
		Language:     t.Language,
		StartOffset:  durationpb.New(start),
		EndOffset:    durationpb.New(end),
		Duration:     durationpb.New(t.Duration),
		FromFinalize: t.FromFinalize,
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
			StartOffset:    durationpb.New(w.Start),
			EndOffset:      durationpb.New(w.End),
			Confidence:     float32(w.Confidence),
			Speaker:        speaker,
		})
	}
	if final {
		tr.prevFinalEnd = end
		if t.FromFinalize && !tr.finalizeAt.IsZero() {
			tr.srv.metrics.transcriptDelay.Observe(time.Since(tr.finalizeAt).Seconds())
			tr.finalizeAt = time.Time{}
		}
	}
	return out
}
