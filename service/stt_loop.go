package service

import (
	"context"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Transcribe implements SpeechToTextService.Transcribe.
func (s *Server) Transcribe(stream speechv1.SpeechToTextService_TranscribeServer) error {
	const rpc = "Transcribe"
	ctx := stream.Context()
	st, err := s.startStream(ctx, speechv1.SpeechToTextService_ServiceDesc.ServiceName, rpc)
	if err != nil {
		return err
	}
	defer st.release()
	c := newSTTCore(s, st.log, st.meta, st.usage, st.callerKey, s.cfg.Clock.Now())
	err = s.runSTT(ctx, c, stream)
	err = s.finish(ctx, rpc, err, c.meta, st.log)
	st.usage.end(st.log, c.meta.model, 0, c.transcribedAudio(), err)
	return err
}

// runSTT is runSynth for a Transcribe stream. A used STT session is never
// reused: the half-close ends it.
func (s *Server) runSTT(ctx context.Context, c *sttCore, stream speechv1.SpeechToTextService_TranscribeServer) error {
	// One request for the whole stream, as Recv would allocate one per
	// chunk: Unmarshal resets it and gives every chunk a new Audio slice,
	// which the loop and the writer keep.
	req := new(speechv1.TranscribeRequest)
	recv := func() (sttIn, error) {
		if err := stream.RecvMsg(req); err != nil {
			return sttIn{}, err
		}
		return sttInOf(req), nil
	}
	w := newSTTWriter(c)
	runStream(ctx, s, c, recv, stream.Send, nil, w.cmds, w.results, w.run, func() bool {
		if lease := c.lease; lease != nil {
			lease.Session.CloseNow() // also ends a write blocked on it
		}
		return false
	})
	if lease := c.lease; lease != nil {
		lease.release(c.err, false)
	}
	return c.err
}

// sttInOf is what the loop needs of a request.
func sttInOf(req *speechv1.TranscribeRequest) sttIn {
	switch r := req.GetRequest().(type) {
	case *speechv1.TranscribeRequest_Config:
		return sttIn{config: r.Config}
	case *speechv1.TranscribeRequest_Audio:
		return sttIn{audio: r.Audio, hasAudio: true}
	case *speechv1.TranscribeRequest_Finalize:
		return sttIn{finalize: true}
	}
	return sttIn{}
}

// The rest makes sttCore a streamCore.

func (c *sttCore) onCallerMsg(m callerMsg[sttIn], now time.Time) {
	dispatch(c.phase, m, now, c.onFirst, c.onCaller, c.onCallerEnd)
}

// reading: a nil session converts to a nil eventSource.
func (c *sttCore) reading() eventSource[slngclient.STTEvent] { return c.session() }

// midFrame: an STT frame is one event.
func (c *sttCore) midFrame() bool { return false }

// setPaused: a Transcribe stream has no turn watchdog to hold.
func (c *sttCore) setPaused(bool, time.Time) {}

func (c *sttCore) carry(ob *outbox[*speechv1.TranscribeResponse], cmds *mailbox[sttCmd]) (pushed, over bool) {
	for i, r := range c.out {
		over = ob.push(r, controlBytes)
		c.out[i] = nil
	}
	pushed = len(c.out) > 0
	c.out = c.out[:0]
	putAll(&c.cmds, cmds)
	return pushed, over
}
