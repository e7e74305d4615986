package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/poll"
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
			cfg := st.GetConfig()
			if cfg.GetModel() != "deepgram/aura:2" || cfg.GetVoice() != "aura-2-thalia-en" ||
				cfg.GetFormat().GetEncoding() != speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16 || cfg.GetFormat().GetSampleRateHz() != 24000 {
				t.Errorf("effective config = %v", cfg)
			}
			if st.GetLimits().GetMaxTextBytes() != 64<<10 {
				t.Errorf("limits = %v", st.GetLimits())
			}
			checkSequences(t, resps)
			audio := audioOf(resps)
			got, err := slngsim.Decode(audio, "linear16", 24000)
			if err != nil || got != text {
				t.Fatalf("round trip lost the text: %v", err)
			}
			end := resps[len(resps)-1].GetAudioEnd()
			// AudioEnd.duration is the model's, when the signal that
			// ended the turn carried it; the delivery is always there.
			if end.GetTurnId() != 1 || end.GetDelivered().GetAudioBytes() != uint64(len(audio)) {
				t.Errorf("audio_end = %v (audio %d bytes)", end, len(audio))
			}
			wantDur := time.Duration(float64(len(audio)) / 48000 * float64(time.Second))
			if d := end.GetDelivered().GetAudioDuration().AsDuration(); d != wantDur {
				t.Errorf("delivered duration %v, want %v", d, wantDur)
			}
		})
	}
}

func TestSynthesizeEncodings(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{})
	for enc, name := range map[speechv1.AudioEncoding]string{
		speechv1.AudioEncoding_AUDIO_ENCODING_MULAW: "mulaw",
		speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:  "alaw",
	} {
		resps, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{
			Text:   "Telephony audio.",
			Config: &speechv1.SynthesisConfig{Format: &speechv1.AudioFormat{Encoding: enc, SampleRateHz: 8000}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := slngsim.Decode(audioOf(resps), name, 8000); err != nil || got != "Telephony audio." {
			t.Fatalf("%s: decoded %q, %v", name, got, err)
		}
		init := string(h.sim.Sessions()[len(h.sim.Sessions())-1].Init)
		if !strings.Contains(init, `"encoding":"`+name+`"`) || !strings.Contains(init, `"sample_rate":8000`) {
			t.Fatalf("init = %s", init)
		}
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

func TestSynthesizeMultiTurn(t *testing.T) {
	t.Parallel()
	for _, model := range []string{"deepgram/aura:2", "slng/rime/arcana:3-en"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{}, Config{})
			b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{Model: model})
			// A flush before any text is ignored, not sent upstream.
			b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
			texts := []string{"First turn, in two parts.", "Second turn.", "Third turn!"}
			b.send(ttsText("First turn, ", false))
			b.send(ttsText("in two parts.", true))
			b.send(ttsText(texts[1], false))
			b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
			b.send(ttsText(texts[2], true))
			b.send(ttsText("Never flushed, so never spoken.", false))
			if err := b.stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			resps, err := recvAll(t, b.stream.Recv)
			if err != nil {
				t.Fatalf("stream failed: %v", err)
			}
			turn := "segment_start audio segment_end flushed audio_end"
			if got, want := kinds(resps), "started "+turn+" "+turn+" "+turn; got != want {
				t.Fatalf("responses:\n got %s\nwant %s", got, want)
			}
			checkSequences(t, resps)
			perTurn := map[uint64][]byte{}
			for _, r := range resps {
				if a := r.GetAudio(); a != nil {
					perTurn[a.GetTurnId()] = append(perTurn[a.GetTurnId()], a.GetData()...)
				}
			}
			for i, want := range texts {
				got, err := slngsim.Decode(perTurn[uint64(i+1)], "linear16", 24000)
				if err != nil || got != want {
					t.Errorf("turn %d: %q, %v; want %q", i+1, got, err, want)
				}
			}
			if v := h.sim.Stats().ProtocolViolations; v != 0 {
				t.Errorf("simulator saw %d protocol violations", v)
			}
			wantConns := int64(1)
			if strings.Contains(model, "rime/") {
				wantConns = 3 // the model closes after every turn
			}
			if c := h.sim.Stats().Connections; c != wantConns {
				t.Errorf("upstream connections = %d, want %d", c, wantConns)
			}
		})
	}
}

// TestSynthesizeClearAndCancel interrupts real-time turns: nothing of an
// interrupted turn arrives after its acknowledgement, and the stream goes
// on with the next turn.
func TestSynthesizeClearAndCancel(t *testing.T) {
	t.Parallel()
	for _, cancel := range []bool{false, true} {
		name := "clear"
		if cancel {
			name = "cancel"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{Realtime: true}, Config{})
			b := h.synthesize(t, testContext(t), nil)
			b.send(ttsText(strings.Repeat("A long turn that will be interrupted. ", 20), true))
			b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
			if cancel {
				b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Cancel{Cancel: &speechv1.Cancel{}}})
			} else {
				b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
			}
			resps := b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetCleared() != nil || m.GetCancelled() != nil })
			ack := resps[len(resps)-1]
			var delivered *speechv1.TurnDelivery
			var turnID uint64
			if cancel {
				delivered, turnID = ack.GetCancelled().GetDelivered(), ack.GetCancelled().GetTurnId()
			} else {
				delivered, turnID = ack.GetCleared().GetDelivered(), ack.GetCleared().GetTurnId()
			}
			if turnID != 1 || delivered.GetAudioBytes() == 0 || delivered.GetLastSequence() == 0 {
				t.Fatalf("ack = %v", ack)
			}
			b.send(ttsText("Next turn.", true))
			if err := b.stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			rest, err := recvAll(t, b.stream.Recv)
			if err != nil {
				t.Fatal(err)
			}
			var next []byte
			for _, r := range rest {
				if a := r.GetAudio(); a != nil {
					if a.GetTurnId() == 1 {
						t.Fatalf("audio of the interrupted turn after its acknowledgement: %s", kinds(rest))
					}
					next = append(next, a.GetData()...)
				}
				if r.GetAudioEnd() != nil && r.GetAudioEnd().GetTurnId() != 2 {
					t.Fatalf("audio_end for turn %d", r.GetAudioEnd().GetTurnId())
				}
			}
			if got, err := slngsim.Decode(next, "linear16", 24000); err != nil || got != "Next turn." {
				t.Fatalf("next turn decoded %q, %v", got, err)
			}
		})
	}
}

// TestSynthesizeMidTurnErrorFailsTheTurn: an error frame in the middle of a
// turn on a socket SLNG keeps open means the turn will never finish
// (slng-real-clients.md). The turn ends with turn_failed at once; the turns
// queued behind it are spoken on a new session; the stream goes on.
func TestSynthesizeMidTurnErrorFailsTheTurn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Script: onFirstConnection("*=error:pronunciation_not_found@chunks:2")}, Config{})
	m := h.metrics
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	texts := []string{"This turn meets an error.", "Second turn.", "Third turn."}
	for _, text := range texts {
		b.send(ttsText(text, true))
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}
	var failed *speechv1.TurnFailed
	perTurn := map[uint64][]byte{}
	ended := map[uint64]int{}
	for _, r := range resps {
		if f := r.GetTurnFailed(); f != nil {
			failed = f
			ended[f.GetTurnId()]++
		}
		if a := r.GetAudio(); a != nil {
			perTurn[a.GetTurnId()] = append(perTurn[a.GetTurnId()], a.GetData()...)
		}
		if e := r.GetAudioEnd(); e != nil {
			ended[e.GetTurnId()]++
		}
	}
	if failed.GetTurnId() != 1 || codes.Code(failed.GetCode()) != codes.InvalidArgument ||
		failed.GetReason() != ReasonUpstreamRequestRejected || failed.GetUpstreamCode() != "pronunciation_not_found" ||
		failed.GetDelivered().GetAudioBytes() != uint64(len(perTurn[1])) || len(perTurn[1]) == 0 {
		t.Fatalf("turn_failed = %v (turn 1 got %d bytes); responses %s", failed, len(perTurn[1]), kinds(resps))
	}
	for id := uint64(1); id <= 3; id++ {
		if ended[id] != 1 {
			t.Errorf("turn %d ended %d times: %s", id, ended[id], kinds(resps))
		}
	}
	for i, want := range texts[1:] {
		if got, err := slngsim.Decode(perTurn[uint64(i+2)], "linear16", 24000); err != nil || got != want {
			t.Errorf("turn %d: %q, %v; want %q", i+2, got, err, want)
		}
	}
	if n := len(h.sim.Sessions()); n != 2 {
		t.Errorf("%d upstream sessions, want 2: the erring one is replaced, not reused", n)
	}
	if v := testutil.ToFloat64(m.turnsFailed.WithLabelValues(ReasonUpstreamRequestRejected)); v != 1 {
		t.Errorf("turns failed metric = %v, want 1", v)
	}

	// SynthesizeText has one turn: it ends with the mapped status.
	_, err = h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Only turn."})
	if err != nil {
		t.Fatalf("second session, no fault: %v", err)
	}
	h2 := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=error:pronunciation_not_found@chunks:2")}, Config{})
	_, err = h2.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Never finished."})
	st := wantStatus(t, err, codes.InvalidArgument, ReasonUpstreamRequestRejected)
	if info, _ := details(st); info.GetMetadata()["turn_id"] != "1" || info.GetMetadata()["delivered_bytes"] == "0" {
		t.Errorf("metadata %v", info.GetMetadata())
	}
}

// TestSynthesizeWarningBetweenTurns: an error frame while no turn is in
// progress is a warning, and the next turn is spoken.
func TestSynthesizeWarningBetweenTurns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=error:pronunciation_not_found@ready")}, Config{})
	b := h.synthesize(t, testContext(t), &speechv1.SynthesisConfig{})
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetWarning() != nil })
	b.send(ttsText("Still spoken.", true))
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(resps); got != "segment_start audio segment_end flushed audio_end" {
		t.Fatalf("responses: %s", got)
	}
	if got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000); got != "Still spoken." {
		t.Fatalf("decoded %q", got)
	}
}

// TestUpstreamErrorTable drives each row of docs/errors.md that comes from
// SLNG through the simulator, on SynthesizeText and Transcribe.
func TestUpstreamErrorTable(t *testing.T) {
	t.Parallel()
	rows := []struct {
		fault  string
		code   codes.Code
		reason string
	}{
		{"handshake:401", codes.Internal, ReasonUpstreamAuthFailed},
		{"handshake:403", codes.Internal, ReasonUpstreamAuthFailed},
		{"handshake:400", codes.InvalidArgument, ReasonUpstreamConfigRejected},
		{"handshake:404", codes.NotFound, ReasonUpstreamModelNotFound},
		{"handshake:429", codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"handshake:503", codes.Unavailable, ReasonUpstreamUnavailable},
		{"handshake:500", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:auth_error@ready,fatal,close=1008", codes.Internal, ReasonUpstreamAuthFailed},
		{"error:config_error@ready,fatal,close=1008", codes.InvalidArgument, ReasonUpstreamConfigRejected},
		{"error:invalid_request@ready,fatal,close=1008", codes.InvalidArgument, ReasonUpstreamRequestRejected},
		{"error:payload_too_large@ready,fatal,close=1008", codes.InvalidArgument, ReasonUpstreamRequestRejected},
		{"error:rate_limit@ready,fatal,close=1008", codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"error:rate_limit_exceeded@ready,fatal,close=1008", codes.ResourceExhausted, ReasonUpstreamRateLimited},
		{"error:provider_error@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:backend_connection_failed@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:backend_error@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:not_ready@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:backpressure@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:stt_metering_unavailable@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:translation_error@ready,fatal", codes.Unavailable, ReasonUpstreamUnavailable},
		{"error:idle_timeout_exceeded@ready,fatal,close=1008", codes.Unavailable, ReasonUpstreamSessionExpired},
		{"error:max_connection_duration_exceeded@ready,fatal,close=1008", codes.Unavailable, ReasonUpstreamSessionExpired},
		{"error:brand_new_error@ready,fatal", codes.Unknown, ReasonUpstreamUnknownError},
		{"close:1008@ready", codes.Unavailable, ReasonUpstreamSessionExpired},
		{"close:1011@ready", codes.Unavailable, ReasonUpstreamSessionExpired},
		{"close:1012@ready", codes.Unavailable, ReasonUpstreamSessionExpired},
		{"drop@ready", codes.Unavailable, ReasonUpstreamUnavailable},
		{"oversized@ready", codes.Unavailable, ReasonUpstreamProtocolError},
	}
	for _, row := range rows {
		t.Run(row.fault, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=" + row.fault)}, Config{})
			ctx := testContext(t)
			_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Hello."})
			st := wantStatus(t, err, row.code, row.reason)
			info, _ := details(st)
			if info.GetMetadata()["model"] != "deepgram/aura:2" || info.GetMetadata()["session_id"] == "" {
				t.Errorf("metadata = %v", info.GetMetadata())
			}
			if strings.Contains(st.Message(), testKey) || strings.Contains(st.String(), testKey) {
				t.Fatal("the key leaked into the status")
			}
			_, err = h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, slngsim.Synthesize("Hi.", "linear16", 16000), 3200)
			if row.fault == "close:1011@ready" {
				// A bare 1011 is a reap only while no audio is in flight
				// (slngclient/codes.go): whether the first audio went out
				// before the close came is a race, and both are UNAVAILABLE.
				st, _ := status.FromError(err)
				if info, _ := details(st); st.Code() != codes.Unavailable ||
					(info.GetReason() != ReasonUpstreamSessionExpired && info.GetReason() != ReasonUpstreamUnavailable) {
					t.Fatalf("status %v, reason %q", st, info.GetReason())
				}
				return
			}
			wantStatus(t, err, row.code, row.reason)
		})
	}
}

func TestSynthesizeUpstreamFailsMidTurn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=drop@chunks:2")}, Config{})
	_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: strings.Repeat("x", 200)})
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamUnavailable)
}

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

func TestSynthesizeCallerCancelClosesUpstream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Realtime: true}, Config{})
	ctx, cancel := context.WithCancel(testContext(t))
	b := h.synthesize(t, ctx, nil)
	b.send(ttsText(strings.Repeat("Interrupted by the caller. ", 20), true))
	b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
	cancel()
	_, err := recvAll(t, b.stream.Recv)
	wantStatus(t, err, codes.Canceled, "")
	waitFor(t, func() bool { return h.sim.Stats().Active == 0 }, "the upstream session to close")
}

func TestSynthesizeDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Realtime: true}, Config{})
	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	_, err := h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: strings.Repeat("Too slow. ", 40)})
	wantStatus(t, err, codes.DeadlineExceeded, "")
	waitFor(t, func() bool { return h.sim.Stats().Active == 0 }, "the upstream session to close")
}

func TestStreamLimits(t *testing.T) {
	t.Parallel()
	t.Run("max stream duration", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, slngsim.Options{Realtime: true}, Config{MaxStreamDuration: 200 * time.Millisecond})
		_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: strings.Repeat("Long. ", 50)})
		wantStatus(t, err, codes.OutOfRange, ReasonStreamDurationExceeded)
	})
	t.Run("max streams", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, slngsim.Options{Realtime: true}, Config{MaxStreams: 1})
		b := h.synthesize(t, testContext(t), nil)
		b.send(ttsText(strings.Repeat("Holding the only slot. ", 10), true))
		b.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
		_, err := h.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "No room."})
		wantStatus(t, err, codes.ResourceExhausted, ReasonGatewayOverloaded)
	})
}

// TestDrain checks shutdown: a stream mid-turn finishes the turn and then
// ends with SERVER_DRAINING; an idle one ends at once; new ones are refused.
func TestDrain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Realtime: true}, Config{})
	ctx := testContext(t)
	busy := h.synthesize(t, ctx, nil)
	const text = "This turn completes despite the drain."
	busy.send(ttsText(text, true))
	first := busy.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetAudio() != nil })
	idle := h.synthesize(t, ctx, nil)
	idle.until(func(m *speechv1.SynthesizeResponse) bool { return m.GetStarted() != nil })

	stt, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stt.Send(sttConfig(nil)); err != nil {
		t.Fatal(err)
	}
	audio := slngsim.Synthesize("Heard before the drain.", "linear16", 16000)
	if err := stt.Send(sttAudioReq(audio)); err != nil {
		t.Fatal(err)
	}
	if m, err := stt.Recv(); err != nil || m.GetStarted() == nil {
		t.Fatalf("started: %v %v", m, err)
	}
	// Wait until the simulator has heard the audio, so the drain has
	// something to deliver.
	waitFor(t, func() bool { return h.sim.Stats().STTFinals >= 1 }, "the simulator to transcribe")

	h.srv.Drain()

	rest, err := recvAll(t, busy.stream.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	all := append(first, rest...)
	if got, _ := slngsim.Decode(audioOf(all), "linear16", 24000); got != text {
		t.Fatalf("the busy turn was cut: %q", got)
	}
	_, err = recvAll(t, idle.stream.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	finals, err := recvAll(t, stt.Recv)
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
	if got := finalText(finals); got != "Heard before the drain." {
		t.Fatalf("finals during drain: %q", got)
	}
	_, err = h.synthesizeText(t, ctx, &speechv1.SynthesizeTextRequest{Text: "Too late."})
	wantStatus(t, err, codes.Unavailable, ReasonServerDraining)
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
// that stays open ends with turn_failed after the turn timeout; the next
// turn is spoken on a new session.
func TestSynthesizeTurnTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{Script: onFirstConnection("*=stall@chunks:3")}, Config{TurnTimeout: 300 * time.Millisecond})
	b := h.synthesize(t, testContext(t), nil)
	b.send(ttsText("This turn gets stuck after three chunks of its audio.", true))
	b.send(ttsText("Second turn.", true))
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}
	var failed *speechv1.TurnFailed
	var rc *speechv1.UpstreamReconnected
	var second []byte
	for _, r := range resps {
		if f := r.GetTurnFailed(); f != nil {
			failed = f
		}
		if r.GetReconnected() != nil {
			rc = r.GetReconnected()
		}
		if a := r.GetAudio(); a != nil && a.GetTurnId() == 2 {
			second = append(second, a.GetData()...)
		}
	}
	if failed.GetTurnId() != 1 || failed.GetReason() != ReasonUpstreamTurnTimeout || codes.Code(failed.GetCode()) != codes.Unavailable ||
		failed.GetDelivered().GetLastSequence() != 3 {
		t.Fatalf("turn_failed = %v; responses %s", failed, kinds(resps))
	}
	if rc.GetReason() != "turn_timeout" || rc.GetTurnsReplayed() != 1 {
		t.Errorf("reconnected = %v", rc)
	}
	if got, err := slngsim.Decode(second, "linear16", 24000); err != nil || got != "Second turn." {
		t.Errorf("second turn decoded %q, %v", got, err)
	}
	if v := testutil.ToFloat64(h.metrics.turnsFailed.WithLabelValues(ReasonUpstreamTurnTimeout)); v != 1 {
		t.Errorf("turns failed metric = %v, want 1", v)
	}

	// SynthesizeText ends with the status.
	h2 := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=stall@chunks:3")}, Config{TurnTimeout: 200 * time.Millisecond})
	_, err = h2.synthesizeText(t, testContext(t), &speechv1.SynthesizeTextRequest{Text: "Stuck for good."})
	wantStatus(t, err, codes.Unavailable, ReasonUpstreamTurnTimeout)
}

// TestSynthesizeRollsOverBetweenTurns: past the maximum session age, the
// stream moves to a new upstream session at a turn boundary, never in the
// middle of a turn.
func TestSynthesizeRollsOverBetweenTurns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slngsim.Options{}, Config{MaxUpstreamSessionAge: time.Nanosecond})
	b := h.synthesize(t, testContext(t), nil)
	texts := []string{"One.", "Two.", "Three."}
	for i, text := range texts {
		b.send(ttsText(text, true))
		resps := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudioEnd() != nil })
		got, err := slngsim.Decode(audioOf(resps), "linear16", 24000)
		if err != nil || got != text {
			t.Fatalf("turn %d: %q, %v", i+1, got, err)
		}
		// The rollover happens between turns: a text that arrives before
		// it is spoken on the old session.
		waitFor(t, func() bool {
			ss := h.sim.Sessions()
			return len(ss) == i+1 && !ss[i].Open
		}, "the old session to close")
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, b.stream.Recv); err != nil {
		t.Fatal(err)
	}
	if c := h.sim.Stats().Connections; c != 3 {
		t.Errorf("%d upstream sessions for 3 turns past the maximum age, want 3", c)
	}
	if v := testutil.ToFloat64(h.metrics.reconnects.WithLabelValues("tts", "rollover")); v < 2 {
		t.Errorf("rollover metric = %v, want at least 2", v)
	}
	for _, s := range h.sim.Sessions() {
		if s.TurnsCompleted != 1 {
			t.Errorf("session %s completed %d turns, want 1", s.ID, s.TurnsCompleted)
		}
	}
}

// TestSynthesizeReusesSessionsWhateverTheRouteEndsTurnsWith: a stream
// returns its session to the pool as soon as its last turn ended, whether
// the route sends one end-of-turn signal or two (the session drops the
// second itself), and the next stream gets it warm with nothing of the old
// turn unread.
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
