package service

import (
	"context"
)

// sttWriter is a Transcribe stream's upstream writer, as ttsWriter is for
// Synthesize: the only goroutine that dials and writes to the stream's
// SLNG sessions, in the order the loop queued the commands.
type sttWriter struct {
	c       *sttCore // read-only here: ep, sttCfg, clock and usage, set before the first acquire
	cmds    *mailbox[sttCmd]
	results chan sttResult // unbuffered, as ttsWriter's
	// joined is the writer's buffer for coalesced audio.
	joined []byte
}

func newSTTWriter(c *sttCore) *sttWriter {
	return &sttWriter{c: c, cmds: newMailbox[sttCmd](maxWriterQueue), results: make(chan sttResult)}
}

// run carries out the commands until the mailbox is closed.
func (w *sttWriter) run(ctx context.Context) {
	s := w.c.srv
	// Audio goes up without a cancellable context: with one,
	// coder/websocket registers a context.AfterFunc for every frame
	// written. A write blocked on a full socket still ends: the loop closes
	// the session before it waits for the writer, and unanswered pings
	// close it too.
	audioCtx := context.WithoutCancel(ctx)
	var next sttCmd
	held := false
	for {
		cmd := next
		if held {
			held = false
		} else {
			var ok bool
			if cmd, ok = w.cmds.take(); !ok {
				return
			}
		}
		var err error
		switch cmd.kind {
		case sttAcquire:
			c := w.c
			lease, aerr := acquireLease(ctx, s, "stt", c.usage, c.ep, func(ctx context.Context) (Lease[STTSession], error) {
				return s.upstream.AcquireSTT(ctx, AcquireRequest{Endpoint: c.ep, Purpose: cmd.purpose}, c.sttCfg)
			})
			report(ctx, w.results, sttResult{lease: lease, err: aerr}, lease)
			continue
		case sttAudio:
			audio := cmd.audio
			var joined []byte
			joined, next, held = w.coalesce(cmd)
			if len(joined) > 0 {
				audio = joined
			}
			err = cmd.sess.SendAudio(audioCtx, audio)
		case sttFinalize:
			err = cmd.sess.Finalize(ctx)
		case sttCloseSend:
			err = cmd.sess.CloseSend(ctx)
		case sttReplay:
			err = w.replay(ctx, cmd)
		}
		if err != nil {
			report[STTSession](ctx, w.results, sttResult{sess: cmd.sess, err: err}, nil)
		}
	}
}

// coalesce joins to first the audio commands for the same session already
// queued behind it, while the frame stays within 100 ms of audio: when the
// writer has fallen behind the caller, the chunks waiting cost one frame
// and one write upstream instead of one each. It returns nothing joined
// when nothing was queued (first is sent as it is), and the first command
// it took but could not join, which the writer handles next. Only PCM is
// joined: its byte stream is the same however it is framed, which a
// compressed format's framing need not be.
func (w *sttWriter) coalesce(first sttCmd) (joined []byte, next sttCmd, held bool) {
	clock := w.c.clock
	limit := int(clock.rate / 10)
	if !clock.ok() || len(first.audio) >= limit {
		return nil, sttCmd{}, false
	}
	buf := w.joined[:0]
	for {
		cmd, ok := w.cmds.tryTake()
		if !ok {
			w.joined = buf
			return buf, sttCmd{}, false
		}
		size := len(buf)
		if size == 0 {
			size = len(first.audio)
		}
		if cmd.kind != sttAudio || cmd.sess != first.sess || size+len(cmd.audio) > limit {
			w.joined = buf
			return buf, cmd, true
		}
		if len(buf) == 0 {
			buf = append(buf, first.audio...)
		}
		buf = append(buf, cmd.audio...)
	}
}

// replay sends a new session the audio no final covers, in 100 ms frames
// as a live caller sends it, with each pending finalize at its offset,
// then the end of the audio if it came. A failed write ends the replay:
// the session's end follows.
func (w *sttWriter) replay(ctx context.Context, cmd sttCmd) error {
	chunk := max(int(w.c.clock.rate/10), 1)
	audio, marks := cmd.audio, cmd.marks
	var off int64
	for len(audio) > 0 || len(marks) > 0 {
		if len(marks) > 0 && marks[0] <= off {
			if err := cmd.sess.Finalize(ctx); err != nil {
				return err
			}
			marks = marks[1:]
			continue
		}
		n := min(chunk, len(audio))
		if len(marks) > 0 {
			n = min(n, int(marks[0]-off))
		}
		if n == 0 {
			break // a mark past the audio: it goes out below
		}
		if err := cmd.sess.SendAudio(ctx, audio[:n]); err != nil {
			return err
		}
		audio, off = audio[n:], off+int64(n)
	}
	for range marks {
		if err := cmd.sess.Finalize(ctx); err != nil {
			return err
		}
	}
	if cmd.closeSend {
		return cmd.sess.CloseSend(ctx)
	}
	return nil
}
