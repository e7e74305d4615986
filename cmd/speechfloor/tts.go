package main

import (
	"encoding/json"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// SynthesizeText speaks req's text in one turn: init, ready, text, flush,
// then every binary frame to the caller as audio until audio_end.
func (r *relay) SynthesizeText(req *speechv1.SynthesizeTextRequest, stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse]) error {
	ctx := stream.Context()
	cfg := req.GetConfig()
	model, voice := r.ttsModel, r.voice
	if cfg.GetModel() != "" {
		model, voice = cfg.GetModel(), cfg.GetVoice()
	}
	config := map[string]any{"encoding": "linear16", "sample_rate": 24000}
	if rate := cfg.GetFormat().GetSampleRateHz(); rate > 0 {
		config["sample_rate"] = rate
	}
	u, stop, err := r.dial(ctx, "tts", model, map[string]any{"type": "init", "model": model, "voice": voice, "config": config})
	if err != nil {
		return err
	}
	defer stop()
	defer u.close()
	if err := stream.Send(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Started{
		Started: &speechv1.SynthesisStarted{UpstreamSessionId: u.id, Config: cfg}}}); err != nil {
		return err
	}
	text, _ := json.Marshal(map[string]string{"type": "text", "text": req.GetText()})
	if err := u.ws.Write(ctx, websocket.MessageText, text); err != nil {
		return ended(err)
	}
	if err := u.ws.Write(ctx, websocket.MessageText, msgFlush); err != nil {
		return ended(err)
	}
	// One response for the whole stream: Send has marshalled it when it
	// returns, so the read buffer and the message are reused per chunk.
	chunk := &speechv1.AudioChunk{}
	audio := &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Audio{Audio: chunk}}
	for {
		typ, err := u.read()
		if err != nil {
			// Some routes end a turn by closing normally: that is its end.
			return ended(err)
		}
		if typ == websocket.MessageBinary {
			chunk.Data = u.buf.Bytes()
			chunk.Sequence++
			if err := stream.Send(audio); err != nil {
				return err
			}
			continue
		}
		var c control
		if json.Unmarshal(u.buf.Bytes(), &c) != nil {
			continue
		}
		switch c.Type {
		case "flushed":
			err = stream.Send(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Flushed{Flushed: &speechv1.Flushed{}}})
		case "audio_end":
			return stream.Send(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_AudioEnd{AudioEnd: &speechv1.AudioEnd{}}})
		case "error":
			return status.Errorf(codes.Unavailable, "SLNG: %s: %s", c.Code, c.Message)
		}
		if err != nil {
			return err
		}
	}
}
