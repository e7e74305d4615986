package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// kinds lists the response kinds in order, for order assertions.
func kinds(resps []*speechv1.SynthesizeResponse) string {
	var out []string
	last := ""
	for _, r := range resps {
		var k string
		switch r.GetResponse().(type) {
		case *speechv1.SynthesizeResponse_Started:
			k = "started"
		case *speechv1.SynthesizeResponse_Audio:
			k = "audio"
		case *speechv1.SynthesizeResponse_SegmentStart:
			k = "segment_start"
		case *speechv1.SynthesizeResponse_SegmentEnd:
			k = "segment_end"
		case *speechv1.SynthesizeResponse_Flushed:
			k = "flushed"
		case *speechv1.SynthesizeResponse_AudioEnd:
			k = "audio_end"
		case *speechv1.SynthesizeResponse_Cleared:
			k = "cleared"
		case *speechv1.SynthesizeResponse_Cancelled:
			k = "cancelled"
		case *speechv1.SynthesizeResponse_Warning:
			k = "warning"
		case *speechv1.SynthesizeResponse_Reconnected:
			k = "reconnected"
		case *speechv1.SynthesizeResponse_Draining:
			k = "draining"
		}
		if k == "audio" && last == "audio" {
			continue // runs of audio collapse to one
		}
		out = append(out, k)
		last = k
	}
	return strings.Join(out, " ")
}

// checkSequences asserts that audio sequences run 1, 2, 3... across the
// whole stream.
func checkSequences(t *testing.T, resps []*speechv1.SynthesizeResponse) {
	t.Helper()
	want := uint64(1)
	for _, r := range resps {
		if a := r.GetAudio(); a != nil {
			if a.GetSequence() != want {
				t.Fatalf("audio sequence %d, want %d", a.GetSequence(), want)
			}
			want++
		}
	}
}

// TestSynthesizeTextRoundTrip stays on the simulator: it is the one check
// that a long turn's audio crosses the whole gateway intact through the
// real client, whose audio is valid only until its next event (the stream
// must copy it in time), in both of the forms SLNG sends it: binary frames
// and JSON audio_chunk. What the gateway makes of the turn is
// TestSynthesizeTextResponses, on fakes.
func TestSynthesizeTextRoundTrip(t *testing.T) {
	t.Parallel()
	for _, form := range []struct {
		name string
		form slngsim.AudioForm
	}{{"binary", slngsim.AudioBinary}, {"audio_chunk", slngsim.AudioJSON}} {
		t.Run(form.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{AudioForm: form.form}, Config{})
			text := strings.Repeat("The gateway keeps every byte in order. ", 52)[:1999] + "!"
			resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(resps); got != "started segment_start audio segment_end flushed audio_end" {
				t.Fatalf("responses: %s", got)
			}
			st := resps[0].GetStarted()
			if st.GetSessionId() == "" || st.GetUpstreamSessionId() == "" || st.GetUpstreamRequestId() == "" {
				t.Errorf("started lacks ids: %v", st)
			}
			checkSequences(t, resps)
			audio := audioOf(resps)
			got, err := slngsim.Decode(audio, "linear16", 24000)
			if err != nil || got != text {
				t.Fatalf("round trip lost the text: %v", err)
			}
			if end := resps[len(resps)-1].GetAudioEnd(); end.GetTurnId() != 1 || end.GetDelivered().GetAudioBytes() != uint64(len(audio)) {
				t.Errorf("audio_end = %v (audio %d bytes)", end, len(audio))
			}
		})
	}
}

// TestSynthesizeTextResponses: SynthesizeText asks SLNG for the default
// model, voice and format, sends the text as one flushed turn, and relays
// the turn as it comes: `started` with the effective config and limits, the
// segment, its audio numbered from 1, then `flushed` and `audio_end` with
// the model's duration and what was delivered. The session, every turn on
// it complete, goes back to be reused.
func TestSynthesizeTextResponses(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	s := newFakeTTS("one")
	up.tts <- s
	text := strings.Repeat("The gateway keeps every byte in order. ", 52)[:1999] + "!"
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, s, "text:"+text, "flush")
	chunks := [][]byte{pcm(960, 1), pcm(960, 2), pcm(480, 3)}
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentStart, SegmentID: "seg-1"})
	for _, c := range chunks {
		s.send(synthAudioEvent(c))
	}
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentEnd, SegmentID: "seg-1"})
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, Duration: 51 * time.Millisecond})
	got, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	format := &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 24000}
	want := []*speechv1.SynthesizeResponse{
		{Response: &speechv1.SynthesizeResponse_Started{Started: &speechv1.SynthesisStarted{
			UpstreamSessionId: "one",
			UpstreamRequestId: "req-one",
			Config:            &speechv1.SynthesisConfig{Model: "deepgram/aura:2", Voice: "aura-2-thalia-en", Format: format},
			// SLNG's audio is mono.
			UpstreamFormat: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 24000, Channels: 1},
			Limits: &speechv1.StreamLimits{MaxTextBytes: 64 << 10, MaxAudioChunkBytes: 64 << 10,
				MaxStreamDuration: durationpb.New(time.Hour), IdleTimeout: durationpb.New(5 * time.Minute)},
		}}},
		{Response: &speechv1.SynthesizeResponse_SegmentStart{SegmentStart: &speechv1.SegmentStart{SegmentId: "seg-1", TurnId: 1}}},
		synthAudioResp(chunks[0], 1, 1),
		synthAudioResp(chunks[1], 2, 1),
		synthAudioResp(chunks[2], 3, 1),
		{Response: &speechv1.SynthesizeResponse_SegmentEnd{SegmentEnd: &speechv1.SegmentEnd{SegmentId: "seg-1", TurnId: 1}}},
		synthFlushedResp(1),
		{Response: &speechv1.SynthesizeResponse_AudioEnd{AudioEnd: &speechv1.AudioEnd{TurnId: 1, Duration: durationpb.New(51 * time.Millisecond),
			// 2,400 bytes of 24 kHz 16-bit audio: 50 ms.
			Delivered: &speechv1.TurnDelivery{AudioBytes: 2400, AudioDuration: durationpb.New(50 * time.Millisecond), LastSequence: 3}}}},
	}
	if d := synthDiff(want, got); d != "" {
		t.Fatalf("responses (-want +got):\n%s", d)
	}
	if got[0].GetStarted().GetSessionId() == "" {
		t.Error("started lacks the stream's id")
	}
	asked, _ := up.asked()
	wantAsked := []fakeAsk[slngclient.TTSConfig]{{
		Req: AcquireRequest{Endpoint: slngclient.Endpoint{Model: "deepgram/aura:2"}, Purpose: slngpool.PurposeCaller},
		Cfg: slngclient.TTSConfig{Voice: "aura-2-thalia-en", Encoding: "linear16", SampleRate: 24000},
	}}
	if d := cmp.Diff(wantAsked, asked, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("acquires (-want +got):\n%s", d)
	}
	if reused, err := synthReleased(t, s); !reused || err != nil {
		t.Errorf("session given back with reuse %v, err %v; want it reused", reused, err)
	}
}

// TestSynthesizeEncodings: a caller asking for telephony audio gets SLNG's
// own, unconverted: the session is asked for that encoding at 8 kHz, and
// its audio reaches the caller as it came. (How the init frame spells the
// config is slngclient's, tested there.)
func TestSynthesizeEncodings(t *testing.T) {
	t.Parallel()
	for enc, name := range map[speechv1.AudioEncoding]string{
		speechv1.AudioEncoding_AUDIO_ENCODING_MULAW: "mulaw",
		speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:  "alaw",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h, up := newFakeGateway(t, Config{})
			s := newFakeTTS(name)
			up.tts <- s
			stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{
				Text:   "Telephony audio.",
				Config: &speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{Encoding: enc, SampleRateHz: 8000}},
			})
			if err != nil {
				t.Fatal(err)
			}
			synthWantSent(t, s, "text:Telephony audio.", "flush")
			audio := []byte{0x00, 0x7f, 0x80, 0xff, 0x55, 0xd5, 0x13}
			s.speakTurn(audio)
			resps, err := recvAll(t, stream.Recv)
			if err != nil {
				t.Fatal(err)
			}
			if got := audioOf(resps); !bytes.Equal(got, audio) {
				t.Fatalf("the caller got %v, want SLNG's audio %v as it came", got, audio)
			}
			asked, _ := up.asked()
			if len(asked) != 1 || asked[0].Cfg.Encoding != name || asked[0].Cfg.SampleRate != 8000 {
				t.Fatalf("acquires %+v, want one for %s at 8000 Hz", asked, name)
			}
		})
	}
}

// bidi is a Synthesize stream under test.
type bidi struct {
	t      *testing.T
	stream speechv1.TextToSpeechService_SynthesizeClient
}

func (h *harness) synthesize(t *testing.T, ctx context.Context, cfg *speechv1.SynthesisConfig) *bidi {
	t.Helper()
	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := &bidi{t: t, stream: stream}
	b.send(ttsConfig(cfg))
	return b
}

func (b *bidi) send(r *speechv1.SynthesizeRequest) {
	b.t.Helper()
	if err := b.stream.Send(r); err != nil {
		b.t.Fatalf("send: %v", err)
	}
}

// until receives until pred matches, returning everything received.
func (b *bidi) until(pred func(*speechv1.SynthesizeResponse) bool) []*speechv1.SynthesizeResponse {
	b.t.Helper()
	var out []*speechv1.SynthesizeResponse
	for {
		m, err := b.stream.Recv()
		if err != nil {
			b.t.Fatalf("recv: %v (after %s)", err, kinds(out))
		}
		out = append(out, m)
		if pred(m) {
			return out
		}
	}
}

// synthSpeak sends what a session yields for one turn: its segment, its
// audio and its end (byClose: the socket's normal close after the audio
// ended it, as on routes that close after every turn).
func synthSpeak(s *fakeTTS, seg string, audio []byte, byClose bool) {
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentStart, SegmentID: seg})
	s.send(synthAudioEvent(audio))
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSSegmentEnd, SegmentID: seg})
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd, ByClose: byClose})
}

// synthSpoken is what the caller gets for a turn synthSpeak spoke: audio
// of 24 kHz LINEAR16, in one chunk numbered seq.
func synthSpoken(turn uint64, seg string, audio []byte, seq uint64) []*speechv1.SynthesizeResponse {
	return []*speechv1.SynthesizeResponse{
		{Response: &speechv1.SynthesizeResponse_SegmentStart{SegmentStart: &speechv1.SegmentStart{SegmentId: seg, TurnId: turn}}},
		synthAudioResp(audio, seq, turn),
		{Response: &speechv1.SynthesizeResponse_SegmentEnd{SegmentEnd: &speechv1.SegmentEnd{SegmentId: seg, TurnId: turn}}},
		synthFlushedResp(turn),
		synthAudioEndResp(turn, &speechv1.TurnDelivery{AudioBytes: uint64(len(audio)),
			AudioDuration: durationpb.New(time.Duration(len(audio)) * time.Second / 48000), LastSequence: seq}),
	}
}

// TestSynthesizeMultiTurn: turns are the caller's flushes. A flush before
// any text is not sent upstream (SLNG counts a bare flush as a protocol
// violation), text pieces before a flush make one turn, a Flush message
// ends a turn as a flushed text does, and text never flushed is never
// spoken. On a route that closes after every turn (Rime), each turn still
// queued goes to a new session, one per turn.
func TestSynthesizeMultiTurn(t *testing.T) {
	t.Parallel()
	const unflushed = "Never flushed, so never spoken."
	for _, tc := range []struct {
		model           string
		closesAfterTurn bool // the route closes the socket after every turn
	}{{"deepgram/aura:2", false}, {"slng/rime/arcana:3-en", true}} {
		t.Run(tc.model, func(t *testing.T) {
			t.Parallel()
			h, up := newFakeGateway(t, Config{})
			sessions := []*fakeTTS{newFakeTTS("one"), newFakeTTS("two"), newFakeTTS("three")}
			up.tts <- sessions[0]
			b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{Model: tc.model})
			b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
			b.send(ttsText("First turn, ", false))
			b.send(ttsText("in two parts.", true))
			b.send(ttsText("Second turn.", false))
			b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
			b.send(ttsText("Third turn!", true))
			b.send(ttsText(unflushed, false))
			if err := b.stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			turns := [][]string{
				{"text:First turn, ", "text:in two parts.", "flush"},
				{"text:Second turn.", "flush"},
				{"text:Third turn!", "flush"},
			}
			audio := [][]byte{pcm(960, 1), pcm(1920, 2), pcm(480, 3)}
			synthWantSent(t, sessions[0], slices.Concat(turns[0], turns[1], turns[2], []string{"text:" + unflushed})...)
			for i := range turns {
				s := sessions[0]
				if tc.closesAfterTurn {
					s = sessions[i]
					if i > 0 {
						up.tts <- s
						// The turns still queued, and the unflushed text
						// if the half-close had not come yet.
						want := slices.Concat(turns[i:]...)
						got := synthSentUntil(t, s, len(want))
						if got[len(got)-1] == "text:"+unflushed {
							got = got[:len(got)-1]
						}
						if !slices.Equal(got, want) {
							t.Fatalf("session %s was sent %q, want %q", s.id, got, want)
						}
					}
				}
				synthSpeak(s, fmt.Sprint("seg-", i+1), audio[i], tc.closesAfterTurn)
				if tc.closesAfterTurn {
					s.end(io.EOF)
				}
			}
			resps, err := recvAll(t, b.stream.Recv)
			if err != nil {
				t.Fatalf("stream failed: %v", err)
			}
			want := slices.Concat(synthSpoken(1, "seg-1", audio[0], 1), synthSpoken(2, "seg-2", audio[1], 2), synthSpoken(3, "seg-3", audio[2], 3))
			if len(resps) == 0 || resps[0].GetStarted() == nil {
				t.Fatalf("responses %s, want started first", kinds(resps))
			}
			if d := synthDiff(want, resps[1:]); d != "" {
				t.Fatalf("responses after started (-want +got):\n%s", d)
			}
			asked, _ := up.asked()
			wantPurposes := []slngpool.Purpose{slngpool.PurposeCaller}
			if tc.closesAfterTurn {
				wantPurposes = append(wantPurposes, slngpool.PurposeRollover, slngpool.PurposeRollover)
			}
			var purposes []slngpool.Purpose
			for _, a := range asked {
				purposes = append(purposes, a.Req.Purpose)
			}
			if !slices.Equal(purposes, wantPurposes) {
				t.Errorf("acquires for %v, want %v", purposes, wantPurposes)
			}
		})
	}
}

// TestSynthesizeClearAndCancel interrupts a turn in the middle of its
// audio: the acknowledgement names the turn and what of it was delivered
// (a Cancel's at once, a Clear's when SLNG answers the clear); nothing of
// the interrupted turn arrives after it, not even audio SLNG sent before
// its answer; and the stream goes on with the next turn, on the same
// session, which no other stream gets afterwards.
func TestSynthesizeClearAndCancel(t *testing.T) {
	t.Parallel()
	for _, cancel := range []bool{false, true} {
		name := "clear"
		if cancel {
			name = "cancel"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A fake clock that moves only past the quiet after SLNG's
			// answer: the wait for that answer never times out.
			clk := newTestClock()
			h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk}))
			s := newFakeTTS("one")
			up.tts <- s
			b := h.synthesize(t, testContext(t), nil)
			b.recv("started")
			long := strings.Repeat("A long turn that will be interrupted. ", 20)
			b.send(ttsText(long, true))
			synthWantSent(t, s, "text:"+long, "flush")
			spoken := pcm(960, 1)
			s.send(synthAudioEvent(spoken))
			if d := synthDiff([]*speechv1.SynthesizeResponse{synthAudioResp(spoken, 1, 1)}, []*speechv1.SynthesizeResponse{b.recv("audio")}); d != "" {
				t.Fatalf("first audio (-want +got):\n%s", d)
			}
			// What of the text 20 ms of audio spoke is estimated (too
			// little to hold a character here).
			delivered := &speechv1.TurnDelivery{AudioBytes: 960, AudioDuration: durationpb.New(20 * time.Millisecond), LastSequence: 1,
				SpokenSource: speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED}
			var ack *speechv1.SynthesizeResponse
			if cancel {
				b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Cancel{Cancel: &speechv1.Cancel{}}})
				ack = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cancelled{Cancelled: &speechv1.Cancelled{TurnId: 1, Delivered: delivered}}}
				if d := synthDiff([]*speechv1.SynthesizeResponse{ack}, []*speechv1.SynthesizeResponse{b.recv("cancelled")}); d != "" {
					t.Fatalf("acknowledgement (-want +got):\n%s", d)
				}
			} else {
				b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
				ack = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cleared{Cleared: &speechv1.Cleared{TurnId: 1, Delivered: delivered}}}
			}
			synthWantSent(t, s, "text:"+long, "flush", "clear")
			// Audio of the discarded turn, sent before SLNG's answer.
			s.send(synthAudioEvent(pcm(960, 2)))
			s.send(slngclient.TTSEvent{Kind: slngclient.TTSCleared})
			if !cancel {
				if d := synthDiff([]*speechv1.SynthesizeResponse{ack}, []*speechv1.SynthesizeResponse{b.recv("cleared")}); d != "" {
					t.Fatalf("acknowledgement (-want +got):\n%s", d)
				}
			}
			b.send(ttsText("Next turn.", true))
			// The next turn waits for the session to be quiet after its
			// answer; no timer is due but that one.
			advanceTo(t, clk, clearQuiet)
			synthWantSent(t, s, "text:"+long, "flush", "clear", "text:Next turn.", "flush")
			next := pcm(480, 3)
			s.speakTurn(next)
			if err := b.stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			rest, err := recvAll(t, b.stream.Recv)
			if err != nil {
				t.Fatal(err)
			}
			want := []*speechv1.SynthesizeResponse{
				synthAudioResp(next, 2, 2),
				synthFlushedResp(2),
				synthAudioEndResp(2, &speechv1.TurnDelivery{AudioBytes: 480, AudioDuration: durationpb.New(10 * time.Millisecond), LastSequence: 2}),
			}
			if d := synthDiff(want, rest); d != "" {
				t.Fatalf("after the acknowledgement (-want +got):\n%s", d)
			}
			if reused, _ := synthReleased(t, s); reused {
				t.Error("a session that saw a clear was given back for reuse")
			}
		})
	}
}

// synthWarningEvent is an error frame on a socket SLNG keeps open, as the
// client yields it.
func synthWarningEvent(code string) slngclient.TTSEvent {
	return slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: slngclient.NewErrorFrame(code, "injected "+code)}
}

// TestSynthesizeMidTurnErrorFailsTheTurn: an error frame in the middle of a
// turn on a socket SLNG keeps open means the turn will never finish
// (slng-real-clients.md). The turn ends with turn_failed at once; the turns
// queued behind it are spoken on a new session; the stream goes on. The
// erring session is given up, not reused.
func TestSynthesizeMidTurnErrorFailsTheTurn(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0)) // never moves: no timer fires
	h, up := newFakeGateway(t, Config{Clock: clk})
	one, two := newFakeTTS("one"), newFakeTTS("two")
	up.tts <- one
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.recv("started")
	texts := []string{"This turn meets an error.", "Second turn.", "Third turn."}
	var sent []string
	for _, text := range texts {
		b.send(ttsText(text, true))
		sent = append(sent, "text:"+text, "flush")
	}
	synthWantSent(t, one, sent...)
	a1, a2 := pcm(960, 1), pcm(960, 2)
	one.send(synthAudioEvent(a1))
	one.send(synthAudioEvent(a2))
	one.send(synthWarningEvent("pronunciation_not_found"))
	up.tts <- two
	synthWantSent(t, two, sent[2:]...)
	x, y := pcm(480, 3), pcm(480, 4)
	two.speakTurn(x)
	two.speakTurn(y)
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}
	tenMs := durationpb.New(10 * time.Millisecond)
	want := []*speechv1.SynthesizeResponse{
		synthAudioResp(a1, 1, 1),
		synthAudioResp(a2, 2, 1),
		{Response: &speechv1.SynthesizeResponse_TurnFailed{TurnFailed: &speechv1.TurnFailed{
			TurnId: 1, Code: int32(codes.InvalidArgument), Reason: ReasonUpstreamRequestRejected, Message: "upstream rejected the request",
			UpstreamCode: "pronunciation_not_found",
			Delivered: &speechv1.TurnDelivery{AudioBytes: 1920, AudioDuration: durationpb.New(40 * time.Millisecond), LastSequence: 2,
				SpokenSource: speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		}}},
		{Response: &speechv1.SynthesizeResponse_Reconnected{Reconnected: &speechv1.UpstreamReconnected{
			Reason: "pronunciation_not_found", PreviousUpstreamSessionId: "one", UpstreamSessionId: "two",
			Gap: durationpb.New(0), TurnsReplayed: 2,
		}}},
		synthAudioResp(x, 3, 2),
		synthFlushedResp(2),
		synthAudioEndResp(2, &speechv1.TurnDelivery{AudioBytes: 480, AudioDuration: tenMs, LastSequence: 3}),
		synthAudioResp(y, 4, 3),
		synthFlushedResp(3),
		synthAudioEndResp(3, &speechv1.TurnDelivery{AudioBytes: 480, AudioDuration: tenMs, LastSequence: 4}),
	}
	if d := synthDiff(want, resps); d != "" {
		t.Fatalf("responses (-want +got):\n%s", d)
	}
	reused, relErr := synthReleased(t, one)
	if ue, ok := slngclient.AsUpstreamError(relErr); reused || !ok || ue.Code != "pronunciation_not_found" || !one.isClosed() {
		t.Errorf("the erring session was given back with reuse %v, err %v (closed %v); want it closed, with its error", reused, relErr, one.isClosed())
	}
	if asked, _ := up.asked(); len(asked) != 2 {
		t.Errorf("%d upstream sessions, want 2: the erring one is replaced, not reused", len(asked))
	}
	if v := testutil.ToFloat64(h.metrics.turnsFailed.WithLabelValues(ReasonUpstreamRequestRejected)); v != 1 {
		t.Errorf("turns failed metric = %v, want 1", v)
	}

	// The next stream is served as any.
	three := newFakeTTS("three")
	up.tts <- three
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Only turn."})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, three, "text:Only turn.", "flush")
	three.speakTurn(pcm(480, 5))
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatalf("the next stream: %v", err)
	}

	// SynthesizeText has one turn: it ends with the mapped status.
	h2, up2 := newFakeGateway(t, Config{Clock: clk})
	four := newFakeTTS("four")
	up2.tts <- four
	stream, err = h2.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Never finished."})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, four, "text:Never finished.", "flush")
	four.send(synthAudioEvent(a1))
	four.send(synthAudioEvent(a2))
	four.send(synthWarningEvent("pronunciation_not_found"))
	_, err = recvAll(t, stream.Recv)
	st := wantStatus(t, err, codes.InvalidArgument, ReasonUpstreamRequestRejected)
	if info, _ := details(st); info.GetMetadata()["turn_id"] != "1" || info.GetMetadata()["delivered_bytes"] != "1920" ||
		info.GetMetadata()["last_sequence"] != "2" || info.GetMetadata()["upstream_code"] != "pronunciation_not_found" {
		t.Errorf("metadata %v", info.GetMetadata())
	}
}

// TestSynthesizeWarningBetweenTurns: an error frame while no turn is in
// progress is a warning, and the next turn is spoken on the same session,
// which no other stream gets afterwards.
func TestSynthesizeWarningBetweenTurns(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	s := newFakeTTS("one")
	up.tts <- s
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.recv("started")
	s.send(synthWarningEvent("pronunciation_not_found"))
	want := synthWarningResp("pronunciation_not_found", "injected pronunciation_not_found")
	if d := synthDiff([]*speechv1.SynthesizeResponse{want}, []*speechv1.SynthesizeResponse{b.recv("warning")}); d != "" {
		t.Fatalf("warning (-want +got):\n%s", d)
	}
	b.send(ttsText("Still spoken.", true))
	synthWantSent(t, s, "text:Still spoken.", "flush")
	audio := pcm(960, 1)
	synthSpeak(s, "seg-1", audio, false)
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	if d := synthDiff(synthSpoken(1, "seg-1", audio, 1), resps); d != "" {
		t.Fatalf("responses (-want +got):\n%s", d)
	}
	if v := testutil.ToFloat64(h.metrics.warnings.WithLabelValues("tts")); v != 1 {
		t.Errorf("warnings metric = %v, want 1", v)
	}
	if reused, err := synthReleased(t, s); reused || err != nil {
		t.Errorf("session given back with reuse %v, err %v; want it closed, not reused", reused, err)
	}
	if asked, _ := up.asked(); len(asked) != 1 {
		t.Errorf("%d upstream sessions, want 1", len(asked))
	}
}

// synthFailure is how SLNG fails a session, as the client reports it:
// a refused handshake fails the acquire; otherwise the session yields the
// error frame, if any, as a warning, then ends with end.
type synthFailure struct {
	acquire, frame, end *slngclient.UpstreamError
}

// synthClassified sets Retryable as the client's constructors do.
func synthClassified(ue *slngclient.UpstreamError) *slngclient.UpstreamError {
	ue.Retryable = ue.Class().Retryable
	return ue
}

func synthRefusedHandshake(status int) synthFailure {
	return synthFailure{acquire: synthClassified(&slngclient.UpstreamError{Kind: slngclient.KindHandshake, HTTPStatus: status})}
}

// synthFatalFrame is an error frame with the close that follows it.
func synthFatalFrame(code string, closeCode int) synthFailure {
	frame := slngclient.NewErrorFrame(code, "injected "+code)
	end := *frame
	end.CloseCode = closeCode
	return synthFailure{frame: frame, end: synthClassified(&end)}
}

func synthClosedWith(ue *slngclient.UpstreamError) synthFailure {
	return synthFailure{end: synthClassified(ue)}
}

// TestUpstreamErrorTable drives each row of docs/errors.md that comes from
// SLNG through a stream, on SynthesizeText and Transcribe: a session
// failing as the client reports each failure ends the stream with the
// row's status, naming the model and the stream. (That the client reports
// SLNG's handshakes, error frames and closes so is slngclient's
// TestHandshakeRejections, TestErrorCodes, TestCloseCodes, TestReaps and
// TestConnectionLossIsNotEOF; toStatus alone is TestToStatusTable.)
//
// The Synthesize session fails once its turn went up. An error frame
// that may pass sends the turn, none of whose audio came, to a new session
// once; a close with no frame, to new sessions until maxReconnects.
func TestUpstreamErrorTable(t *testing.T) {
	t.Parallel()
	rows := []struct {
		name   string
		fail   synthFailure
		code   codes.Code
		reason string
	}{
		{"handshake:401", synthRefusedHandshake(401), codes.Internal, ReasonUpstreamAuthFailed},
		{"handshake:403", synthRefusedHandshake(403), codes.Internal, ReasonUpstreamAuthFailed},
		{"handshake:400", synthRefusedHandshake(400), codes.InvalidArgument, ReasonUpstreamConfigRejected},
		{"handshake:404", synthRefusedHandshake(404), codes.NotFound, ReasonUpstreamModelNotFound},
		{"handshake:429", synthRefusedHandshake(429), codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"handshake:503", synthRefusedHandshake(503), codes.Unavailable, ReasonUpstreamUnavailable},
		{"handshake:500", synthRefusedHandshake(500), codes.Unavailable, ReasonUpstreamUnavailable},
		{"auth_error", synthFatalFrame("auth_error", 1008), codes.Internal, ReasonUpstreamAuthFailed},
		{"config_error", synthFatalFrame("config_error", 1008), codes.InvalidArgument, ReasonUpstreamConfigRejected},
		{"invalid_request", synthFatalFrame("invalid_request", 1008), codes.InvalidArgument, ReasonUpstreamRequestRejected},
		{"payload_too_large", synthFatalFrame("payload_too_large", 1008), codes.InvalidArgument, ReasonUpstreamRequestRejected},
		{"rate_limit", synthFatalFrame("rate_limit", 1008), codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"rate_limit_exceeded", synthFatalFrame("rate_limit_exceeded", 1008), codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"provider_error", synthFatalFrame("provider_error", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"backend_connection_failed", synthFatalFrame("backend_connection_failed", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"backend_error", synthFatalFrame("backend_error", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"not_ready", synthFatalFrame("not_ready", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"backpressure", synthFatalFrame("backpressure", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"stt_metering_unavailable", synthFatalFrame("stt_metering_unavailable", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"translation_error", synthFatalFrame("translation_error", 1011), codes.Unavailable, ReasonUpstreamUnavailable},
		{"idle_timeout_exceeded", synthFatalFrame("idle_timeout_exceeded", 1008), codes.Unavailable, ReasonUpstreamSessionExpired},
		{"max_connection_duration_exceeded", synthFatalFrame("max_connection_duration_exceeded", 1008), codes.Unavailable, ReasonUpstreamSessionExpired},
		{"brand_new_error", synthFatalFrame("brand_new_error", 1011), codes.Unknown, ReasonUpstreamUnknownError},
		{"close:1008", synthClosedWith(&slngclient.UpstreamError{Kind: slngclient.KindClose, CloseCode: 1008}), codes.Unavailable, ReasonUpstreamSessionExpired},
		// A bare 1011 on a session with no audio in flight: a reap.
		{"close:1011", synthClosedWith(&slngclient.UpstreamError{Kind: slngclient.KindClose, CloseCode: 1011}), codes.Unavailable, ReasonUpstreamSessionExpired},
		{"close:1012", synthClosedWith(&slngclient.UpstreamError{Kind: slngclient.KindClose, CloseCode: 1012}), codes.Unavailable, ReasonUpstreamSessionExpired},
		{"drop", synthClosedWith(&slngclient.UpstreamError{Kind: slngclient.KindTransport, CloseCode: 1006, Message: "connection lost"}), codes.Unavailable, ReasonUpstreamUnavailable},
		{"oversized", synthClosedWith(&slngclient.UpstreamError{Kind: slngclient.KindProtocol, Message: "frame over the read limit"}), codes.Unavailable, ReasonUpstreamProtocolError},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			h, up := newFakeGateway(t, Config{Clock: clock.NewFake(time.Unix(1_000_000, 0))})
			ctx := testContext(t)
			lent, err := synthesizeFailing(t, h, up, row.fail)
			st := wantStatus(t, err, row.code, row.reason)
			info, _ := details(st)
			if info.GetMetadata()["model"] != "deepgram/aura:2" || info.GetMetadata()["session_id"] == "" {
				t.Errorf("metadata = %v", info.GetMetadata())
			}
			if strings.Contains(st.Message(), testKey) || strings.Contains(st.String(), testKey) {
				t.Fatal("the key leaked into the status")
			}
			wantLent := 0
			switch f := row.fail; {
			case f.acquire != nil:
			case f.frame != nil && f.frame.Retryable:
				wantLent = 2
			case f.frame == nil && f.end.Retryable:
				wantLent = maxReconnects + 1
			default:
				wantLent = 1
			}
			if lent != wantLent {
				t.Errorf("the stream used %d sessions, want %d", lent, wantLent)
			}

			// Transcribe: every session fails as soon as it is lent.
			if row.fail.acquire != nil {
				up.stt <- row.fail.acquire
			} else {
				for i := range maxReconnects + 1 {
					s := newFakeSTT(fmt.Sprint("stt-", i+1))
					if row.fail.frame != nil {
						s.send(slngclient.STTEvent{Kind: slngclient.STTWarning, Err: row.fail.frame})
					}
					s.end(row.fail.end)
					up.stt <- s
				}
			}
			_, err = h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, pcm(16000, 1), 3200)
			wantStatus(t, err, row.code, row.reason)
		})
	}
}

// synthesizeFailing runs SynthesizeText("Hello.") on sessions that each
// fail as f says once the turn went up to them, and returns how the stream
// ended and how many sessions it was lent.
func synthesizeFailing(t *testing.T, h *harness, up *fakeUpstream, f synthFailure) (int, error) {
	t.Helper()
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Hello."})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := recvAll(t, stream.Recv)
		ended <- err
	}()
	if f.acquire != nil {
		up.tts <- f.acquire
		return 0, <-ended
	}
	for lent := 0; ; lent++ {
		if lent > 2*maxReconnects {
			t.Fatalf("the stream took %d sessions and goes on asking", lent)
		}
		s := newFakeTTS(fmt.Sprint("tts-", lent+1))
		up.tts <- s
		var err error
		done := false
		waitFor(t, func() bool {
			select {
			case err = <-ended:
				done = true
				return true
			default:
				return slices.Contains(s.sentList(), "flush")
			}
		}, "the turn on session "+s.id+", or the stream's end")
		if done {
			return lent, err
		}
		if f.frame != nil {
			s.send(slngclient.TTSEvent{Kind: slngclient.TTSWarning, Err: f.frame})
		}
		s.end(f.end)
	}
}

// TestSynthesizeUpstreamFailsMidTurn: a connection lost after part of the
// only turn's audio ends SynthesizeText with UNAVAILABLE, saying how much
// of the turn the caller got: replaying it would repeat that audio.
func TestSynthesizeUpstreamFailsMidTurn(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	s := newFakeTTS("one")
	up.tts <- s
	text := strings.Repeat("x", 200)
	stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, s, "text:"+text, "flush")
	s.send(synthAudioEvent(pcm(960, 1)))
	s.send(synthAudioEvent(pcm(960, 2)))
	s.end(errFakeLost)
	resps, err := recvAll(t, stream.Recv)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
	if got := len(audioOf(resps)); got != 1920 {
		t.Errorf("the caller got %d bytes of audio, want the 1920 that came", got)
	}
	if md, _ := details(st); md.GetMetadata()["turn_id"] != "1" || md.GetMetadata()["delivered_bytes"] != "1920" {
		t.Errorf("metadata %v", md.GetMetadata())
	}
	if asked, _ := up.asked(); len(asked) != 1 {
		t.Errorf("%d upstream sessions, want 1: a turn cut in its audio is not replayed", len(asked))
	}
}

// TestSynthesizeIgnoresUnknownAndMalformedFrames stays on the simulator:
// the frames are skipped by the real client, and the unknown-frames metric
// counts what the real session's Stats report (slngclient's
// TestIgnoresUnknownAndMalformed and TestSkippedFramesKeepAudioIntact test
// the skipping itself).
func TestSynthesizeIgnoresUnknownAndMalformedFrames(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"*=unknown@ready", "*=malformed@ready"} {
		h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults(fault)}, Config{})
		resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Robust."})
		if err != nil {
			t.Fatalf("%s: %v", fault, err)
		}
		if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != "Robust." {
			t.Fatalf("%s: decoded %q", fault, got)
		}
		n := testutil.ToFloat64(h.metrics.unknownFrames.WithLabelValues("tts"))
		if strings.Contains(fault, "unknown") && n < 1 {
			t.Errorf("%s: unknown frames metric = %v, want it counted", fault, n)
		}
	}
}

// TestSynthesizeCallerCancelClosesUpstream: a caller that goes in the
// middle of a turn ends the stream CANCELLED, and its session is closed at
// once, never reused.
func TestSynthesizeCallerCancelClosesUpstream(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	s := newFakeTTS("one")
	up.tts <- s
	ctx, cancel := context.WithCancel(testContext(t))
	b := h.synthesize(t, ctx, nil)
	b.recv("started")
	text := strings.Repeat("Interrupted by the caller. ", 20)
	b.send(ttsText(text, true))
	synthWantSent(t, s, "text:"+text, "flush")
	s.send(synthAudioEvent(pcm(960, 1)))
	b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
	cancel()
	_, err := recvAll(t, b.stream.Recv)
	wantStatus(t, err, codes.Canceled, "")
	waitFor(t, s.isClosed, "the upstream session to close")
	// The gateway sees the cancel as its context's or as the caller's
	// stream failing with CANCELLED, whichever gRPC delivers first.
	if reused, relErr := synthReleased(t, s); reused || (!errors.Is(relErr, context.Canceled) && status.Code(relErr) != codes.Canceled) {
		t.Errorf("session given back with reuse %v, err %v; want it dropped for the cancel", reused, relErr)
	}
}

// TestSynthesizeDeadline: a caller's deadline that passes in the middle of
// a turn ends the stream DEADLINE_EXCEEDED, and its session is closed at
// once, never reused. The deadline is the caller's, on the real clock (the
// gateway sees it as its own deadline or as the caller's cancel, whichever
// of the two gRPC delivers first).
func TestSynthesizeDeadline(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	s := newFakeTTS("one")
	up.tts <- s
	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	text := strings.Repeat("Too slow. ", 40)
	stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, s, "text:"+text, "flush")
	s.send(synthAudioEvent(pcm(960, 1)))
	_, err = recvAll(t, stream.Recv)
	wantStatus(t, err, codes.DeadlineExceeded, "")
	waitFor(t, s.isClosed, "the upstream session to close")
	if reused, relErr := synthReleased(t, s); reused || relErr == nil {
		t.Errorf("session given back with reuse %v, err %v; want it dropped", reused, relErr)
	}
}

func TestStreamLimits(t *testing.T) {
	t.Parallel()
	t.Run("max stream duration", func(t *testing.T) {
		t.Parallel()
		// The stream's only timer is its maximum duration.
		clk := clock.NewFake(time.Unix(1_000_000, 0))
		h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, MaxStreamDuration: time.Minute}))
		s := newFakeTTS("one")
		up.tts <- s
		text := strings.Repeat("Long. ", 50)
		stream, err := h.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		synthWantSent(t, s, "text:"+text, "flush")
		s.send(synthAudioEvent(pcm(960, 1)))
		for _, what := range []string{"started", "audio"} {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
		}
		advanceJustShort(t, clk, time.Minute)
		if err := clk.WaitArmed(testContext(t), 1); err != nil || clk.Armed() != 1 {
			t.Fatal("the stream ended before its maximum duration")
		}
		clk.Advance(time.Millisecond)
		_, err = recvAll(t, stream.Recv)
		wantStatus(t, err, codes.OutOfRange, ReasonStreamDurationExceeded)
		waitFor(t, s.isClosed, "the upstream session to close")
	})
	t.Run("max streams", func(t *testing.T) {
		t.Parallel()
		h, up := newFakeGateway(t, Config{MaxStreams: 1})
		up.tts <- newFakeTTS("one")
		b := h.synthesize(t, testContext(t), nil)
		b.recv("started") // the stream holds the only slot
		_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "No room."})
		wantStatus(t, err, codes.ResourceExhausted, ReasonGatewayOverloaded)
		if asked, _ := up.asked(); len(asked) != 1 {
			t.Errorf("%d acquires, want 1: a refused stream asks for no session", len(asked))
		}
	})
}

// TestDrain checks shutdown: a stream mid-turn hears of the drain, finishes
// the turn and then ends with SERVER_DRAINING; an idle one ends at once; a
// Transcribe stream ends its audio and delivers the finals that answer it;
// new streams are refused.
func TestDrain(t *testing.T) {
	t.Parallel()
	h, up := newFakeGateway(t, Config{})
	ctx := testContext(t)
	busySession, idleSession := newFakeTTS("busy"), newFakeTTS("idle")
	up.tts <- busySession
	busy := h.synthesize(t, ctx, nil)
	busy.recv("started")
	const text = "This turn completes despite the drain."
	busy.send(ttsText(text, true))
	synthWantSent(t, busySession, "text:"+text, "flush")
	first, second := pcm(960, 1), pcm(960, 2)
	busySession.send(synthAudioEvent(first))
	busy.recv("audio")
	up.tts <- idleSession
	idle := h.synthesize(t, ctx, nil)
	idle.recv("started")

	sttSession := newFakeSTT("stt")
	sttSession.endOnEnd = false // it ends when the test says
	up.stt <- sttSession
	stt, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stt.Send(sttConfig(nil)); err != nil {
		t.Fatal(err)
	}
	audio := pcm(3200, 1)
	if err := stt.Send(sttAudioReq(audio)); err != nil {
		t.Fatal(err)
	}
	if m, err := stt.Recv(); err != nil || m.GetStarted() == nil {
		t.Fatalf("started: %v %v", m, err)
	}
	// The session has heard the audio, so the drain has something to
	// deliver.
	waitFor(t, func() bool { return len(sttSession.received()) == len(audio) }, "the STT session to hear the audio")

	h.srv.Drain()

	draining := &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Draining{Draining: &speechv1.ServerDraining{Grace: durationpb.New(25 * time.Second)}}}
	if d := synthDiff([]*speechv1.SynthesizeResponse{draining}, []*speechv1.SynthesizeResponse{busy.recv("draining")}); d != "" {
		t.Fatalf("busy stream (-want +got):\n%s", d)
	}
	// The turn in progress goes on to its end.
	busySession.send(synthAudioEvent(second))
	busySession.send(synthTurnEndEvent())
	rest, err := recvAll(t, busy.stream.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	want := []*speechv1.SynthesizeResponse{
		synthAudioResp(second, 2, 1),
		synthFlushedResp(1),
		synthAudioEndResp(1, &speechv1.TurnDelivery{AudioBytes: 1920, AudioDuration: durationpb.New(40 * time.Millisecond), LastSequence: 2}),
	}
	if d := synthDiff(want, rest); d != "" {
		t.Fatalf("the busy turn after the drain (-want +got):\n%s", d)
	}

	rest, err = recvAll(t, idle.stream.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	if d := synthDiff([]*speechv1.SynthesizeResponse{draining}, rest); d != "" {
		t.Fatalf("idle stream (-want +got):\n%s", d)
	}

	writes := func() []string {
		sttSession.mu.Lock()
		defer sttSession.mu.Unlock()
		return slices.Clone(sttSession.writes)
	}
	waitFor(t, func() bool { return slices.Contains(writes(), "close") }, "the STT stream to end its audio")
	sttSession.send(final("Heard before the drain."))
	sttSession.end(io.EOF)
	finals, err := recvAll(t, stt.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	if got := finalText(finals); got != "Heard before the drain." {
		t.Fatalf("finals during drain: %q", got)
	}

	_, err = h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Too late."})
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	if tts, _ := up.asked(); len(tts) != 2 {
		t.Errorf("%d TTS acquires, want 2: a refused stream asks for no session", len(tts))
	}
}

// waitFor waits, for up to 10 s, until cond holds (poll.Wait).
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	poll.Wait(t, ctx, what, cond)
}

// BenchmarkSynthesizeChunk measures one 20 ms chunk of 24 kHz LINEAR16
// (960 bytes) through the whole gateway, unpaced: the simulator's write,
// the session's reader, the down pump, gRPC over an in-memory connection
// and the client's decoding. Everything runs in this process, so the
// figures are the sum of all of it; compare them between changes.
func BenchmarkSynthesizeChunk(b *testing.B) {
	benchmarkChunks(b, slngsim.Options{}, &speechv1.SynthesisConfig{})
}

// benchmarkChunks is BenchmarkSynthesizeChunk on a simulator with simOpts
// and a stream configured with cfg (24 kHz LINEAR16 by default).
func benchmarkChunks(b *testing.B, simOpts slngsim.Options, cfg *speechv1.SynthesisConfig) {
	h := newHarness(b, simOpts, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: cfg}}); err != nil {
		b.Fatal(err)
	}
	turn := &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{
		Text: &speechv1.TextInput{Text: strings.Repeat("Benchmark audio. ", 400), Flush: true}}}
	if err := stream.Send(turn); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		for {
			m, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if m.GetAudio() != nil {
				break
			}
			if m.GetAudioEnd() != nil {
				if err := stream.Send(turn); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.StopTimer()
	if err := stream.CloseSend(); err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
}

// TestSynthesizeTurnTimeout: a turn that stops making progress on a socket
// that stays open ends with turn_failed exactly one turn timeout after its
// last progress; the session is given up as failing, and the next turn is
// spoken on a new one.
func TestSynthesizeTurnTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 15 * time.Second
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	// The stream's only timer is the turn timeout.
	h, up := newFakeGateway(t, onlyTimersSet(Config{Clock: clk, TurnTimeout: timeout}))
	one, two := newFakeTTS("one"), newFakeTTS("two")
	up.tts <- one
	b := h.synthesize(t, testContext(t), nil)
	b.recv("started")
	const stuck = "This turn gets stuck after three chunks of its audio."
	b.send(ttsText(stuck, true))
	b.send(ttsText("Second turn.", true))
	synthWantSent(t, one, "text:"+stuck, "flush", "text:Second turn.", "flush")
	for i := range 3 {
		one.send(synthAudioEvent(pcm(960, byte(i))))
		b.recv("audio")
	}
	advanceJustShort(t, clk, timeout)
	if err := clk.WaitArmed(testContext(t), 1); err != nil || clk.Armed() != 1 {
		t.Fatal("the turn timed out early")
	}
	clk.Advance(time.Millisecond)
	up.tts <- two
	synthWantSent(t, two, "text:Second turn.", "flush")
	second := pcm(480, 9)
	two.speakTurn(second)
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}
	want := []*speechv1.SynthesizeResponse{
		{Response: &speechv1.SynthesizeResponse_TurnFailed{TurnFailed: &speechv1.TurnFailed{
			TurnId: 1, Code: int32(codes.Unavailable), Reason: ReasonUpstreamTurnTimeout, Message: "upstream made no progress on the turn in time",
			Delivered: &speechv1.TurnDelivery{AudioBytes: 2880, AudioDuration: durationpb.New(60 * time.Millisecond), LastSequence: 3,
				SpokenSource: speechv1.SpokenSource_SPOKEN_SOURCE_ESTIMATED},
		}}},
		{Response: &speechv1.SynthesizeResponse_Reconnected{Reconnected: &speechv1.UpstreamReconnected{
			Reason: "turn_timeout", PreviousUpstreamSessionId: "one", UpstreamSessionId: "two", Gap: durationpb.New(0), TurnsReplayed: 1,
		}}},
		synthAudioResp(second, 4, 2),
		synthFlushedResp(2),
		synthAudioEndResp(2, &speechv1.TurnDelivery{AudioBytes: 480, AudioDuration: durationpb.New(10 * time.Millisecond), LastSequence: 4}),
	}
	if d := synthDiff(want, resps); d != "" {
		t.Fatalf("responses after the stuck turn's audio (-want +got):\n%s", d)
	}
	if v := testutil.ToFloat64(h.metrics.turnsFailed.WithLabelValues(ReasonUpstreamTurnTimeout)); v != 1 {
		t.Errorf("turns failed metric = %v, want 1", v)
	}
	// For the pool, a session stuck in a turn is SLNG failing.
	if reused, relErr := synthReleased(t, one); reused || !errors.Is(relErr, errTurnTimeout) || !one.isClosed() {
		t.Errorf("the stuck session was given back with reuse %v, err %v (closed %v)", reused, relErr, one.isClosed())
	}

	// SynthesizeText ends with the status.
	clk2 := clock.NewFake(time.Unix(1_000_000, 0))
	h2, up2 := newFakeGateway(t, onlyTimersSet(Config{Clock: clk2, TurnTimeout: timeout}))
	s := newFakeTTS("three")
	up2.tts <- s
	stream, err := h2.tts.SynthesizeText(testContext(t), &speechv1.SynthesizeTextRequest{Text: "Stuck for good."})
	if err != nil {
		t.Fatal(err)
	}
	synthWantSent(t, s, "text:Stuck for good.", "flush")
	for i := range 3 {
		s.send(synthAudioEvent(pcm(960, byte(i))))
	}
	for _, what := range []string{"started", "audio 1", "audio 2", "audio 3"} {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	advanceTo(t, clk2, timeout)
	_, err = recvAll(t, stream.Recv)
	st := wantStatus(t, err, codes.Unavailable, ReasonUpstreamTurnTimeout)
	if info, _ := details(st); info.GetMetadata()["last_sequence"] != "3" {
		t.Errorf("metadata %v", info.GetMetadata())
	}
}

// TestSynthesizeRollsOverBetweenTurns: past the maximum session age, the
// stream moves to a new upstream session at a turn boundary, never in the
// middle of a turn: the old session is closed gracefully as its turn ends,
// and the next text dials a new one.
func TestSynthesizeRollsOverBetweenTurns(t *testing.T) {
	t.Parallel()
	// Sessions are ready when made; the stream's clock, the real one, has
	// moved on by the first turn's end.
	h, up := newFakeGateway(t, Config{MaxUpstreamSessionAge: time.Nanosecond})
	sessions := []*fakeTTS{newFakeTTS("one"), newFakeTTS("two"), newFakeTTS("three")}
	up.tts <- sessions[0]
	b := h.synthesize(t, testContext(t), nil)
	b.recv("started")
	texts := []string{"One.", "Two.", "Three."}
	for i, text := range texts {
		s := sessions[i]
		if i > 0 {
			up.tts <- s
		}
		b.send(ttsText(text, true))
		synthWantSent(t, s, "text:"+text, "flush")
		audio := pcm(480, byte(i))
		s.speakTurn(audio)
		resps := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudioEnd() != nil })
		if got := audioOf(resps); !bytes.Equal(got, audio) {
			t.Fatalf("turn %d: the caller got %d bytes, want the session's %d", i+1, len(got), len(audio))
		}
		// The old session is closed at the turn's end, before the next
		// text: a text that arrived before would be spoken on it.
		waitFor(t, s.isClosed, "session "+s.id+" to close")
		if asked, _ := up.asked(); len(asked) != i+1 {
			t.Fatalf("%d sessions asked for after turn %d: a new one was dialled before any text needed it", len(asked), i+1)
		}
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, b.stream.Recv); err != nil {
		t.Fatal(err)
	}
	asked, _ := up.asked()
	if len(asked) != 3 {
		t.Errorf("%d upstream sessions for 3 turns past the maximum age, want 3", len(asked))
	}
	// Every turn, the third too, ended before the caller's half-close.
	if v := testutil.ToFloat64(h.metrics.reconnects.WithLabelValues("tts", "rollover")); v != 3 {
		t.Errorf("rollover metric = %v, want 3", v)
	}
	for i, s := range sessions {
		// One turn each, then a graceful close, not a failure.
		synthWantSent(t, s, "text:"+texts[i], "flush")
		if reused, err := synthReleased(t, s); reused || err != nil {
			t.Errorf("session %s given back with reuse %v, err %v; want it closed, no failure", s.id, reused, err)
		}
	}
}

// TestSynthesizeReusesSessionsWhateverTheRouteEndsTurnsWith: a stream
// returns its session to the pool as soon as its last turn ended, whether
// the route sends one end-of-turn signal or two (the session drops the
// second itself), and the next stream gets it warm with nothing of the old
// turn unread.
//
// It stays on the simulator: its point is the routes' end-of-turn frames,
// which the real session reads, and the real pool's standbys and metrics.
// That a stream gives back a session, every turn on it complete, for reuse
// is TestSynthesizeTextResponses, on fakes.
func TestSynthesizeReusesSessionsWhateverTheRouteEndsTurnsWith(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile string
	}{
		{"audio-end-only"},
		{"flushed-only"},
		{"rich"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			t.Parallel()
			p, err := slngsim.ProfileByName(tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			h := newPooledHarness(t, slngsim.Options{Profile: &p}, Config{}, slngpool.Options{DialAttempts: 1})
			for i := range 3 {
				resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Learn me."})
				if err != nil {
					t.Fatal(err)
				}
				if got := kinds(resps); !strings.HasSuffix(got, "flushed audio_end") {
					t.Fatalf("stream %d: %s", i, got)
				}
			}
			// No session went back to the pool with an end-of-turn frame
			// of its last turn unread: none was spoiled as a standby.
			if n := h.counter(t, "speech_gateway_pool_discards_total", map[string]string{"reason": "spoiled"}); n != 0 {
				t.Errorf("%v standbys spoiled", n)
			}
			if n := h.counter(t, "speech_gateway_pool_standby_deaths_total", nil); n != 0 {
				t.Errorf("%v standbys died unused", n)
			}
			if n := h.counter(t, "speech_gateway_pool_acquires_total", map[string]string{"result": "hit"}); n < 2 {
				t.Errorf("%v streams got a warm session, want 2", n)
			}
		})
	}
}
