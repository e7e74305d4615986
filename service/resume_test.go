package service

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
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

// transcribePaced sends audio in 100 ms chunks, every interval (0: as fast
// as the stream takes it), then half-closes and returns every response.
func (h *harness) transcribePaced(t *testing.T, ctx context.Context, cfg *speechv1.RecognitionConfig, audio []byte, interval time.Duration) ([]*speechv1.TranscribeResponse, error) {
	t.Helper()
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(sttConfig(cfg)); err != nil {
		return nil, err
	}
	next := time.Now()
	for len(audio) > 0 {
		n := min(3200, len(audio))
		if err := stream.Send(sttAudioReq(audio[:n])); err != nil {
			break // the status comes from Recv
		}
		audio = audio[n:]
		if interval > 0 {
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return recvAll(t, stream.Recv)
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

// TestTranscribeSurvivesDrops: 60 s of speech, the upstream connection cut
// three times; the finals are exactly those of a run without faults.
func TestTranscribeSurvivesDrops(t *testing.T) {
	t.Parallel()
	audio, texts := speech(125)
	if d := time.Duration(len(audio)) * time.Second / 32000; d < 60*time.Second {
		t.Fatalf("only %s of speech", d)
	}
	ctx := testContext(t)

	clean := newHarness(t, slngsim.Options{}, Config{})
	resps, err := clean.transcribePaced(t, ctx, &speechv1.RecognitionConfig{}, audio, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkFinals(t, resps, texts)

	// The first three connections are cut after 40, 75 and 130 audio
	// frames (replayed frames count too).
	cutAt := map[int64]string{1: "drop@chunks:40", 2: "drop@chunks:75", 3: "drop@chunks:130"}
	h := newHarness(t, slngsim.Options{Script: func(ci slngsim.ConnInfo) slngsim.Fault {
		spec, ok := cutAt[ci.Seq]
		if !ok {
			return slngsim.Fault{}
		}
		_, f, err := slngsim.ParseFault("*=" + spec)
		if err != nil {
			panic(err)
		}
		return f
	}}, Config{})
	resps, err = h.transcribePaced(t, ctx, &speechv1.RecognitionConfig{}, audio, 0)
	if err != nil {
		t.Fatal(err)
	}
	rcs := checkFinals(t, resps, texts)
	if len(rcs) != 3 {
		t.Fatalf("%d reconnect events, want 3", len(rcs))
	}
	for _, rc := range rcs {
		if rc.GetReason() != "connection_lost" || rc.GetPreviousUpstreamSessionId() == "" ||
			rc.GetUpstreamSessionId() == rc.GetPreviousUpstreamSessionId() || rc.GetGap() == nil {
			t.Errorf("reconnect event %v", rc)
		}
	}
}

// TestTranscribeOutlivesMaxConnectionDuration: SLNG ends every connection
// after 2 s; a 10 s real-time stream loses nothing.
func TestTranscribeOutlivesMaxConnectionDuration(t *testing.T) {
	t.Parallel()
	audio, want := speech(21)
	if d := time.Duration(len(audio)) * time.Second / 32000; d < 10*time.Second {
		t.Fatalf("only %s of speech", d)
	}
	h := newHarness(t, slngsim.Options{MaxConnectionDuration: 2 * time.Second}, Config{})
	resps, err := h.transcribePaced(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	rcs := checkFinals(t, resps, want)
	if len(rcs) < 3 {
		t.Fatalf("%d reconnects in 10 s with a 2 s maximum duration", len(rcs))
	}
	for _, rc := range rcs {
		if rc.GetReason() != "max_connection_duration_exceeded" {
			t.Errorf("reconnect reason %q", rc.GetReason())
		}
	}
}

// TestTranscribeRollsOver: past MaxUpstreamSessionAge, the gateway moves
// to a new session at a final transcript, before SLNG would cut it.
func TestTranscribeRollsOver(t *testing.T) {
	t.Parallel()
	audio, texts := speech(12)
	h := newHarness(t, slngsim.Options{}, Config{MaxUpstreamSessionAge: 300 * time.Millisecond})
	resps, err := h.transcribePaced(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 25*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	rcs := checkFinals(t, resps, texts)
	if len(rcs) == 0 {
		t.Fatal("no rollover")
	}
	for _, rc := range rcs {
		if rc.GetReason() != "rollover" {
			t.Errorf("reconnect reason %q", rc.GetReason())
		}
	}
	if n := len(h.sim.Sessions()); n != len(rcs)+1 {
		t.Errorf("%d upstream sessions for %d rollovers", n, len(rcs))
	}
}

// TestTranscribeReplayOverflow: when more audio than the replay buffer
// holds followed the last final, a lost upstream cannot be recovered: the
// stream ends with UNAVAILABLE and says where the last final ended.
func TestTranscribeReplayOverflow(t *testing.T) {
	t.Parallel()
	first := slngsim.Synthesize("Short first.", "linear16", 16000)
	long := slngsim.Synthesize(strings.Repeat("A very long utterance without an end. ", 4), "linear16", 16000)
	audio := append(append([]byte(nil), first...), long...)
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=drop@chunks:15")}, Config{TranscribeReplayBytes: 16000})
	resps, err := h.transcribePaced(t, testContext(t), &speechv1.RecognitionConfig{}, audio, 0)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	info, _ := details(st)
	firstEnd := time.Duration(len(first)-2*96) * time.Second / 32000 // the final ends where the silent symbol starts
	if got := info.GetMetadata()["last_final_end_offset_ms"]; got != fmt.Sprint(firstEnd.Milliseconds()) {
		t.Fatalf("last_final_end_offset_ms = %q, want %d (metadata %v)", got, firstEnd.Milliseconds(), info.GetMetadata())
	}
	if finalText(resps) != "Short first." {
		t.Fatalf("finals before the failure: %q", finalText(resps))
	}
}
