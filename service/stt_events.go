package service

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// What SLNG and the clock do to a Transcribe stream: sttCore's other half.

// onUpstream handles one event of the session being read.
func (c *sttCore) onUpstream(ev slngclient.STTEvent, now time.Time) {
	if ev.Kind == slngclient.STTPartial || ev.Kind == slngclient.STTFinal {
		c.heard = true
	}
	resp := c.translate(ev, now)
	if resp == nil {
		return
	}
	c.emit(resp)
	if resp.GetFinalTranscript() != nil && c.srv.cfg.MaxUpstreamSessionAge > 0 && !c.closing &&
		now.Sub(c.lease.Session.Stats().ReadyAt) > c.srv.cfg.MaxUpstreamSessionAge {
		// Roll over at a transcript boundary, before SLNG's maximum
		// connection duration cuts the session in the middle of speech.
		c.reconnect(nil, now)
	}
}

// onUpstreamEnd handles the end of the session being read.
func (c *sttCore) onUpstreamEnd(err error, now time.Time) {
	c.releaseHeld()
	eof := errors.Is(err, io.EOF)
	switch {
	case eof && c.draining:
		c.dropSession(nil)
		c.fail(errDraining)
		return
	case eof && c.closing:
		c.dropSession(nil)
		c.warnUntranscribed()
		c.finish(nil, true)
		return
	case eof:
		err = errUpstreamClosedEarly
	}
	c.reconnect(err, now)
}

// dropSession closes the current session and gives it back with err.
func (c *sttCore) dropSession(err error) {
	dropLease(c.lease, err)
	c.lease = nil
}

// reconnect decides whether the stream survives the end of its session,
// and if so asks for a new one (see onAcquired). cause is why the old one
// ended, nil for a rollover.
func (c *sttCore) reconnect(cause error, now time.Time) {
	relErr := cause
	if errors.Is(cause, errUpstreamClosedEarly) {
		relErr = nil // a normal close: the pool sees it as such
	}
	if cause != nil && !c.recoverable(cause) {
		c.dropSession(relErr)
		c.fail(c.failHere(cause))
		return
	}
	c.failures++
	if _, overflow := c.replay.tail(); cause != nil && (overflow || c.failures > maxReconnects) {
		c.log.Info("upstream lost and not recoverable", zap.Bool("replay_overflow", overflow), zap.Int("attempts", c.failures))
		c.dropSession(relErr)
		c.fail(c.failHere(cause))
		return
	}
	c.replacing = &replacement{cause: cause, prevID: c.meta.upstreamSessionID, failedAt: now}
	// A rollover comes right after a final: the audio after it is heard
	// again by the new session, so the old one is closed at once.
	c.dropSession(relErr)
	c.dial(slngpool.PurposeRollover)
}

// untranscribedWarning is how much audio after the last final makes the
// end of a stream worth a warning: SLNG's normal close after `close` says
// it transcribed everything, but a close that crossed ours looks the same,
// and a long tail without a final may be speech it never heard.
const untranscribedWarning = time.Second

// warnUntranscribed tells the caller, at the end of the stream, how much
// audio no final transcript covered when that is more than a pause, or
// when the last session closed without a word about audio it was sent.
func (c *sttCore) warnUntranscribed() {
	if !c.clock.ok() {
		return
	}
	n, overflow := c.replay.tail()
	tail := c.clock.duration(n)
	if tail < untranscribedWarning && !overflow && (c.heard || tail < untranscribedWarning/4) {
		return
	}
	c.emit(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{
		Code: "untranscribed_audio",
		Message: fmt.Sprintf("the upstream session ended with %s of audio after the last final transcript; "+
			"if that was speech, it was not transcribed", tail.Round(time.Millisecond)),
	}}})
}

// translate maps one upstream event to a response; nil drops it.
func (c *sttCore) translate(ev slngclient.STTEvent, now time.Time) *speechv1.TranscribeResponse {
	switch ev.Kind {
	case slngclient.STTPartial:
		if c.held != nil {
			return nil // never ahead of the final held
		}
		if !c.cfg.EnablePartials {
			// Some routes send partials whatever init says (Sarvam
			// Saaras): the caller turned them off.
			c.srv.metrics.partialsDropped.Inc()
			return nil
		}
		t, _ := c.transcript(ev.Transcript, false, now)
		if t == nil {
			return nil
		}
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_PartialTranscript{PartialTranscript: t}}
	case slngclient.STTFinal:
		t, drop := c.transcript(ev.Transcript, true, now)
		if t == nil && drop == "duplicate" && c.held != nil {
			// The held final came from audio before one delivered.
			c.held = nil
			c.srv.metrics.finalsDropped.WithLabelValues("fragment").Inc()
		}
		if t == nil {
			c.srv.metrics.finalsDropped.WithLabelValues(drop).Inc()
			if drop == "no_audio" {
				c.srv.metrics.protocolViolation("stt", "final_without_audio")
				return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{
					Code: "upstream_protocol", Message: "the upstream sent a final transcript before any audio; it was dropped"}}}
			}
			return nil
		}
		if t.GetOffsetsEstimated() {
			c.srv.metrics.finalsEstimated.Inc()
		}
		c.releaseHeld()
		resp := &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_FinalTranscript{FinalTranscript: t}}
		if c.holdNext {
			c.holdNext, c.held = false, resp
			return nil
		}
		return resp
	case slngclient.STTUtteranceEnd:
		return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_UtteranceEnd{
			UtteranceEnd: &speechv1.UtteranceEnd{LastWordEnd: durationOrNil(ev.LastWordEnd)}}}
	case slngclient.STTWarning:
		c.srv.metrics.warnings.WithLabelValues("stt").Inc()
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
// ended and ends where the finalize it answers came, or after its
// duration, or at the audio sent so far, marked offsets_estimated.
//
// A final also moves the covered offset, and trims the replay buffer to
// it, as far as it proves (see sttCore).
func (c *sttCore) transcript(t slngclient.Transcript, final bool, now time.Time) (out *speechv1.Transcript, drop string) {
	if final && t.Text != "" && c.sent == 0 {
		return nil, "no_audio" // a route breaking its own protocol
	}
	start, timed := c.prevFinalEnd, false
	switch {
	case t.HasStart:
		start, timed = c.base+t.Start, true
	case len(t.Words) > 0:
		start, timed = c.base+t.Words[0].Start, true
	}
	fromFinalize := t.FromFinalize
	if final && !t.HasFromFinalize && len(c.finalizes) > 0 {
		// The bridge has no finalize-correlation field: the first final
		// after a finalize answers it (pipecat-slng's tests say so).
		fromFinalize = true
	}
	answers := final && fromFinalize && len(c.finalizes) > 0
	var end time.Duration
	switch {
	case timed && t.HasDuration:
		end = start + t.Duration
	case timed && len(t.Words) > 0:
		end = max(start, c.base+t.Words[len(t.Words)-1].End)
	case timed:
		end = start
	case answers && c.clock.ok():
		end = max(start, c.clock.duration(c.finalizes[0]))
	case t.HasDuration:
		end = start + t.Duration
	default:
		end = start
		if c.clock.ok() {
			end = max(start, c.clock.duration(c.sent))
		}
	}
	if final && timed && t.Text != "" && end <= c.timedEnd {
		return nil, "duplicate" // already delivered, from the session before a reconnect
	}
	if final && !timed && c.heardAgain(t.Text) {
		c.fragmentCheck = false
		return nil, "duplicate"
	}
	if final && !timed && t.Text != "" && c.fragmentCheck {
		c.fragmentCheck, c.holdNext = false, true
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
			StartOffset:    durationpb.New(c.base + w.Start),
			EndOffset:      durationpb.New(c.base + w.End),
			Confidence:     float32(w.Confidence),
			Speaker:        speaker,
		})
	}
	if !final {
		return out, ""
	}
	c.prevFinalEnd = max(c.prevFinalEnd, end)
	if timed {
		c.timedEnd = max(c.timedEnd, end)
	}
	if t.Text != "" {
		c.failures = 0
	}
	c.cover(t, timed, end, answers, now)
	if t.Text != "" && !c.holdNext {
		c.dedupe = c.dedupe[:0] // past what the new session hears again
	}
	if fromFinalize && !c.finalizeAt.IsZero() {
		c.srv.metrics.transcriptDelay.Observe(now.Sub(c.finalizeAt).Seconds())
		c.finalizeAt = time.Time{}
	}
	return out, ""
}

// cover moves the covered offset as far as final t proves, and trims the
// replay buffer there.
func (c *sttCore) cover(t slngclient.Transcript, timed bool, end time.Duration, answers bool, now time.Time) {
	if !c.clock.ok() {
		if answers {
			c.finalizeDone(now)
		}
		return
	}
	to := c.covered
	switch {
	case answers || timed:
		c.unproven = c.unproven[:0] // every final delivered so far is covered
	case t.Text != "":
		c.unproven = append(c.unproven, t.Text)
	}
	switch {
	case answers:
		to = max(to, c.finalizes[0])
		c.finalizeDone(now)
		if len(c.finalizes) > 0 {
			c.finalizeAt = time.Time{} // the next one counts from its own time: unknown, so not measured
		}
	case timed:
		to = max(to, c.clock.offset(end))
	case t.HasDuration:
		to = max(to, c.covered+c.clock.offset(t.Duration))
	}
	to = min(to, c.sent)
	if to > c.covered {
		c.covered = to
		c.replay.trim(to)
	}
}

// releaseHeld delivers the final held as a possible fragment (see
// sttCore.fragmentCheck): what came next does not show it was one.
func (c *sttCore) releaseHeld() {
	if c.held != nil {
		c.emit(c.held)
		c.held = nil
	}
}

// heardAgain reports an untimed final of a new session that repeats one of
// the finals it hears again (see sttCore.unproven), whole or its end (a
// replay that starts within an utterance), and takes it and those before
// it off: the replay may start past the first of them.
func (c *sttCore) heardAgain(text string) bool {
	if text == "" {
		return false
	}
	for i, d := range c.dedupe {
		if strings.HasSuffix(d, text) {
			c.dedupe = c.dedupe[i+1:]
			return true
		}
	}
	return false
}

// onTick checks the stream's timers at now.
func (c *sttCore) onTick(now time.Time) {
	defer func() {
		if c.done {
			c.releaseHeld()
		}
	}()
	switch {
	case c.timedOut(now):
	case !c.finalsAt().After(now):
		c.fail(errFinalsTimeout)
	case !c.idleAt().After(now):
		c.finish(errCallerIdle, false)
	case !c.finalizeDue().After(now):
		c.finalizeTimedOut(now)
	}
}

// finalizeDue is when the wait for the final that answers the oldest
// finalize ends (FinalizeTimeout).
func (c *sttCore) finalizeDue() time.Time {
	d := c.srv.cfg.FinalizeTimeout
	if d <= 0 || c.finalizeWait.IsZero() || c.phase != phaseRunning || c.dialling || c.lease == nil || c.closing {
		return never
	}
	return c.finalizeWait.Add(d)
}

// finalizeTimedOut answers a finalize that SLNG left unanswered, never
// with a hang: LiveKit keeps a watchdog after a finalize, as "a provider
// that never sends the final would hang the stream". The first time, a
// new session hears again the audio no final covers, the finalize at its
// place; if that cannot be, or did not help, the caller is warned and the
// stream goes on without waiting for that final.
func (c *sttCore) finalizeTimedOut(now time.Time) {
	c.srv.metrics.unanswered.WithLabelValues("stt", "finalize").Inc()
	if _, overflow := c.replay.tail(); !c.finalizeRetried && c.clock.ok() && c.replay.max > 0 && !overflow {
		c.finalizeRetried = true
		c.log.Info("no final answered a finalize in time; replaying to a new session",
			zap.Duration("finalize_timeout", c.srv.cfg.FinalizeTimeout))
		c.reconnect(errFinalizeUnanswered, now)
		return
	}
	c.finalizeDone(now)
	c.emit(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Warning{Warning: &speechv1.Warning{
		Code: "finalize_timeout",
		Message: fmt.Sprintf("no final transcript answered the finalize within %s; the speech before it "+
			"will come in a later final, if the upstream sends one", c.srv.cfg.FinalizeTimeout),
	}}})
}

// finalizeDone takes the oldest finalize off, answered or given up on; the
// wait for the next one, if any, starts now at the latest.
func (c *sttCore) finalizeDone(now time.Time) {
	c.finalizes = c.finalizes[1:]
	c.finalizeWait, c.finalizeRetried = time.Time{}, false
	if len(c.finalizes) > 0 {
		c.finalizeWait = now
	}
}

// finalsAt is when the wait for the last finals after the half-close ends.
func (c *sttCore) finalsAt() time.Time {
	if !c.closing || c.done {
		return never
	}
	return c.closedAt.Add(c.srv.cfg.FinalsTimeout)
}

// idleAt is when the caller counts as idle: it has sent nothing for
// CallerIdleTimeout, and is not waiting for its last finals.
func (c *sttCore) idleAt() time.Time {
	idle := c.srv.cfg.CallerIdleTimeout
	if idle <= 0 || c.phase != phaseRunning || c.closing {
		return never
	}
	return c.lastCaller.Add(idle)
}

func (c *sttCore) nextCheck() time.Time {
	at := c.baseCheck()
	if c.done {
		return at
	}
	return minTime(at, minTime(c.finalsAt(), minTime(c.idleAt(), c.finalizeDue())))
}
