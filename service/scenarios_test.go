package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// What a caller's pace does, and must not do, to SLNG and to other
// callers: each test here is a scenario that once went wrong.

// pause stands for a caller that reads nothing for d: the behaviour under
// test, not a wait for something to happen.
func pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// breakerPool is a pool with its breaker on (5 failures open it), no
// standbys and one dial attempt per stream, so that every upstream failure
// counts and shows.
var breakerPool = slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 5}

// fastPings find a dead upstream within about a second, so that a gateway
// that stopped reading SLNG for its caller's sake would take SLNG for dead
// long before its caller reads again (2 s in these tests). Not shorter:
// the simulator runs in the test's process, and a busy machine can stop
// that process for a few hundred milliseconds, pongs with it.
var fastPings = slngclient.Options{PingInterval: 100 * time.Millisecond, PingTimeout: time.Second}

// TestPausedCallersAreNotSLNGFailing: five callers that read `started`,
// then nothing for two seconds (many ping timeouts), then the rest, all get
// their whole turn; nothing counts against SLNG, and the next, unrelated
// caller is served.
func TestPausedCallersAreNotSLNGFailing(t *testing.T) {
	t.Parallel()
	h := newHarnessClient(t, slngsim.Options{}, fastPings, Config{StreamBufferBytes: 128 << 10}, breakerPool, sentinelLogger(t))
	ctx := testContext(t)
	// About 3 MB of audio, spoken as fast as the simulator can.
	text := strings.Repeat("Read me later, every byte of it. ", 240)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
			if err == nil {
				_, err = stream.Recv() // started
			}
			if err != nil {
				errs <- err
				return
			}
			pause(2 * time.Second)
			resps, err := recvAll(t, stream.Recv)
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", i, err)
				return
			}
			if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != text {
				errs <- fmt.Errorf("caller %d: the turn decoded to %d characters, want %d", i, len(got), len(text))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := testutil.ToFloat64(h.metrics.pauses); n < 5 {
		t.Errorf("streams stopped reading SLNG %v times, want at least once each: the callers never held it back", n)
	}
	if n := h.counter(t, "speech_gateway_upstream_session_errors_total", nil); n != 0 {
		t.Errorf("%v upstream session errors counted for paused callers", n)
	}
	if n := h.counter(t, "speech_gateway_upstream_breaker_state", nil); n != 0 {
		t.Errorf("breaker state %v, want closed", n)
	}
	resps, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Someone else."})
	if err != nil || len(audioOf(resps)) == 0 {
		t.Fatalf("the next caller: %v", err)
	}
}

// TestReaderAtTwiceRealTime: a caller that reads a 60 s turn at twice real
// time from an upstream that sends it as fast as it can gets the whole
// turn, however long SLNG's side waits for it.
func TestReaderAtTwiceRealTime(t *testing.T) {
	t.Parallel()
	h := newHarnessClient(t, slngsim.Options{}, fastPings,
		Config{StreamBufferBytes: 256 << 10}, breakerPool, sentinelLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// 8 ms of audio a character: 60 s.
	text := strings.Repeat("A minute of speech, read at twice its pace. ", 171)[:7500]
	stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	const bytesPerSecond = 24000 * 2
	var audio []byte
	start := time.Now()
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %s of audio: %v", time.Duration(float64(len(audio))/bytesPerSecond*float64(time.Second)), err)
		}
		audio = append(audio, r.GetAudio().GetData()...)
		// Twice real time: the audio received so far takes half its
		// length to play.
		due := time.Duration(float64(len(audio)) / bytesPerSecond / 2 * float64(time.Second))
		if wait := due - time.Since(start); wait > 0 {
			pause(wait)
		}
	}
	if got, _ := slngsim.Decode(audio, "linear16", 24000); got != text {
		t.Fatalf("the turn decoded to %d characters, want %d", len(got), len(text))
	}
	t.Logf("%s of audio read in %s", time.Duration(float64(len(audio))/bytesPerSecond*float64(time.Second)), time.Since(start).Round(time.Millisecond))
}

// TestCallerThatNeverReads: a caller that reads nothing after `started`
// is let go within the stall timeout (plus 5 s): its stream, its SLNG
// session and its place are free again, with CALLER_STALLED, and nothing
// counts against SLNG.
func TestCallerThatNeverReads(t *testing.T) {
	t.Parallel()
	const stall = 2 * time.Second
	h := newHarnessClient(t, slngsim.Options{}, fastPings, Config{CallerStallTimeout: stall, StreamBufferBytes: 256 << 10},
		breakerPool, sentinelLogger(t))
	ctx := testContext(t)
	stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: strings.Repeat("Nobody reads this. ", 1600)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // started
		t.Fatal(err)
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, stall+5*time.Second)
	defer cancel()
	err = poll.Until(wctx, 10*time.Millisecond, func() bool {
		return h.counter(t, "speech_gateway_streams_active", nil) == 0 &&
			h.counter(t, "speech_gateway_upstream_sessions_active", nil) == 0
	})
	if err != nil {
		t.Fatalf("the stream still holds its place and its SLNG session %s after the caller stopped reading", time.Since(start))
	}
	t.Logf("released %s after the caller stopped reading (stall timeout %s)", time.Since(start).Round(time.Millisecond), stall)
	_, err = recvAll(t, stream.Recv)
	wantStatus(t, err, codes.ResourceExhausted, ReasonCallerStalled)
	if n := h.counter(t, "speech_gateway_upstream_session_errors_total", nil); n != 0 {
		t.Errorf("%v upstream session errors counted for a caller that stopped reading", n)
	}
	if n := h.counter(t, "speech_gateway_upstream_errors_total", nil); n != 0 {
		t.Errorf("%v upstream errors counted for a caller that stopped reading", n)
	}
}

// TestConfigLessStreamsEnd: streams that never send their config hold no
// slot for longer than the first-message timeout (plus 2 s), whatever
// their handlers are blocked in; and SIGTERM ends them at once.
func TestConfigLessStreamsEnd(t *testing.T) {
	t.Parallel()
	const first = time.Second
	h := newHarness(t, slngsim.Options{}, Config{FirstMessageTimeout: first, MaxStreams: 5})
	ctx := testContext(t)
	type ender interface{ RecvMsg(any) error }
	var streams []ender
	for i := range 5 {
		if i%2 == 0 {
			s, err := h.tts.Synthesize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		} else {
			s, err := h.stt.Transcribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		}
	}
	start := time.Now()
	if err := poll.Until(ctx, 5*time.Millisecond, func() bool { return h.srv.ActiveStreams() == 5 }); err != nil {
		t.Fatal(err)
	}
	_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "A sixth caller."})
	wantStatus(t, err, codes.ResourceExhausted, ReasonGatewayOverloaded)
	for i, s := range streams {
		err := s.RecvMsg(new(speechv1.SynthesizeResponse))
		if i%2 == 1 {
			err = s.RecvMsg(new(speechv1.TranscribeResponse))
		}
		wantStatus(t, err, codes.OutOfRange, ReasonFirstMessageTimeout)
	}
	if took := time.Since(start); took > first+2*time.Second {
		t.Errorf("config-less streams ended %s after they started, want within %s", took, first+2*time.Second)
	}
	if _, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Now there is room."}); err != nil {
		t.Fatalf("after the config-less streams ended: %v", err)
	}

	// SIGTERM: a stream that has sent nothing ends at once.
	s, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, 5*time.Millisecond, func() bool { return h.srv.ActiveStreams() == 1 }); err != nil {
		t.Fatal(err)
	}
	drainedAt := time.Now()
	h.srv.Drain()
	_, err = s.Recv()
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	if took := time.Since(drainedAt); took > first/2 {
		t.Errorf("a config-less stream ended %s after the drain began", took)
	}
}

// TestFiftyPausedCallers: fifty callers that stop reading hold at most
// the gateway-wide bound of audio between them (each stream at most its
// own), and then get every byte of their turns.
func TestFiftyPausedCallers(t *testing.T) {
	t.Parallel()
	const perStream, total = 64 << 10, 1 << 20
	h := newHarnessClient(t, slngsim.Options{}, fastPings, Config{StreamBufferBytes: perStream, BufferBytes: total},
		slngpool.Options{DisableWarm: true, DialAttempts: 1, BreakerFailures: 1 << 20}, sentinelLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// About 400 KB of audio each: 20 MB in all, far over both bounds.
	text := strings.Repeat("Fifty callers wait. ", 50)
	const callers = 50
	streams := make([]speechv1.TextToSpeechService_SynthesizeTextClient, callers)
	for i := range streams {
		s, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
		if err == nil {
			_, err = s.Recv() // started
		}
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = s
	}
	// Every stream stops reading SLNG at its own bound or the gateway's.
	var peak float64
	err := poll.Until(ctx, 5*time.Millisecond, func() bool {
		peak = max(peak, testutil.ToFloat64(h.metrics.bufferedGauge))
		return testutil.ToFloat64(h.metrics.pauses) >= callers
	})
	if err != nil {
		t.Fatalf("%v of %d streams paused", testutil.ToFloat64(h.metrics.pauses), callers)
	}
	for range 20 { // and stays under the bound while they wait
		peak = max(peak, testutil.ToFloat64(h.metrics.bufferedGauge))
		pause(10 * time.Millisecond)
	}
	// A stream holding nothing may still take one frame beyond the
	// gateway's bound: SLNG's frames here are 20 ms.
	const frame = 24000 * 2 / 50
	if limit := float64(min(total, callers*perStream) + callers*frame); peak > limit {
		t.Errorf("%v bytes waited for callers at the peak, over the bound of %v", peak, limit)
	}
	if peak < total/2 {
		t.Errorf("only %v bytes waited for callers at the peak: the test did not fill the buffers", peak)
	}
	t.Logf("peak %.0f KiB waiting for %d paused callers (bounds: %d KiB a stream, %d KiB in all)", peak/1024, callers, perStream>>10, total>>10)
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps, err := recvAll(t, s.Recv)
			if err == nil {
				if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != text {
					err = fmt.Errorf("decoded %d characters, want %d", len(got), len(text))
				}
			}
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := testutil.ToFloat64(h.metrics.bufferedGauge); v != 0 {
		t.Errorf("%v bytes still counted as waiting after every stream ended", v)
	}
}

// TestTranscribeCutsAfterAFinalize: the upstream connection is cut with no
// close frame each time 64,000 bytes have reached it, after a finalize,
// with partials on and the audio sent unpaced in 3,200-byte messages. The
// finals still cover every byte the caller sent, whatever the finals say
// of their timing: the one that answers the finalize covers exactly the
// audio before it, and the audio after it is heard again. Finals with no
// timing at all prove nothing but a finalize: there, one cut is survived
// (each new session hears everything since the finalize again, which
// here is more than a session takes before the next cut).
func TestTranscribeCutsAfterAFinalize(t *testing.T) {
	t.Parallel()
	first := "The caller speaks before the finalize."
	rest := []string{"Then it goes on after it.", "Every byte must be heard once.", "Nothing is lost across the cuts.",
		"Three cuts in all."}
	for _, tc := range []struct{ profile, fault string }{
		{"rich", "*=drop@chunks:20"},
		{"asyncapi-finals", "*=drop@chunks:20"},
		{"asyncapi-finals-no-duration", "*=drop@chunks:20,once"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			t.Parallel()
			p, err := slngsim.ProfileByName(tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, slngsim.Options{Profile: &p, Faults: slngsim.MustFaults(tc.fault)}, Config{})
			ctx := testContext(t)
			stream, err := h.stt.Transcribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			send := func(r *speechv1.TranscribeRequest) {
				t.Helper()
				if err := stream.Send(r); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			audio := func(b []byte) {
				for len(b) > 0 {
					n := min(3200, len(b))
					send(sttAudioReq(b[:n]))
					b = b[n:]
				}
			}
			send(sttConfig(&speechv1.RecognitionConfig{EnablePartials: true}))
			audio(spoken([]string{first}))
			send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Finalize{Finalize: &speechv1.Finalize{}}})
			after := spoken(rest)
			audio(after)
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			resps, err := recvAll(t, stream.Recv)
			if err != nil {
				t.Fatalf("status %v", err)
			}
			want := first + " " + strings.Join(rest, " ")
			if got := finalText(resps); got != want {
				t.Fatalf("finals %q, want %q", got, want)
			}
			reconnects := 0
			for _, r := range resps {
				if r.GetReconnected() != nil {
					reconnects++
				}
			}
			if reconnects == 0 {
				t.Fatal("no cut happened")
			}
			t.Logf("%d bytes after the finalize, %d in all, %d reconnects", len(after), len(after)+len(spoken([]string{first})), reconnects)
		})
	}
}
