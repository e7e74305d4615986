package service

import (
	"errors"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// sttCore is every decision of one Transcribe stream, as synthCore is for
// Synthesize: its upstream session and the audio a new one must hear
// again, the offsets of its transcripts, its timers and how it ends. The
// stream's loop (stt_loop.go) alone calls it; it does no I/O.
//
// Audio the caller sent is kept (replay) until a final transcript is
// proven to cover it: a final that answers a finalize covers exactly the
// audio sent before that finalize; a final with a start and an end covers
// up to its end; a final with only a duration covers that much after the
// audio already covered. Nothing else trims it, so a session lost at any
// moment is replaced by one that hears again everything not proven
// transcribed, with every pending finalize at its place.
type sttCore struct {
	coreBase

	cfg    *speechv1.RecognitionConfig
	sttCfg slngclient.STTConfig
	// up is the format SLNG takes, and conv converts the caller's audio
	// into it (nil when SLNG takes it as it is). clock counts the audio as
	// it goes upstream.
	up    *speechv1.AudioFormat
	conv  *sttConv
	clock pcmClock

	lease *upstreamLease[STTSession]

	replay replayBuffer
	// sent is the stream's audio received from the caller, in bytes.
	sent int64
	// base is the stream time, and baseOff the offset, of the current
	// session's first audio byte.
	base    time.Duration
	baseOff int64
	// covered is the offset up to which finals are proven to cover the
	// audio (the replay buffer's start, unless it overflowed).
	covered int64
	// finalizes are the offsets at which the caller's finalizes came,
	// oldest first, until a final answers each.
	finalizes  []int64
	finalizeAt time.Time // for the finalize-to-final metric
	// finalizeWait is when the wait for a final to answer the oldest
	// finalize began (FinalizeTimeout), zero with none outstanding;
	// finalizeRetried: that finalize already went to a new session.
	finalizeWait    time.Time
	finalizeRetried bool
	// prevFinalEnd is where the last final delivered ends, in stream time;
	// timedEnd where the last one with timing of its own does (a final
	// ending before it is the previous session's, heard again).
	prevFinalEnd, timedEnd time.Duration
	// unproven are the texts of the finals delivered that no proof covers
	// yet (no timing, no finalize answered): a new session hears their
	// audio again, and dedupe, set at a reconnect, expects them back in
	// order, to be dropped rather than delivered twice.
	unproven, dedupe []string
	// fragmentCheck: the new session's first final with text is still to
	// come, and dedupe expects finals back. That final may be a fragment
	// of audio already delivered (a replay that starts inside an
	// utterance, as where finals prove less than they seem: sttCore.cover),
	// which no text matches. It is held until the next final tells: one
	// that repeats a delivered final means the held one came from audio
	// before it, delivered already, and it is dropped; anything else
	// releases it (see translate, releaseHeld).
	fragmentCheck, holdNext bool
	held                    *speechv1.TranscribeResponse
	// closing: the caller half-closed, or the server drains; the upstream
	// was (or, once a session is there, will be) told no more audio comes.
	closing, draining bool
	closedAt          time.Time
	// heard: the current session sent a transcript.
	heard    bool
	failures int

	out  []*speechv1.TranscribeResponse
	cmds []sttCmd
}

// sttCmd is a command for the Transcribe stream's upstream writer.
type sttCmd struct {
	kind    sttCmdKind
	sess    STTSession
	audio   []byte // sttAudio, sttReplay
	purpose slngpool.Purpose
	// marks are the offsets in audio at which a finalize goes (sttReplay);
	// closeSend: the end of the audio follows the replay.
	marks     []int64
	closeSend bool
}

type sttCmdKind uint8

const (
	sttAcquire sttCmdKind = iota
	sttAudio
	sttFinalize
	sttCloseSend
	sttReplay
)

// sttResult is the Transcribe writer's report: a session it acquired, or a
// failure (sess nil: the acquire).
type sttResult struct {
	lease *upstreamLease[STTSession]
	sess  STTSession
	err   error
}

// sttIn is one caller message, as the caller's reader hands it over: the
// reader reuses one request message, and the audio slice is each
// message's own.
type sttIn struct {
	config   *speechv1.RecognitionConfig
	audio    []byte
	finalize bool
	hasAudio bool
}

func newSTTCore(srv *Server, log *zap.Logger, meta streamMeta, usage *callerUsage, callerKey string, now time.Time) *sttCore {
	return &sttCore{coreBase: newCoreBase(srv, log, meta, usage, callerKey, now)}
}

func (c *sttCore) emit(r *speechv1.TranscribeResponse) { c.out = append(c.out, r) }

// wantsCaller: the caller's audio is read while a session is replaced
// too: it waits in the replay buffer for the new one. Where nothing can be
// kept (compressed audio, or replay off), the caller waits for the new
// session instead.
func (c *sttCore) wantsCaller() bool {
	return c.phase == phaseConfig || (c.phase == phaseRunning && !c.closing && (!c.dialling || c.replay.max > 0))
}

// session is the session whose events the loop should read.
func (c *sttCore) session() STTSession {
	if c.phase != phaseRunning || c.lease == nil || c.dialling {
		return nil
	}
	return c.lease.Session
}

// live is the session commands go to, nil while one is being acquired.
func (c *sttCore) live() STTSession {
	if c.lease == nil || c.dialling {
		return nil
	}
	return c.lease.Session
}

func (c *sttCore) onFirst(in sttIn, now time.Time) {
	c.lastCaller = now
	if in.config == nil {
		c.fail(invalid("config", "the first message must be a config"))
		return
	}
	if err := c.configure(in.config); err != nil {
		c.fail(err)
		return
	}
	if err := c.admitModel(); err != nil {
		c.fail(err)
		return
	}
	if c.clock = clockOf(c.up); c.clock.ok() {
		c.replay.max = c.srv.cfg.TranscribeReplayBytes
	}
	c.phase = phaseOpening
	c.dial(slngpool.PurposeCaller)
}

func (c *sttCore) dial(p slngpool.Purpose) {
	c.dialling = true
	c.cmds = append(c.cmds, sttCmd{kind: sttAcquire, purpose: p})
}

// onCaller handles a caller's message after the config.
func (c *sttCore) onCaller(in sttIn, now time.Time) {
	c.lastCaller = now
	switch {
	case in.config != nil:
		c.fail(invalid("config", "config may be sent only once, as the first message"))
	case in.hasAudio:
		if err := c.srv.checkAudio(in.audio); err != nil {
			c.fail(err)
			return
		}
		c.audio(in.audio)
	case in.finalize:
		c.finalize(now)
	default:
		c.fail(invalid("request", "the request sets none of config, audio, finalize"))
	}
}

// audio converts the caller's audio into what SLNG takes, and sends it.
func (c *sttCore) audio(audio []byte) {
	c.srv.metrics.recognizedBytes.Add(float64(len(audio)))
	if c.conv != nil {
		audio = c.conv.up(audio)
	}
	c.send(audio)
}

// send keeps audio as SLNG takes it for a replay, and sends it.
func (c *sttCore) send(audio []byte) {
	if len(audio) == 0 {
		return // the resampler held it all: an empty frame would end SLNG's audio
	}
	c.replay.add(audio)
	c.sent += int64(len(audio))
	if !c.clock.ok() || c.replay.max <= 0 {
		c.covered = c.sent // nothing can be replayed
	}
	if sess := c.live(); sess != nil {
		c.cmds = append(c.cmds, sttCmd{kind: sttAudio, sess: sess, audio: audio})
	}
}

// finalize asks for the pending speech as a final now; the first final
// that follows answers it, covering the audio sent up to here.
func (c *sttCore) finalize(now time.Time) {
	c.flushConv()
	c.finalizes = append(c.finalizes, c.sent)
	if c.finalizeAt.IsZero() {
		c.finalizeAt = now
	}
	if c.finalizeWait.IsZero() {
		c.finalizeWait = now
	}
	if sess := c.live(); sess != nil {
		c.cmds = append(c.cmds, sttCmd{kind: sttFinalize, sess: sess})
	}
}

// onCallerEnd handles the end of the caller's side.
func (c *sttCore) onCallerEnd(err error, now time.Time) {
	switch {
	case !errors.Is(err, io.EOF):
		c.finish(err, false)
	case c.phase == phaseConfig:
		c.fail(invalid("config", "the stream ended before a config message"))
	default:
		c.endAudio(now)
	}
}

// endAudio tells SLNG, once, that no more audio comes; SLNG then sends its
// last finals and closes.
func (c *sttCore) endAudio(now time.Time) {
	if c.closing {
		return
	}
	c.flushConv()
	c.closing, c.closedAt = true, now
	if c.finalizeAt.IsZero() {
		c.finalizeAt = now
	}
	if sess := c.live(); sess != nil {
		c.cmds = append(c.cmds, sttCmd{kind: sttCloseSend, sess: sess})
	}
}

// onDrain tells the caller that the server is shutting down, then ends the
// audio so that SLNG finalizes what it heard.
func (c *sttCore) onDrain(now time.Time) {
	if c.phase == phaseConfig {
		c.finish(errDraining, false)
		return
	}
	c.emit(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Draining{
		Draining: &speechv1.ServerDraining{Grace: durationOrNil(c.srv.cfg.DrainGrace)}}})
	c.draining = true
	c.endAudio(now)
}

// onResult handles the writer's report.
func (c *sttCore) onResult(r sttResult, now time.Time) {
	switch {
	case r.lease != nil && c.done:
		r.lease.Session.CloseNow()
		r.lease.release(c.err, false)
	case r.lease != nil:
		c.onAcquired(r.lease, now)
	case r.sess == nil:
		c.dialling = false
		if c.replacing != nil && c.replacing.cause != nil {
			c.fail(c.failHere(c.replacing.cause))
			return
		}
		c.fail(r.err)
	case c.lease == nil || r.sess != c.lease.Session || writeRecoverable(r.err) || c.recoverable(r.err):
		// The session's end, read from its events, decides.
	default:
		c.fail(r.err)
	}
}

// onAcquired takes the session the writer acquired. A replacement hears
// again the audio no final covers, with every pending finalize at its
// place, and the end of the audio if it came; its transcripts' offsets
// count from where that audio starts.
func (c *sttCore) onAcquired(l *upstreamLease[STTSession], now time.Time) {
	c.dialling = false
	sess := l.Session
	c.lease = l
	c.heard = false
	c.meta.upstreamSessionID, c.meta.upstreamRequestID = sess.ID(), sess.RequestID()
	if c.phase == phaseOpening {
		c.phase = phaseRunning
		c.emit(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Started{Started: &speechv1.RecognitionStarted{
			SessionId:         c.meta.sessionID,
			UpstreamSessionId: sess.ID(),
			UpstreamRequestId: sess.RequestID(),
			Config:            c.cfg,
			UpstreamFormat:    c.up,
			Conversions:       c.conv.conversions(),
			Limits:            c.srv.limits(),
			WarmSession:       l.Warm,
			CallerId:          c.usage.caller,
		}}})
		c.replayTo(sess) // what the caller sent meanwhile
		if len(c.finalizes) > 0 {
			c.finalizeWait = now
		}
		return
	}
	audio, start, overflow := c.replay.snapshot()
	r := c.replacing
	c.replacing = nil
	if overflow && r != nil && r.cause != nil {
		// Audio came in while the session was replaced, more than the
		// replay buffer holds.
		c.fail(c.failHere(r.cause))
		return
	}
	c.base, c.baseOff = c.clock.duration(start), start
	replayed := c.clock.duration(int64(len(audio)))
	if len(c.finalizes) > 0 {
		c.finalizeWait = now // the new session hears them again
	}
	c.dedupe = append(c.dedupe[:0], c.unproven...)
	c.fragmentCheck = len(c.dedupe) > 0
	c.replayTo(sess)
	if r == nil {
		return
	}
	reason := reconnectReason(r.cause)
	c.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", r.cause),
		zap.String("previous_upstream_session_id", r.prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Duration("replayed", replayed))
	c.srv.metrics.reconnect("stt", reason)
	c.emit(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Reconnected{
		Reconnected: &speechv1.UpstreamReconnected{
			Reason:                    reason,
			PreviousUpstreamSessionId: r.prevID,
			UpstreamSessionId:         sess.ID(),
			AudioReplayed:             durationpb.New(replayed),
			Gap:                       durationpb.New(now.Sub(r.failedAt)),
			WarmSession:               l.Warm,
		}}})
}

// replayTo queues for sess the audio kept since the covered offset, with
// the pending finalizes at their places and the end of the audio if it
// came.
func (c *sttCore) replayTo(sess STTSession) {
	audio, start, _ := c.replay.snapshot()
	cmd := sttCmd{kind: sttReplay, sess: sess, audio: audio, closeSend: c.closing}
	for _, f := range c.finalizes {
		cmd.marks = append(cmd.marks, max(f-start, 0))
	}
	if len(audio) > 0 || len(cmd.marks) > 0 || cmd.closeSend {
		c.cmds = append(c.cmds, cmd)
	}
}

// recoverable reports whether a failure of the upstream session can be
// survived by replacing it: the stream's audio can be replayed, and the
// failure is SLNG's (or the caller's pace) rather than the request's.
func (c *sttCore) recoverable(err error) bool {
	if !c.clock.ok() || c.replay.max <= 0 {
		return false
	}
	var held *slngclient.HeldBackError
	if errors.Is(err, errUpstreamClosedEarly) || errors.Is(err, errFinalizeUnanswered) || errors.As(err, &held) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && ue.Class().Retryable
}

// failHere attaches where the stream's transcripts stopped to err.
func (c *sttCore) failHere(err error) error {
	return withMetadata(err, map[string]string{"last_final_end_offset_ms": strconv.FormatInt(c.prevFinalEnd.Milliseconds(), 10)})
}

// configure validates cfg and fills in the effective configuration, the
// endpoint and SLNG's init config.
func (c *sttCore) configure(cfg *speechv1.RecognitionConfig) error {
	s := c.srv
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
	eff.Format = formatWithDefaults(eff.Format, defaultSTTSampleRate)
	if eff.Format.GetChannels() > 1 && !convertible(eff.Format.GetEncoding()) {
		v.add("config.format.channels", "the gateway mixes channels of LINEAR16, MULAW and ALAW audio: %s must be mono", eff.Format.GetEncoding())
	}
	// The catalog is SLNG's: it is asked about what goes up (for G.711,
	// the LINEAR16 the gateway decodes it into).
	up := s.checkCatalog(&v, eff.Model, "", eff.Format, true)
	if err := v.err(); err != nil {
		return err
	}
	conv, err := newSTTConv(eff.Format, up)
	if err != nil {
		return err
	}
	c.cfg, c.up, c.conv = eff, up, conv
	c.ep = slngclient.Endpoint{Model: eff.Model}
	c.sttCfg = slngclient.STTConfig{
		Language:             eff.Language,
		Encoding:             encodingNames[up.Encoding],
		SampleRate:           int(up.SampleRateHz),
		EnablePartials:       eff.EnablePartials,
		EnableVAD:            eff.EnableVad,
		EnableDiarization:    eff.EnableDiarization,
		MinSpeakers:          int(eff.MinSpeakers),
		MaxSpeakers:          int(eff.MaxSpeakers),
		EnableWordTimestamps: eff.EnableWordTimestamps,
		Extra:                opts,
	}
	return nil
}

// transcribedAudio is the audio the caller sent, for uncompressed
// encodings; 0 for compressed ones.
func (c *sttCore) transcribedAudio() time.Duration {
	if c.conv != nil {
		return c.conv.clock.duration(c.conv.received)
	}
	if !c.clock.ok() {
		return 0
	}
	return c.clock.duration(c.sent)
}
