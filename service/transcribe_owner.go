package service

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// sttOp is a request to a Transcribe stream's upstream owner (see own).
type sttOp struct {
	kind  sttOpKind
	audio []byte // opAudio
	// cause is why the session ended, nil for a rollover (opReplace).
	cause error
	reply chan replacement // opReplace
}

type sttOpKind uint8

const (
	opAudio sttOpKind = iota
	opFinalize
	opEndAudio
	opReplace
)

// sttOpQueue bounds the requests waiting for the owner: about 160 ms of
// audio in 20 ms chunks. A full queue holds the up pump back, and through
// it the caller's HTTP/2 flow control.
const sttOpQueue = 8

// replacement is the owner's answer to opReplace: the new session and the
// Reconnected response for the caller, or why there is none.
type replacement struct {
	sess STTSession
	resp *speechv1.TranscribeResponse
	err  error
}

// ask queues a request for the owner.
func (tr *transcription) ask(ctx context.Context, op sttOp) error { return offer(ctx, tr.ops, op) }

// own is the stream's upstream owner, the only goroutine that writes to,
// dials and replaces its upstream session, in the order the requests
// arrive. It ends when the stream does, or with a write error the stream
// cannot survive.
func (tr *transcription) own(ctx context.Context, sess STTSession) error {
	// Audio goes up without a cancellable context: with one, coder/websocket
	// registers a context.AfterFunc for every frame written. A write blocked
	// on a full socket still ends: runPumps closes the session (abort)
	// before it waits for the owner, and unanswered pings close it too.
	audioCtx := context.WithoutCancel(ctx)
	ended := false    // SLNG was told that no more audio comes
	var joined []byte // the owner's buffer for coalesced audio
	var held sttOp    // a request coalesce took but did not join
	hasHeld := false
	for {
		var op sttOp
		if hasHeld {
			op, hasHeld = held, false
		} else {
			select {
			case op = <-tr.ops:
			case <-ctx.Done():
				return nil
			}
		}
		var err error
		switch op.kind {
		case opAudio:
			if ended {
				continue // draining: the upstream takes no more audio
			}
			audio := op.audio
			joined, held, hasHeld = tr.coalesce(joined[:0], audio)
			if len(joined) > 0 {
				audio = joined
			}
			tr.replay.add(audio)
			tr.sent.Add(int64(len(audio)))
			err = sess.SendAudio(audioCtx, audio)
			tr.srv.metrics.recognizedBytes.Add(float64(len(audio)))
		case opFinalize:
			if !ended {
				err = sess.Finalize(ctx)
			}
		case opEndAudio:
			if !ended {
				ended = true
				// An error here shows up as the down pump's Recv error.
				_ = sess.CloseSend(ctx)
			}
		case opReplace:
			var audio []byte
			var r replacement
			r, audio = tr.replace(ctx, op.cause)
			op.reply <- r // buffered
			if r.err == nil {
				sess = r.sess
				tr.replayTo(ctx, sess, audio, ended)
			}
		}
		if err != nil && !tr.recoverable(err) {
			return err
		}
	}
}

// coalesce joins to first the audio requests already queued behind it,
// into buf, while the frame stays within maxJoined: when the owner has
// fallen behind the caller, the chunks waiting cost one frame and one
// write upstream instead of one each. It returns buf empty when nothing
// was queued (first is sent as it is), and the first request it took but
// could not join, which the owner handles next. Only PCM is joined: its
// byte stream is the same however it is framed, which a compressed
// format's framing need not be.
func (tr *transcription) coalesce(buf, first []byte) (joined []byte, held sttOp, hasHeld bool) {
	limit := int(tr.clock.rate / 10) // 100 ms, the size of replayTo's frames
	if !tr.clock.ok() || len(first) >= limit {
		return buf, sttOp{}, false
	}
	for {
		var op sttOp
		select {
		case op = <-tr.ops:
		default:
			return buf, sttOp{}, false
		}
		size := len(buf)
		if size == 0 {
			size = len(first)
		}
		if op.kind != opAudio || size+len(op.audio) > limit {
			return buf, op, true
		}
		if len(buf) == 0 {
			buf = append(buf, first...)
		}
		buf = append(buf, op.audio...)
	}
}

// replace dials a new upstream session for the stream and makes it the
// current one; the old one is closed and released with cause. It returns
// the audio the new session must hear again: what followed the last final
// transcript. Offsets of the new session's transcripts are rebased to
// where that audio starts, so nothing is lost and nothing is transcribed
// twice.
func (tr *transcription) replace(ctx context.Context, cause error) (replacement, []byte) {
	failedAt := time.Now()
	lease, err := tr.acquire(slngpool.WithRollover(ctx))
	if err != nil {
		return replacement{err: err}, nil
	}
	sess := lease.Session
	audio, start, _ := tr.replay.snapshot()
	tr.mu.Lock()
	prevID := tr.meta.upstreamSessionID
	old := tr.lease
	tr.lease = lease
	tr.base = tr.clock.duration(start)
	tr.meta.upstreamSessionID, tr.meta.upstreamRequestID = sess.ID(), sess.RequestID()
	tr.mu.Unlock()
	old.Session.CloseNow()
	old.release(cause, false)

	reason := reconnectReason(cause)
	replayed := tr.clock.duration(int64(len(audio)))
	tr.log.Info("upstream session replaced", zap.String("reason", reason), zap.NamedError("cause", cause),
		zap.String("previous_upstream_session_id", prevID), zap.String("upstream_session_id", sess.ID()),
		zap.Duration("replayed", replayed))
	tr.srv.metrics.reconnect("stt", reason)
	return replacement{sess: sess, resp: &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Reconnected{
		Reconnected: &speechv1.UpstreamReconnected{
			Reason:                    reason,
			PreviousUpstreamSessionId: prevID,
			UpstreamSessionId:         sess.ID(),
			AudioReplayed:             durationpb.New(replayed),
			Gap:                       durationpb.New(time.Since(failedAt)),
			WarmSession:               lease.Warm,
		}}}}, audio
}

// replayTo sends a new session the audio after the last final, in 100 ms
// frames as a live caller sends it, then repeats a pending finalize and the
// end of audio. A failed write ends the replay: the down pump sees the
// session end and asks for another (bounded by maxReconnects).
func (tr *transcription) replayTo(ctx context.Context, sess STTSession, audio []byte, ended bool) {
	chunk := max(int(tr.clock.rate/10), 1)
	for len(audio) > 0 {
		n := min(chunk, len(audio))
		if err := sess.SendAudio(ctx, audio[:n]); err != nil {
			return
		}
		audio = audio[n:]
	}
	tr.mu.Lock()
	finalize := tr.finalizePending
	tr.mu.Unlock()
	if finalize {
		_ = sess.Finalize(ctx) // a failure shows up in Recv
	}
	if ended {
		_ = sess.CloseSend(ctx)
	}
}
