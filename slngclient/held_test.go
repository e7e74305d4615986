package slngclient_test

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// hold stands for a consumer that takes no event for d: the behaviour
// under test, not a wait for something to happen.
func hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// TestConsumerHoldsTheReader: a consumer that stops taking events for
// many ping timeouts, in the middle of a turn, holds the reader back and
// with it the pongs; none of that counts as SLNG's silence. The session
// survives and the turn arrives whole.
func TestConsumerHoldsTheReader(t *testing.T) {
	t.Parallel()
	// Pings every 30 ms, each given 250 ms (not less: a busy machine may
	// stop the test's process, the simulator's pongs with it), and a hold
	// four times that.
	_, c := setup(t, slngsim.Options{}, slngclient.Options{PingInterval: 30 * time.Millisecond, PingTimeout: 250 * time.Millisecond})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{Voice: "aura-2-thalia-en", Encoding: "linear16", SampleRate: 24000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	text := strings.Repeat("A long turn that fills the socket's buffers. ", 40)
	if err := s.Text(ctx, text, true); err != nil {
		t.Fatal(err)
	}
	ev, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	audio := bytes.Clone(ev.Audio)
	pings := s.Stats().PingsSent
	hold(time.Second)
	if s.Stats().PingsSent == pings {
		t.Fatal("no ping went out while the consumer held the reader")
	}
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after the hold: %v", err)
		}
		audio = append(audio, ev.Audio...)
		if ev.Kind == slngclient.TTSTurnEnd {
			break
		}
	}
	if got, _ := slngsim.Decode(audio, "linear16", 24000); got != text {
		t.Fatalf("the turn decoded to %d characters, want %d", len(got), len(text))
	}
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
}

// TestHeldBackEnd: SLNG failing the socket while the consumer held the
// reader back for more than a second is reported as a *HeldBackError, which
// is not an upstream error; a normal close stays io.EOF.
func TestHeldBackEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code websocket.StatusCode
		held bool
	}{{websocket.StatusInternalError, true}, {websocket.StatusNormalClosure, false}} {
		t.Run(tc.code.String(), func(t *testing.T) {
			t.Parallel()
			var frames []frame
			for i := range 4 {
				frames = append(frames, frame{binary: []byte{byte(i + 1)}})
			}
			c := scripted(t, script{ready: true, frames: frames, code: tc.code}, slngclient.Options{})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			if _, err := s.Recv(ctx); err != nil {
				t.Fatal(err)
			}
			hold(1200 * time.Millisecond)
			_, err = recvAllTTS(t, ctx, s)
			var held *slngclient.HeldBackError
			if got := errors.As(err, &held); got != tc.held {
				t.Fatalf("end %v: held back = %v, want %v", err, got, tc.held)
			}
			if _, upstream := slngclient.AsUpstreamError(err); tc.held && upstream {
				t.Fatalf("%v reads as an upstream error", err)
			}
			if !tc.held && !errors.Is(err, io.EOF) {
				t.Fatalf("end %v, want io.EOF", err)
			}
		})
	}
}

// TestLargeFrameNotKept: a session that once received a frame of
// megabytes does not keep a buffer of that size for the rest of its life:
// ten open sessions after one 3 MiB frame each hold about nothing of it.
func TestLargeFrameNotKept(t *testing.T) {
	// Not parallel: it measures the heap.
	const sessions, size = 10, 3 << 20
	big := bytes.Repeat([]byte{7}, size)
	c := scripted(t, script{ready: true, frames: []frame{{binary: big}, {binary: []byte{1, 2}}}}, slngclient.Options{})
	ctx := testCtx(t)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	var open []*slngclient.TTSSession
	for range sessions {
		s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		for range 2 {
			if _, err := s.Recv(ctx); err != nil {
				t.Fatal(err)
			}
		}
		open = append(open, s)
	}
	// The reader goes back to the socket after the last frame, with the
	// large slot free: a third frame would reuse it.
	after := heap()
	runtime.KeepAlive(open)
	if grown := int64(after) - int64(before); grown > sessions*size/4 {
		t.Fatalf("heap grew by %d MiB with %d open sessions, after one %d MiB frame each",
			grown>>20, sessions, size>>20)
	}
}
