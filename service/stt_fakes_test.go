package service

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Transcribe streams on the in-memory fakes: helpers for the tests of
// stt_test.go, resume_test.go and second_reading_test.go.

// pcmMs is n milliseconds of 16 kHz LINEAR16 audio, every byte b.
func pcmMs(n int, b byte) []byte { return pcm(32*n, b) }

// timedFinal is a final with a start and a duration, in the session's own
// time (from its first audio byte), as SLNG's Deepgram routes send.
func timedFinal(text string, start, d time.Duration) slngclient.STTEvent {
	return slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{
		Text: text, Start: start, HasStart: true, Duration: d, HasDuration: true}}
}

// wantTranscript is the Transcript the caller gets for a final of text at
// start-end in stream time.
func wantTranscript(text string, start, end time.Duration, estimated bool) *speechv1.Transcript {
	return &speechv1.Transcript{Text: text, StartOffset: durationpb.New(start), EndOffset: durationpb.New(end),
		Duration: durationpb.New(end - start), OffsetsEstimated: estimated}
}

func finalResp(t *speechv1.Transcript) *speechv1.TranscribeResponse {
	return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_FinalTranscript{FinalTranscript: t}}
}

func reconnectedResp(r *speechv1.UpstreamReconnected) *speechv1.TranscribeResponse {
	return &speechv1.TranscribeResponse{Response: &speechv1.TranscribeResponse_Reconnected{Reconnected: r}}
}

// sttCall is a Transcribe stream on a fake gateway.
type sttCall struct {
	t      *testing.T
	stream speechv1.SpeechToTextService_TranscribeClient
}

// startSTT opens a Transcribe stream with cfg and waits for `started`.
func startSTT(t *testing.T, h *harness, cfg *speechv1.RecognitionConfig) *sttCall {
	t.Helper()
	stream, err := h.stt.Transcribe(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &sttCall{t: t, stream: stream}
	c.send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: cfg}})
	if r := c.recv("started"); r.GetStarted() == nil {
		t.Fatalf("first response %v, want started", r)
	}
	return c
}

func (c *sttCall) send(r *speechv1.TranscribeRequest) {
	c.t.Helper()
	if err := c.stream.Send(r); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *sttCall) audio(b []byte) {
	c.t.Helper()
	c.send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}})
}

func (c *sttCall) finalize() {
	c.t.Helper()
	c.send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Finalize{Finalize: &speechv1.Finalize{}}})
}

func (c *sttCall) recv(what string) *speechv1.TranscribeResponse {
	c.t.Helper()
	return recvResponse(c.t, c.stream, what)
}

// want receives one response and compares it whole with want.
func (c *sttCall) want(want *speechv1.TranscribeResponse) {
	c.t.Helper()
	if diff := cmp.Diff(want, c.recv("a response"), protocmp.Transform()); diff != "" {
		c.t.Fatalf("response (-want +got):\n%s", diff)
	}
}

func (c *sttCall) closeSend() {
	c.t.Helper()
	if err := c.stream.CloseSend(); err != nil {
		c.t.Fatal(err)
	}
}

// rest half-closes, if not yet, and reads the stream to its end.
func (c *sttCall) rest() ([]*speechv1.TranscribeResponse, error) {
	c.t.Helper()
	c.closeSend()
	return recvAll(c.t, c.stream.Recv)
}

// wantResponses compares responses whole.
func wantResponses(t *testing.T, got, want []*speechv1.TranscribeResponse) {
	t.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("responses (-want +got):\n%s", diff)
	}
}

// writesOf is what the gateway wrote to s so far.
func (s *fakeSTT) writesOf() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.writes)
}

// heard waits until s received exactly want, and checks it is want.
func (s *fakeSTT) heard(t *testing.T, want []byte) {
	t.Helper()
	waitFor(t, func() bool { return len(s.received()) >= len(want) }, "audio on session "+s.id)
	if got := s.received(); !slices.Equal(got, want) {
		t.Fatalf("session %s heard %d bytes, not the %d expected", s.id, len(got), len(want))
	}
}

// wrote waits until the gateway's last write to s is last.
func (s *fakeSTT) wrote(t *testing.T, last string) {
	t.Helper()
	waitFor(t, func() bool { w := s.writesOf(); return len(w) > 0 && w[len(w)-1] == last }, last+" on session "+s.id)
}
