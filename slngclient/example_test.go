package slngclient_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// Speak one turn: dial a TTS session, send text with a flush, and read its
// audio until the route ends the turn. Routes end turns differently (with
// `flushed`, `audio_end`, or both); the first of them ends the turn.
func Example_synthesize() {
	sim, err := slngsim.Start(slngsim.Options{APIKey: "example-key"})
	if err != nil {
		panic(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	client, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), APIKey: "example-key"})
	if err != nil {
		panic(err)
	}
	sess, err := client.DialTTS(ctx, slngclient.Endpoint{Model: "deepgram/aura:2"},
		slngclient.TTSConfig{Voice: "aura-2-thalia-en", Encoding: "linear16", SampleRate: 24000})
	if err != nil {
		panic(err)
	}
	defer sess.CloseNow()

	if err := sess.Text(ctx, "Hello.", true); err != nil {
		panic(err)
	}
	var audio []byte
	for {
		ev, err := sess.Recv(ctx)
		if err != nil {
			panic(err)
		}
		if ev.Kind == slngclient.TTSAudio {
			audio = append(audio, ev.Audio...) // valid until the next Recv: copy it
		}
		if ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	text, _ := slngsim.Decode(audio, "linear16", 24000)
	fmt.Println(text)
	// Output: Hello.
}

// Transcribe audio: dial an STT session, send binary audio, say that no
// more comes, and read finals until SLNG closes the session.
func Example_transcribe() {
	sim, err := slngsim.Start(slngsim.Options{APIKey: "example-key"})
	if err != nil {
		panic(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	client, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), APIKey: "example-key"})
	if err != nil {
		panic(err)
	}
	sess, err := client.DialSTT(ctx, slngclient.Endpoint{Model: "deepgram/nova:3"},
		slngclient.STTConfig{Language: "en", Encoding: "linear16", SampleRate: 16000})
	if err != nil {
		panic(err)
	}
	defer sess.CloseNow()

	audio := slngsim.Synthesize("Testing, one two.", "linear16", 16000)
	for len(audio) > 0 {
		n := min(3200, len(audio)) // 100 ms frames
		if err := sess.SendAudio(ctx, audio[:n]); err != nil {
			panic(err)
		}
		audio = audio[n:]
	}
	if err := sess.CloseSend(ctx); err != nil {
		panic(err)
	}
	for {
		ev, err := sess.Recv(ctx)
		if err == io.EOF {
			break // SLNG sent its last finals and closed
		}
		if err != nil {
			panic(err)
		}
		if ev.Kind == slngclient.STTFinal && ev.Transcript.Text != "" {
			fmt.Println(ev.Transcript.Text)
		}
	}
	// Output: Testing, one two.
}
