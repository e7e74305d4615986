package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// floorFor serves the floor against a fresh simulator that accepts key
// "k"; the relay presents key. It returns a client connection and the
// simulator, whose sessions the test may read once stop has returned.
func floorFor(t *testing.T, key string) (conn *grpc.ClientConn, sim *slngsim.Server, stop func()) {
	t.Helper()
	sim, err := slngsim.Start(slngsim.Options{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{base: sim.URL(), header: http.Header{"Authorization": {"Bearer " + key}},
		ttsModel: "deepgram/aura:2", voice: "aura-2-thalia-en", sttModel: "deepgram/nova:3"}
	srv := newServer(r, 100, 256<<10, 4<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err = grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn, sim, func() {
		_ = conn.Close()
		srv.GracefulStop()
		<-served
		_ = sim.Close()
	}
}

// TestSynthesizeTextSpeaksTheProtocol: one turn through the floor is init,
// text, flush and close to SLNG, and started, the audio, flushed and
// audio_end to the caller.
func TestSynthesizeTextSpeaksTheProtocol(t *testing.T) {
	conn, sim, stop := floorFor(t, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Hello there."})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var audio []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch r := m.GetResponse().(type) {
		case *speechv1.SynthesizeResponse_Started:
			if r.Started.GetUpstreamSessionId() == "" {
				t.Error("started carries no upstream session id")
			}
			kinds = append(kinds, "started")
		case *speechv1.SynthesizeResponse_Audio:
			audio = append(audio, r.Audio.GetData()...)
		case *speechv1.SynthesizeResponse_Flushed:
			kinds = append(kinds, "flushed")
		case *speechv1.SynthesizeResponse_AudioEnd:
			kinds = append(kinds, "audio_end")
		}
	}
	stop()
	if want := []string{"started", "flushed", "audio_end"}; !slices.Equal(kinds, want) {
		t.Errorf("messages %v, want %v", kinds, want)
	}
	sessions := sim.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	s := sessions[0]
	if int64(len(audio)) != s.AudioBytesSent || len(audio) == 0 {
		t.Errorf("caller got %d bytes of audio, SLNG sent %d", len(audio), s.AudioBytesSent)
	}
	for _, typ := range []string{"init", "text", "flush", "close"} {
		if s.Received[typ] != 1 {
			t.Errorf("SLNG got %d %q messages, want 1 (all: %v)", s.Received[typ], typ, s.Received)
		}
	}
	if s.ProtocolErrors != 0 || s.TurnsCompleted != 1 {
		t.Errorf("protocol errors %d, turns %d; want 0 and 1", s.ProtocolErrors, s.TurnsCompleted)
	}
}

// TestTranscribeSpeaksTheProtocol: audio goes up as binary frames, the
// half-close as close, and every utterance's final comes back.
func TestTranscribeSpeaksTheProtocol(t *testing.T) {
	conn, sim, stop := floorFor(t, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		t.Fatal(err)
	}
	texts := []string{"First one.", "And the second."}
	var audio []byte
	for _, s := range texts {
		audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
	}
	for off := 0; off < len(audio); off += 640 {
		if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: audio[off:min(off+640, len(audio))]}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var finals []string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
			finals = append(finals, f.GetText())
		}
	}
	stop()
	if len(finals) != len(texts) {
		t.Errorf("finals %q, want one for each of %q", finals, texts)
	}
	s := sim.Sessions()[0]
	if s.AudioBytesHeard != int64(len(audio)) || s.Received["close"] != 1 || s.ProtocolErrors != 0 {
		t.Errorf("SLNG heard %d of %d bytes, %d close messages, %d protocol errors", s.AudioBytesHeard, len(audio), s.Received["close"], s.ProtocolErrors)
	}
}

// TestRefusedDialIsUnavailable: a handshake SLNG refuses ends the call
// with Unavailable rather than hanging or passing as success.
func TestRefusedDialIsUnavailable(t *testing.T) {
	conn, _, stop := floorFor(t, "wrong")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Hi."})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("got %v, want Unavailable", err)
	}
}
