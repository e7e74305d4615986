package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Helpers for gateway tests on the in-memory fakes (fakes_test.go): what a
// test playing SLNG's part needs to know of what the gateway wrote, and
// what SLNG's answers look like as a session yields them.

// textsSentTo returns the texts the gateway wrote to s, in order.
func textsSentTo(s *fakeTTS) []string {
	var out []string
	for _, w := range s.sentList() {
		if text, ok := strings.CutPrefix(w, "text:"); ok {
			out = append(out, text)
		}
	}
	return out
}

// awaitFlushes waits until the gateway has flushed n turns on s.
func awaitFlushes(t *testing.T, s *fakeTTS, n int) {
	t.Helper()
	waitFor(t, func() bool {
		return countOf(s.sentList(), "flush") >= n
	}, fmt.Sprintf("%d flushes on session %s", n, s.id))
}

func countOf(list []string, what string) int {
	n := 0
	for _, w := range list {
		if w == what {
			n++
		}
	}
	return n
}

// speakInChunks sends audio as the route's audio of the turn being
// spoken, in chunks of at most chunk bytes, then the turn's end.
func speakInChunks(s *fakeTTS, audio []byte, chunk int) {
	for off := 0; off < len(audio); off += chunk {
		s.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: audio[off:min(off+chunk, len(audio))]})
	}
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
}

// errorFrameThenClose is what a session yields when SLNG sends an error
// frame with code and closes the socket after it (1011), as SLNG's fatal
// errors do: the frame as a warning event, then the session's end, which
// carries the same code.
func errorFrameThenClose(code string) (slngclient.TTSEvent, error) {
	frame := slngclient.NewErrorFrame(code, "injected "+code)
	end := *frame
	end.CloseCode, end.CloseReason = 1011, code
	return slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: frame}, &end
}

// noAcquires fails the test if the gateway asked its upstream for any
// session.
func noAcquires(t *testing.T, up *fakeUpstream) {
	t.Helper()
	if tts, stt := up.asked(); len(tts)+len(stt) != 0 {
		t.Errorf("the gateway acquired %d TTS and %d STT sessions, want none: %+v %+v", len(tts), len(stt), tts, stt)
	}
}

// awaitGroup waits for wg, or fails the test when ctx ends first.
func awaitGroup(t *testing.T, ctx context.Context, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
	}
}
