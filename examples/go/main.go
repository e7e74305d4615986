// Command go-example calls speech-gateway with the generated Go stubs: the
// catalog of the models and voices it may use, a bidi Synthesize session
// of two turns, a Transcribe of that audio, and an error decoded from its
// google.rpc details.
//
// It is a module of its own that depends on the API module
// (github.com/speech-gateway/speech-gateway/gen) only, as a caller's would;
// go.mod replaces it with ../../gen so that it builds against this checkout.
// Its grpc and protobuf are the API module's floors, which shows they work.
//
//	cd examples/go && go run . --addr localhost:50051
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"slices"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// serviceConfig retries UNAVAILABLE for SynthesizeText only: gRPC retries a
// stream only before its first response, so no audio repeats.
const serviceConfig = `{"methodConfig": [{
  "name": [{"service": "slng.speech.v1.TextToSpeechService", "method": "SynthesizeText"}],
  "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.5s", "maxBackoff": "5s",
                  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

func main() {
	addr := flag.String("addr", "localhost:50051", "the gateway")
	flag.Parse()
	if err := run(*addr); err != nil {
		log.Fatal(err)
	}
	fmt.Println("go example: ok")
}

func run(addr string) error {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		// The server accepts pings every 10 s or more.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Fixed windows (both, or grpc-go falls back to 64 KiB for the
		// other) turn off bandwidth-delay estimation, whose pings would
		// follow every few audio chunks.
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(16<<20))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := listCatalog(ctx, speechv1.NewCatalogServiceClient(conn)); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}

	turns := []string{"Hello from Go.", "A second turn on the same stream."}
	format := &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000}
	audio, err := synthesize(ctx, speechv1.NewTextToSpeechServiceClient(conn), format, turns)
	if err != nil {
		return fmt.Errorf("synthesize: %w", err)
	}
	finals, err := transcribe(ctx, speechv1.NewSpeechToTextServiceClient(conn), format, audio)
	if err != nil {
		return fmt.Errorf("transcribe: %w", err)
	}
	fmt.Println("transcribed:", finals)
	if !slices.Equal(finals, turns) {
		return fmt.Errorf("transcribed %q, want %q", finals, turns)
	}

	// An invalid request: the status carries ErrorInfo and BadRequest.
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Printf("bad request: %s: %s\n", v.GetField(), v.GetDescription())
			}
		}
	}
	fmt.Println("error:", st.Code(), info.GetReason())
	if st.Code() != codes.InvalidArgument || info.GetReason() != "INVALID_REQUEST" {
		return fmt.Errorf("empty text: %v", st)
	}
	return nil
}

func synthesize(ctx context.Context, c speechv1.TextToSpeechServiceClient, format *speechv1.AudioFormat, turns []string) ([]byte, error) {
	stream, err := c.Synthesize(ctx)
	if err != nil {
		return nil, err
	}
	reqs := []*speechv1.SynthesizeRequest{{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{Format: format}}}}
	for _, t := range turns {
		reqs = append(reqs, &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: t, Flush: true}}})
	}
	for _, r := range reqs {
		if err := stream.Send(r); err != nil {
			break // Recv reports why
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var audio []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return audio, nil
		}
		if err != nil {
			return nil, err
		}
		switch {
		case m.GetStarted() != nil:
			fmt.Println("synthesis session", m.GetStarted().GetSessionId(), "warm:", m.GetStarted().GetWarmSession())
		case m.GetAudio() != nil:
			audio = append(audio, m.GetAudio().GetData()...)
		case m.GetAudioEnd() != nil:
			fmt.Println("turn", m.GetAudioEnd().GetTurnId(), "done:", m.GetAudioEnd().GetDelivered().GetAudioBytes(), "bytes")
		case m.GetTurnFailed() != nil:
			// The stream goes on with the next turn; this one produced no
			// complete audio. Here every turn must succeed.
			f := m.GetTurnFailed()
			return nil, fmt.Errorf("turn %d failed: %s %s: %s", f.GetTurnId(), codes.Code(f.GetCode()), f.GetReason(), f.GetMessage())
		}
	}
}

func transcribe(ctx context.Context, c speechv1.SpeechToTextServiceClient, format *speechv1.AudioFormat, audio []byte) ([]string, error) {
	stream, err := c.Transcribe(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{
		Config: &speechv1.RecognitionConfig{Format: format}}}); err != nil {
		return nil, err
	}
	const chunk = 3200 // 100 ms at 16 kHz
	for off := 0; off < len(audio); off += chunk {
		if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{
			Audio: audio[off:min(off+chunk, len(audio))]}}); err != nil {
			break
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var finals []string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return finals, nil
		}
		if err != nil {
			return nil, err
		}
		if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
			finals = append(finals, f.GetText())
		}
	}
}

// listCatalog prints the text-to-speech models the gateway lets this
// caller use, and the English voices of its default one.
func listCatalog(ctx context.Context, c speechv1.CatalogServiceClient) error {
	resp, err := c.ListModels(ctx, &speechv1.ListModelsRequest{Kind: speechv1.ModelKind_MODEL_KIND_TTS})
	if err != nil {
		return err
	}
	var def *speechv1.ModelInfo
	for _, m := range resp.GetModels() {
		if m.GetGatewayDefault() {
			def = m
		}
	}
	if def == nil {
		return fmt.Errorf("no default among %d models", len(resp.GetModels()))
	}
	fmt.Printf("%d text-to-speech models; the default is %s, with %d voices\n", len(resp.GetModels()), def.GetModel(), len(def.GetVoices()))
	voices, err := c.ListVoices(ctx, &speechv1.ListVoicesRequest{Model: def.GetModel(), Language: "en"})
	if err != nil {
		return err
	}
	var ids []string
	for _, v := range voices.GetVoices() {
		ids = append(ids, v.GetVoiceId())
	}
	fmt.Printf("%d English voices (complete: %v), e.g. %s\n", len(ids), voices.GetComplete(), ids[0])
	if !slices.Contains(ids, def.GetDefaultVoice()) {
		return fmt.Errorf("the default voice %q is not among %q", def.GetDefaultVoice(), ids)
	}
	return nil
}
