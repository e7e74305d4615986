package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// speech returns n sentences of simulator speech at 16 kHz LINEAR16, each
// its own utterance, and the sentences.
func speech(n int) ([]byte, []string) {
	var audio []byte
	var texts []string
	for i := range n {
		s := fmt.Sprintf("Sentence number %d of the long recording.", i+1)
		texts = append(texts, s)
		audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
	}
	return audio, texts
}

// transcribeAll sends audio in 100 ms chunks as fast as the stream takes
// them, then half-closes and returns every response.
func (h *harness) transcribeAll(t *testing.T, ctx context.Context, cfg *speechv1.RecognitionConfig, audio []byte) ([]*speechv1.TranscribeResponse, error) {
	t.Helper()
	return h.transcribe(t, ctx, cfg, audio, 3200)
}

// checkFinals requires the finals to be exactly texts, in order, with
// offsets that never go back, and returns the reconnect events.
func checkFinals(t *testing.T, resps []*speechv1.TranscribeResponse, texts []string) []*speechv1.UpstreamReconnected {
	t.Helper()
	var got []string
	var reconnects []*speechv1.UpstreamReconnected
	var lastEnd time.Duration
	for _, r := range resps {
		if rc := r.GetReconnected(); rc != nil {
			reconnects = append(reconnects, rc)
		}
		f := r.GetFinalTranscript()
		if f == nil || f.GetText() == "" {
			continue
		}
		got = append(got, f.GetText())
		start, end := f.GetStartOffset().AsDuration(), f.GetEndOffset().AsDuration()
		if start < lastEnd || end < start {
			t.Errorf("final %q spans %s-%s, after a final that ended at %s", f.GetText(), start, end, lastEnd)
		}
		lastEnd = end
	}
	if !slices.Equal(got, texts) {
		t.Fatalf("finals differ from the speech:\n got %d: %q\nwant %d: %q", len(got), got, len(texts), texts)
	}
	return reconnects
}

// TestTranscribeSurvivesADropOnTheWire is the wire check of a reconnect,
// on the simulator: the real client reports a connection cut in the
// middle of speech as a loss the stream survives, the pool dials a new
// one, and SLNG's offsets on it, which count from its own first audio
// byte, give exactly the finals of a run without the cut. The replay's
// logic is tested on fakes (TestTranscribeSurvivesDrops).
func TestTranscribeSurvivesADropOnTheWire(t *testing.T) {
	t.Parallel()
	audio, texts := speech(6)
	h := newHarness(t, slngsim.Options{Script: onFirstConnection("*=drop@chunks:30")}, Config{})
	resps, err := h.transcribeAll(t, testContext(t), &speechv1.RecognitionConfig{}, audio)
	if err != nil {
		t.Fatal(err)
	}
	rcs := checkFinals(t, resps, texts)
	if len(rcs) != 1 || rcs[0].GetReason() != "connection_lost" || rcs[0].GetAudioReplayed().AsDuration() <= 0 {
		t.Fatalf("reconnect events %v, want one connection_lost with audio replayed", rcs)
	}
	if n := len(h.sim.Sessions()); n != 2 {
		t.Errorf("%d upstream sessions, want 2", n)
	}
}

// TestTranscribeSurvivesDrops: three sessions lost in turn; each new one
// hears again exactly the audio no final covers, before newer audio; the
// caller hears of each loss, and gets every final once, in order: timed
// finals trim what is heard again, and an untimed final the next session
// repeats is dropped.
func TestTranscribeSurvivesDrops(t *testing.T) {
	t.Parallel()
	s := []*fakeSTT{newFakeSTT("one"), newFakeSTT("two"), newFakeSTT("three"), newFakeSTT("four")}
	s[3].endOnEnd = false
	h := newFakeHarness(t, nil, s)
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	a, b, cc, d := pcmMs(100, 'a'), pcmMs(100, 'b'), pcmMs(100, 'c'), pcmMs(100, 'd')
	cat := func(parts ...[]byte) []byte { return slices.Concat(parts...) }
	var resps []*speechv1.TranscribeResponse
	recv := func(what string) *speechv1.TranscribeResponse {
		r := c.recv(what)
		resps = append(resps, r)
		return r
	}
	wantReconnect := func(prev, next string) {
		t.Helper()
		r := recv("reconnected").GetReconnected()
		if r.GetReason() != "connection_lost" || r.GetPreviousUpstreamSessionId() != prev || r.GetUpstreamSessionId() != next ||
			r.GetAudioReplayed().AsDuration() != 100*time.Millisecond || r.GetGap() == nil {
			t.Fatalf("reconnected %v, want %s to %s with 100 ms replayed", r, prev, next)
		}
	}

	// One hears a and b, and a final covers a: b is heard again.
	c.audio(a)
	c.audio(b)
	s[0].heard(t, cat(a, b))
	s[0].send(timedFinal("A.", 0, 100*time.Millisecond))
	recv("final A")
	s[0].end(errFakeLost)
	wantReconnect("one", "two")
	// Two hears b again, then c; its final covers b, in its own time.
	c.audio(cc)
	s[1].heard(t, cat(b, cc))
	s[1].send(timedFinal("B.", 0, 100*time.Millisecond))
	recv("final B")
	s[1].end(errFakeLost)
	wantReconnect("two", "three")
	// Three hears c again; its untimed final proves nothing, so c is heard
	// again by four, whose repeat of that final is dropped.
	s[2].heard(t, cc)
	s[2].send(final("C."))
	recv("final C")
	s[2].end(errFakeLost)
	wantReconnect("three", "four")
	c.audio(d)
	s[3].heard(t, cat(cc, d))
	s[3].send(final("C."))
	s[3].send(final("D."))
	recv("final D")
	c.closeSend()
	s[3].wrote(t, "close")
	s[3].end(io.EOF)
	rest, err := recvAll(t, c.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	resps = append(resps, rest...)
	if rcs := checkFinals(t, resps, []string{"A.", "B.", "C.", "D."}); len(rcs) != 3 {
		t.Fatalf("%d reconnect events, want 3", len(rcs))
	}
	if v := testutil.ToFloat64(h.metrics.finalsDropped.WithLabelValues("duplicate")); v != 1 {
		t.Errorf("duplicate finals dropped = %v, want 1", v)
	}
	for _, sess := range s[:3] {
		if released, _, err := sess.releasedWith(); !released || !errors.Is(err, errFakeLost) {
			t.Errorf("session %s released %v with %v, want its loss", sess.id, released, err)
		}
	}
}

// errMaxDuration is how the client reports SLNG's end of a connection at
// its maximum duration: an error frame, then a 1008 close.
var errMaxDuration = &slngclient.UpstreamError{Kind: slngclient.KindErrorFrame, Code: "max_connection_duration_exceeded",
	Message: "maximum connection duration reached", CloseCode: 1008, Retryable: true}

// TestTranscribeOutlivesMaxConnectionDuration: SLNG ends session after
// session at its maximum connection duration; the stream moves on to a
// new one each time, the audio no final covers heard again, and loses
// nothing.
func TestTranscribeOutlivesMaxConnectionDuration(t *testing.T) {
	t.Parallel()
	const n = 5
	var s []*fakeSTT
	for i := range n {
		s = append(s, newFakeSTT(fmt.Sprint("s", i)))
	}
	s[n-1].endOnEnd = false
	h := newFakeHarness(t, nil, s)
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	var chunks [][]byte
	var texts []string
	var resps []*speechv1.TranscribeResponse
	for i := range n - 1 {
		chunks = append(chunks, pcmMs(100, byte('a'+i)))
		texts = append(texts, fmt.Sprintf("Sentence %d.", i+1))
		c.audio(chunks[i])
		if i == 0 {
			s[0].heard(t, chunks[0])
		} else {
			// The session hears the chunk before again, and finalizes it.
			s[i].heard(t, slices.Concat(chunks[i-1], chunks[i]))
			s[i].send(timedFinal(texts[i-1], 0, 100*time.Millisecond))
			resps = append(resps, c.recv("final"))
		}
		s[i].end(errMaxDuration)
		resps = append(resps, c.recv("reconnected"))
	}
	c.closeSend()
	s[n-1].heard(t, chunks[n-2])
	s[n-1].wrote(t, "close")
	s[n-1].send(timedFinal(texts[n-2], 0, 100*time.Millisecond))
	s[n-1].end(io.EOF)
	rest, err := recvAll(t, c.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	rcs := checkFinals(t, append(resps, rest...), texts)
	if len(rcs) != n-1 {
		t.Fatalf("%d reconnects, want %d", len(rcs), n-1)
	}
	for _, rc := range rcs {
		if rc.GetReason() != "max_connection_duration_exceeded" || rc.GetAudioReplayed().AsDuration() != 100*time.Millisecond {
			t.Errorf("reconnect %v", rc)
		}
	}
}

// TestTranscribeRollsOver: once a session is MaxUpstreamSessionAge old, on
// the clock, the stream moves to a new one at the next final, not before,
// before SLNG would cut it; the new one hears again the audio after that
// final.
func TestTranscribeRollsOver(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	const age = 5 * time.Minute
	one, two := newFakeSTT("one"), newFakeSTT("two")
	one.readyAt = clk.Now()
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, MaxUpstreamSessionAge: age}))
	up.stt <- one
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	a, b, cc, d := pcmMs(100, 'a'), pcmMs(100, 'b'), pcmMs(100, 'c'), pcmMs(100, 'd')
	var resps []*speechv1.TranscribeResponse
	recv := func(what string) { resps = append(resps, c.recv(what)) }

	c.audio(a)
	one.heard(t, a)
	one.send(timedFinal("A.", 0, 100*time.Millisecond))
	recv("final A")
	clk.Advance(age) // as old as allowed, not older
	c.audio(b)
	one.heard(t, slices.Concat(a, b))
	one.send(timedFinal("B.", 100*time.Millisecond, 100*time.Millisecond))
	recv("final B")
	clk.Advance(time.Millisecond)
	two.readyAt = clk.Now()
	up.stt <- two
	c.audio(cc)
	c.audio(d)
	one.heard(t, slices.Concat(a, b, cc, d))
	one.send(timedFinal("C.", 200*time.Millisecond, 100*time.Millisecond))
	recv("final C")
	c.want(reconnectedResp(&speechv1.UpstreamReconnected{Reason: "rollover", PreviousUpstreamSessionId: "one",
		UpstreamSessionId: "two", AudioReplayed: durationpb.New(100 * time.Millisecond), Gap: durationpb.New(0)}))
	two.heard(t, d)
	two.send(timedFinal("D.", 0, 100*time.Millisecond))
	recv("final D")
	rest, err := c.rest()
	if err != nil {
		t.Fatal(err)
	}
	checkFinals(t, append(resps, rest...), []string{"A.", "B.", "C.", "D."})
	if _, stt := up.asked(); len(stt) != 2 {
		t.Errorf("%d upstream sessions, want 2 for one rollover", len(stt))
	}
	if released, reused, err := one.releasedWith(); !released || reused || err != nil || !one.isClosed() {
		t.Errorf("the old session: released %v, reused %v, with %v, closed %v; want closed and given back without error",
			released, reused, err, one.isClosed())
	}
	if got := h.counter(t, "speech_gateway_upstream_reconnects_total", map[string]string{"reason": "rollover"}); got != 1 {
		t.Errorf("rollovers counted: %v, want 1", got)
	}
}

// TestTranscribeReplayOverflow: when more audio than the replay buffer
// holds followed the last final, a lost session cannot be replaced: the
// stream ends with UNAVAILABLE and says where the last final ended.
func TestTranscribeReplayOverflow(t *testing.T) {
	t.Parallel()
	sess := newFakeSTT("one")
	h, up := newFakeGateway(t, Config{TranscribeReplayBytes: 16000})
	up.stt <- sess
	c := startSTT(t, h, &speechv1.RecognitionConfig{})
	first := pcmMs(300, 'a')
	c.audio(first)
	sess.heard(t, first)
	sess.send(timedFinal("Short first.", 0, 300*time.Millisecond))
	c.want(finalResp(wantTranscript("Short first.", 0, 300*time.Millisecond, false)))
	long := pcmMs(700, 'b') // 22,400 bytes after the final
	for chunk := range slices.Chunk(long, 3200) {
		c.audio(chunk)
	}
	sess.heard(t, slices.Concat(first, long))
	sess.end(errFakeLost)
	_, err := c.stream.Recv()
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	info, _ := details(st)
	if got := info.GetMetadata()["last_final_end_offset_ms"]; got != "300" {
		t.Fatalf("last_final_end_offset_ms = %q, want 300 (metadata %v)", got, info.GetMetadata())
	}
	if _, stt := up.asked(); len(stt) != 1 {
		t.Errorf("%d acquires, want none after the loss", len(stt))
	}
}
