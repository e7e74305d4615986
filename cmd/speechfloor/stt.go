package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// Transcribe takes the config from the first message, dials SLNG, then
// writes each audio message as a binary frame and sends each transcript
// back, until the caller half-closes (close goes to SLNG) and SLNG closes
// after its last final.
func (r *relay) Transcribe(stream grpc.BidiStreamingServer[speechv1.TranscribeRequest, speechv1.TranscribeResponse]) error {
	ctx := stream.Context()
	req := &speechv1.TranscribeRequest{}
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	cfg := req.GetConfig()
	model := r.sttModel
	if cfg.GetModel() != "" {
		model = cfg.GetModel()
	}
	config := map[string]any{"encoding": "linear16", "sample_rate": 16000,
		"enable_partials": cfg.GetEnablePartials(), "enable_vad": cfg.GetEnableVad()}
	if rate := cfg.GetFormat().GetSampleRateHz(); rate > 0 {
		config["sample_rate"] = rate
	}
	if cfg.GetLanguage() != "" {
		config["language"] = cfg.GetLanguage()
	}
	u, stop, err := r.dial(ctx, "stt", model, map[string]any{"type": "init", "config": config})
	if err != nil {
		return err
	}
	defer stop()
	defer u.ws.CloseNow()
	if err := stream.Send(&speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Started{
		Started: &speechv1.RecognitionStarted{UpstreamSessionId: u.id, Config: cfg}}}); err != nil {
		return err
	}
	// The down copy runs beside the up copy and is joined before the
	// handler returns: it ends when SLNG closes the socket, after its last
	// final, or when the socket is closed under it.
	down := make(chan error, 1)
	go func() {
		err := r.transcripts(u, stream)
		if err != nil {
			_ = u.ws.CloseNow() // so that the up copy's next write fails
		}
		down <- err
	}()
	up := r.audio(ctx, u, stream, req)
	if up != nil {
		_ = u.ws.CloseNow()
	}
	if err := <-down; err != nil && up == nil {
		return err
	}
	return up
}

// audio copies the caller's messages to SLNG until the caller half-closes.
func (r *relay) audio(ctx context.Context, u *upstream, stream grpc.BidiStreamingServer[speechv1.TranscribeRequest, speechv1.TranscribeResponse], req *speechv1.TranscribeRequest) error {
	for {
		err := stream.RecvMsg(req)
		if errors.Is(err, io.EOF) {
			return ended(u.ws.Write(ctx, websocket.MessageText, msgClose))
		}
		if err != nil {
			return err
		}
		switch m := req.GetRequest().(type) {
		case *speechv1.TranscribeRequest_Audio:
			// No cancellable context per chunk, for the same reason as
			// reads; the socket is closed to end a blocked write.
			err = u.ws.Write(context.Background(), websocket.MessageBinary, m.Audio)
		case *speechv1.TranscribeRequest_Finalize:
			err = u.ws.Write(ctx, websocket.MessageText, msgFinalize)
		}
		if err != nil {
			return ended(err)
		}
	}
}

// transcripts copies SLNG's transcripts to the caller until SLNG closes.
func (r *relay) transcripts(u *upstream, stream grpc.BidiStreamingServer[speechv1.TranscribeRequest, speechv1.TranscribeResponse]) error {
	for {
		typ, err := u.read()
		if err != nil {
			return ended(err)
		}
		var c control
		if typ != websocket.MessageText || json.Unmarshal(u.buf.Bytes(), &c) != nil {
			continue
		}
		t := &speechv1.Transcript{Text: c.Transcript, Confidence: c.Confidence, Language: c.Language}
		var m *speechv1.TranscribeResponse
		switch c.Type {
		case "final_transcript":
			m = &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_FinalTranscript{FinalTranscript: t}}
		case "partial_transcript":
			m = &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_PartialTranscript{PartialTranscript: t}}
		case "error":
			return status.Errorf(codes.Unavailable, "SLNG: %s: %s", c.Code, c.Message)
		default:
			continue
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}
