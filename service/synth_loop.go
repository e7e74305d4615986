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
	c := newSynthCore(s, st.log, st.meta, st.usage, st.callerKey, rpc == "SynthesizeText", time.Now())
	err = s.runSynth(ctx, c, recv, send)
	err = s.finish(ctx, rpc, err, c.meta, st.log)
	st.usage.end(st.log, c.meta.model, c.synthesizedAudio(), 0, err)
	return err
}

// runSynth runs the stream's goroutines and its loop, and returns how the
// stream ended once the writer has stopped and the session is given back.
// The caller's reader and sender are not waited for: each ends with the
// RPC (Server.Wait joins them).
func (s *Server) runSynth(ctx context.Context, c *synthCore, recv func() (*speechv1.SynthesizeRequest, error),
	send func(*speechv1.SynthesizeResponse) error) error {
	stop := make(chan struct{})
	defer close(stop)
	in := make(chan callerMsg[*speechv1.SynthesizeRequest], callerQueue)
	readCaller(s, recv, in, stop)

	w := newTTSWriter(c)
	ob := newOutbox(s.cfg.StreamBufferBytes, &s.metrics.buffered, s.cfg.BufferBytes, reusableChunk)
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		ob.send(send)
	}()
	defer ob.close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	written := make(chan struct{})
	go func() {
		defer close(written)
		w.run(wctx)
	}()

	l := &streamLoop[*speechv1.SynthesizeRequest, slngclient.TTSEvent, ttsResult, *speechv1.SynthesizeResponse, ttsCmd]{
		s: s, core: c, ob: ob, cmds: w.cmds, results: w.results}
	l.run(ctx, in)

	// The session goes back to the pool, or is closed: gracefully when
	// every turn is delivered, at once otherwise (which also ends a write
	// blocked on it).
	keep := c.reusable()
	if lease := c.lease; lease != nil && !keep {
		if c.err == nil {
			closeCtx, cancelClose := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CloseTimeout)
			_ = lease.Session.Close(closeCtx)
			cancelClose()
		}
		lease.Session.CloseNow()
	}
	if keep {
		// The writer's last write is on the wire, but its goroutine may
		// not have returned from it yet: coder/websocket closes a
		// connection whose write's context ends, so the writer finishes
		// before its context does.
		w.cmds.close()
		<-written
	}
	cancel()
	w.cmds.close()
	<-written
	if lease := c.lease; lease != nil {
		lease.release(c.err, keep)
	}
	return c.err
}

// The rest makes synthCore a streamCore.

func (c *synthCore) onCallerMsg(m callerMsg[*speechv1.SynthesizeRequest], now time.Time) {
	switch {
	case m.err != nil:
		c.onCallerEnd(m.err, now)
	case c.phase == phaseConfig:
		c.onFirst(m.msg, now)
	default:
		c.onCaller(m.msg, now)
	}
}

func (c *synthCore) reading() eventSource[slngclient.TTSEvent] {
	if sess := c.session(); sess != nil {
		return sess
	}
	return nil
}

func (c *synthCore) ended() (done, drainOut bool) { return c.done, c.drainOut }

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
	for i := range c.cmds {
		cmds.put(c.cmds[i])
		c.cmds[i] = ttsCmd{}
	}
	c.cmds = c.cmds[:0]
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
