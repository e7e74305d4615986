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
)

// pumpDown relays SLNG's transcripts to the caller, and asks the owner for
// a new upstream session when the current one fails or grows old.
func (tr *transcription) pumpDown(ctx context.Context, sess STTSession) error {
	defer close(tr.downDone)
	heard := false // the current session sent a transcript
	for {
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
			if sess, err = tr.reconnect(ctx, err); err != nil {
				return err
			}
			heard = false
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
			tr.replay.trim(tr.clock.offset(f.GetEndOffset().AsDuration()))
		}
		if resp.GetFinalTranscript() != nil && tr.srv.cfg.MaxUpstreamSessionAge > 0 &&
			time.Since(sess.Stats().ReadyAt) > tr.srv.cfg.MaxUpstreamSessionAge && !tr.isClosing() {
			// Roll over at a transcript boundary, before SLNG's maximum
			// connection duration cuts the session in the middle of speech.
			if sess, err = tr.reconnect(ctx, nil); err != nil {
				return err
			}
			heard = false
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
	n, overflow := tr.replay.tail()
	tail := tr.clock.duration(n)
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

// reconnect decides whether the stream survives the end of its upstream
// session, and if so asks the owner for a new one (see replace). cause is
// why the old one ended, nil for a rollover.
func (tr *transcription) reconnect(ctx context.Context, cause error) (STTSession, error) {
	fail := func(err error) error {
		tr.mu.Lock()
		last := tr.prevFinalEnd
		tr.mu.Unlock()
		return withMetadata(err, map[string]string{"last_final_end_offset_ms": strconv.FormatInt(last.Milliseconds(), 10)})
	}
	if cause != nil && !tr.recoverable(cause) {
		return nil, fail(cause)
	}
	tr.mu.Lock()
	tr.failures++
	failures := tr.failures
	tr.mu.Unlock()
	if _, overflow := tr.replay.tail(); cause != nil && (overflow || failures > maxReconnects) {
		tr.log.Info("upstream lost and not recoverable", zap.Bool("replay_overflow", overflow), zap.Int("attempts", failures))
		return nil, fail(cause)
	}
	reply := make(chan replacement, 1)
	r, err := roundTrip(ctx, tr.ops, sttOp{kind: opReplace, cause: cause, reply: reply}, reply)
	if err != nil {
		return nil, err
	}
	switch {
	case r.err != nil && cause == nil:
		return nil, r.err
	case r.err != nil:
		return nil, fail(cause)
	}
	return r.sess, tr.send(r.resp)
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
