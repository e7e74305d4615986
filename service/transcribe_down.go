package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// pumpDown relays SLNG's transcripts to the caller, and replaces the
// upstream session when it fails or grows old.
func (tr *transcription) pumpDown(ctx context.Context) error {
	defer close(tr.downDone)
	var last STTSession
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
	sess := lease.Session
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
	old.Session.CloseNow()
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
