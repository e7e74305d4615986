package service

import (
	"strings"
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestUndecodableAudioIsAWarning: audio SLNG sent that could not be
// decoded reaches the caller as a warning (undecodable_audio) where it
// came, is counted, and fails neither the turn nor the stream: the audio
// around it is delivered and the turn ends as usual.
func TestUndecodableAudioIsAWarning(t *testing.T) {
	t.Parallel()
	sess := newFakeTTS("one")
	h := newFakeHarness(t, []*fakeTTS{sess}, nil)
	ctx := testContext(t)
	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*speechv1.SynthesizeRequest{
		{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}},
		{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: "One.", Flush: true}}},
	} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return len(sess.sentList()) == 2 }, "the turn upstream")
	sess.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: pcm(960, 1)})
	sess.send(slngclient.TTSEvent{Kind: slngclient.TTSUndecodableAudio})
	sess.speakTurn(pcm(960, 2))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	out, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatalf("the stream failed: %v", err)
	}
	var got []string
	for _, r := range out {
		switch {
		case r.GetAudio() != nil:
			got = append(got, "audio")
		case r.GetWarning() != nil:
			got = append(got, "warning:"+r.GetWarning().GetCode())
		case r.GetAudioEnd() != nil:
			got = append(got, "audio_end")
		}
	}
	if want := "audio warning:undecodable_audio audio audio_end"; strings.Join(got, " ") != want {
		t.Fatalf("responses %q, want %q", strings.Join(got, " "), want)
	}
	if n := h.counter(t, "speech_gateway_upstream_protocol_violations_total", map[string]string{"kind": "tts", "violation": "undecodable_audio"}); n != 1 {
		t.Fatalf("undecodable_audio violations = %v, want 1", n)
	}
}
