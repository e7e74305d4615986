package service

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Helpers for the Synthesize tests on in-memory fakes (tts_test.go).

// synthSentUntil waits until the gateway has written n things to s, and
// returns what it wrote.
func synthSentUntil(t *testing.T, s *fakeTTS, n int) []string {
	t.Helper()
	waitFor(t, func() bool { return len(s.sentList()) >= n }, "the gateway's writes to session "+s.id)
	return s.sentList()
}

// synthWantSent asserts everything the gateway wrote to s, once it wrote
// as much.
func synthWantSent(t *testing.T, s *fakeTTS, want ...string) {
	t.Helper()
	if got := synthSentUntil(t, s, len(want)); !slices.Equal(got, want) {
		t.Fatalf("session %s was sent %q, want %q", s.id, got, want)
	}
}

// synthReleased waits until the gateway gave s back, and returns how.
func synthReleased(t *testing.T, s *fakeTTS) (reused bool, err error) {
	t.Helper()
	waitFor(t, func() bool { released, _, _ := s.releasedWith(); return released }, "session "+s.id+" to be given back")
	_, reused, err = s.releasedWith()
	return reused, err
}

func synthAudioEvent(b []byte) slngclient.TTSEvent {
	return slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: b}
}

func synthTurnEndEvent() slngclient.TTSEvent { return slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd} }

// recv receives one response.
func (b *bidi) recv(what string) *speechv1.SynthesizeResponse {
	b.t.Helper()
	m, err := b.stream.Recv()
	if err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
	return m
}

// synthDiff compares responses whole; `started` is compared but for the
// stream's own id, which is random (check it apart).
func synthDiff(want, got []*speechv1.SynthesizeResponse) string {
	return cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&speechv1.SynthesisStarted{}, "session_id"))
}

// Responses, for whole comparisons.

func synthAudioResp(data []byte, seq, turn uint64) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{Data: data, Sequence: seq, TurnId: turn}}}
}

func synthFlushedResp(turn uint64) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Flushed{Flushed: &speechv1.Flushed{TurnId: turn}}}
}

func synthAudioEndResp(turn uint64, d *speechv1.TurnDelivery) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_AudioEnd{AudioEnd: &speechv1.AudioEnd{TurnId: turn, Delivered: d}}}
}

func synthWarningResp(code, message string) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{Warning: &speechv1.Warning{Code: code, Message: message}}}
}
