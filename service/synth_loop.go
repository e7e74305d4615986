package service

import (
	"context"
	"io"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// ttsServiceName is the full name of TextToSpeechService, for logs.
var ttsServiceName = speechv1.TextToSpeechService_ServiceDesc.ServiceName

// Synthesize implements TextToSpeechService.Synthesize.
func (s *Server) Synthesize(stream speechv1.TextToSpeechService_SynthesizeServer) error {
	return s.synthesize(stream.Context(), "Synthesize", stream.Recv, stream.Send)
}

// SynthesizeText implements TextToSpeechService.SynthesizeText as a
// Synthesize stream of one flushed text followed by a half-close.
func (s *Server) SynthesizeText(req *speechv1.SynthesizeTextRequest, stream speechv1.TextToSpeechService_SynthesizeTextServer) error {
	if err := s.checkText("text", req.GetText()); err != nil {
		id, log := s.streamLogger(stream.Context(), ttsServiceName, "SynthesizeText")
		return s.finish(stream.Context(), "SynthesizeText", err, streamMeta{sessionID: id}, log)
	}
	cfg := req.GetConfig()
	if cfg == nil {
		cfg = &speechv1.SynthesisConfig{}
	}
	msgs := []*speechv1.SynthesizeRequest{
		{Request: &speechv1.SynthesizeRequest_Config{Config: cfg}},
		{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: req.GetText(), Flush: true}}},
	}
	recv := func() (*speechv1.SynthesizeRequest, error) {
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
	return s.synthesize(stream.Context(), "SynthesizeText", recv, stream.Send)
}

func (s *Server) synthesize(ctx context.Context, rpc string, recv func() (*speechv1.SynthesizeRequest, error),
	send func(*speechv1.SynthesizeResponse) error) error {
	st, err := s.startStream(ctx, ttsServiceName, rpc)
	if err != nil {
		return err
	}
	defer st.release()
	c := newSynthCore(s, st.log, st.meta, st.usage, st.callerKey, rpc == "SynthesizeText", s.cfg.Clock.Now())
	err = s.runSynth(ctx, c, recv, send)
	err = s.finish(ctx, rpc, err, c.meta, st.log)
	st.usage.end(st.log, c.meta.model, c.synthesizedAudio(), 0, err)
	return err
}

// runSynth runs the stream (see runStream) and returns how it ended, once
// its session is given back.
func (s *Server) runSynth(ctx context.Context, c *synthCore, recv func() (*speechv1.SynthesizeRequest, error),
	send func(*speechv1.SynthesizeResponse) error) error {
	w := newTTSWriter(c)
	keep := false
	runStream(ctx, s, c, recv, send, reusableChunk, w.cmds, w.results, w.run, func() bool {
		// The session goes back to the pool, or is closed: gracefully
		// when every turn is delivered, at once otherwise (which also
		// ends a write blocked on it).
		keep = c.reusable()
		if lease := c.lease; lease != nil && !keep {
			if c.err == nil {
				closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CloseTimeout)
				_ = lease.Session.Close(closeCtx)
				cancel()
			}
			lease.Session.CloseNow()
		}
		return keep
	})
	if lease := c.lease; lease != nil {
		lease.release(c.err, keep)
	}
	// A session rolled over from that the writer did not get to close
	// before the stream ended is closed all the same.
	for _, cmd := range w.cmds.rest() {
		if cmd.kind == cmdClose {
			s.closeBeside(ctx, cmd.lease)
		}
	}
	return c.err
}

// The rest makes synthCore a streamCore.

func (c *synthCore) onCallerMsg(m callerMsg[*speechv1.SynthesizeRequest], now time.Time) {
	dispatch(c.phase, m, now, c.onFirst, c.onCaller, c.onCallerEnd)
}

// reading: a nil session converts to a nil eventSource.
func (c *synthCore) reading() eventSource[slngclient.TTSEvent] { return c.session() }

// midFrame: the session that sent a frame's first events is still the
// one read (an event may have retired it).
func (c *synthCore) midFrame() bool {
	return c.frameFrom != nil && c.frameFrom == c.session()
}

// carry queues the responses, copying audio into responses of the
// stream's own, and the commands.
func (c *synthCore) carry(ob *outbox[*speechv1.SynthesizeResponse], cmds *mailbox[ttsCmd]) (pushed, over bool) {
	for i := range c.out {
		o := &c.out[i]
		if o.resp != nil {
			over = ob.push(o.resp, controlBytes)
		} else {
			r, ok := ob.reuse()
			if !ok {
				r = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{}}}
			}
			chunk := r.GetAudio()
			chunk.Data = append(chunk.Data[:0], o.audio...)
			chunk.Sequence, chunk.TurnId = o.seq, o.turn
			over = ob.push(r, len(o.audio))
		}
		*o = synthOut{}
	}
	pushed = len(c.out) > 0
	c.out = c.out[:0]
	putAll(&c.cmds, cmds)
	return pushed, over
}

// controlBytes is what a response other than audio counts for in the
// outbox's bounds.
const controlBytes = 64

// reusableChunk reports a sent audio response whose buffer is worth
// keeping for the next chunk.
func reusableChunk(r *speechv1.SynthesizeResponse) bool {
	a := r.GetAudio()
	return a != nil && cap(a.Data) <= maxKeptChunk
}

// maxKeptChunk is the largest audio buffer kept for reuse.
const maxKeptChunk = 64 << 10
