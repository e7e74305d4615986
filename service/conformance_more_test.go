package service

import (
	"bytes"
	"strings"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// The conformance cells of the second reading of SLNG's clients
// (slng-real-clients.md, "Second reading"): turns streamed as several
// texts, barge-in, a session lost in the middle of a turn's audio, texts
// without letters, and telephony audio.

// textsWithPauses streams each turn as several texts with pauses, then
// flushes: on every route, one flushed and one audio_end per turn, with
// all of the turn's audio, however many ends of speech the route sent
// before the flush.
func (c *conformanceCase) textsWithPauses(t *testing.T) {
	turnsTexts := [][]string{{"The first turn ", "comes in three ", "pieces."}, {"And the second ", "in two."}}
	b := c.h.synthesize(t, testContext(t), c.ttsConfig())
	for _, texts := range turnsTexts {
		for i, text := range texts {
			if i > 0 {
				pause(150 * time.Millisecond) // a caller streaming an LLM's text pauses

			}
			b.send(ttsText(text, false))
		}
		b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
	}
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	for i, texts := range turnsTexts {
		wantTurn(t, audio, ends, uint64(i+1), c.spokenText(texts))
	}
	if len(ends) != len(turnsTexts) {
		t.Errorf("turns %v, want %d", ends, len(turnsTexts))
	}
}

// bargeIn clears a turn in the middle of its audio and sends the next
// one at once, as a voice agent does when the user interrupts: `cleared`
// for the first, none of its audio after it, the next turn exact, on every
// route, whether it answers clear with `cleared`, an end of a turn, or
// nothing.
func (c *conformanceCase) bargeIn(t *testing.T) {
	h := c.realtime()
	b := h.synthesize(t, testContext(t), c.ttsConfig())
	b.send(ttsText(strings.Repeat("A long turn that the user interrupts. ", 8), true))
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudio() != nil })
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	b.send(ttsText("The answer to the interruption.", true))
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	if ends[1] != "cleared" {
		t.Errorf("turn 1 ended with %q, want cleared", ends[1])
	}
	wantNothingAfterCleared(t, resps)
	wantTurn(t, audio, ends, 2, "The answer to the interruption.")
}

// wantNothingAfterCleared requires that the caller gets nothing of a turn
// after its `cleared`, whatever the route sends of it after its answer
// (audio after the acknowledgement, slng-real-clients.md).
func wantNothingAfterCleared(t *testing.T, resps []*speechv1.SynthesizeResponse) {
	t.Helper()
	cleared := map[uint64]bool{}
	for _, r := range resps {
		if c := r.GetCleared(); c != nil {
			cleared[c.GetTurnId()] = true
			continue
		}
		var id uint64
		switch {
		case r.GetAudio() != nil:
			id = r.GetAudio().GetTurnId()
		case r.GetFlushed() != nil:
			id = r.GetFlushed().GetTurnId()
		case r.GetAudioEnd() != nil:
			id = r.GetAudioEnd().GetTurnId()
		case r.GetTurnFailed() != nil:
			id = r.GetTurnFailed().GetTurnId()
		default:
			continue
		}
		if cleared[id] {
			t.Errorf("turn %d: %s after its cleared", id, kinds([]*speechv1.SynthesizeResponse{r}))
		}
	}
}

// transcribeFinalizeTalkingOn finalizes and goes on speaking at once, as a
// caller does whose user keeps talking, on routes that answer a finalize
// late (605 ms on slng/ routes): the finalize's final is the first
// sentence, from_finalize, and the sentences after it come whole, in
// order.
func (c *conformanceCase) transcribeFinalizeTalkingOn(t *testing.T) {
	call := c.finalizeFirstSentence(t)
	stream := call.stream
	call.audio(spoken(conformanceSentences[1:]))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatalf("status %v, want OK", err)
	}
	want := strings.Join(conformanceSentences, " ")
	if c.route.profile(c.route.stt).LostFinalizes != 0 {
		// The finalize is lost: the first sentence runs into the next, as
		// one utterance, and no final answers the finalize.
		if got := strings.ReplaceAll(finalText(resps), " ", ""); got != strings.ReplaceAll(want, " ", "") {
			t.Errorf("finals %q, want %q", finalText(resps), want)
		}
		return
	}
	if got := finalText(resps); got != want {
		t.Errorf("finals %q, want %q", got, want)
	}
	for _, r := range resps {
		if f := r.GetFinalTranscript(); f != nil && f.GetText() != "" {
			if !f.GetFromFinalize() || f.GetText() != conformanceSentences[0] {
				t.Errorf("the first final is %v, want %q from_finalize", f, conformanceSentences[0])
			}
			break
		}
	}
	checkOffsets(t, resps)
}

// droppedMidTurn loses the session in the middle of a turn's audio, with
// turns queued behind: that turn fails with turn_failed, saying how much
// of it arrived; the turns before and after are exact, the stream OK.
func (c *conformanceCase) droppedMidTurn(t *testing.T) {
	texts := []string{"Before it.", "This <drop> turn is cut short.", "After it."}
	b := c.h.synthesize(t, testContext(t), c.ttsConfig())
	for _, text := range texts {
		b.send(ttsText(text, true))
	}
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	wantTurn(t, audio, ends, 1, texts[0])
	if ends[2] != "turn_failed" {
		t.Errorf("turn 2 ended with %q, want turn_failed", ends[2])
	}
	for _, r := range resps {
		if tf := r.GetTurnFailed(); tf != nil && tf.GetDelivered().GetAudioBytes() != uint64(len(audio[2])) {
			t.Errorf("turn_failed says %d bytes delivered, the caller got %d", tf.GetDelivered().GetAudioBytes(), len(audio[2]))
		}
	}
	wantTurn(t, audio, ends, 3, texts[2])
}

// letterlessTexts streams a turn whose texts include some without a
// letter ("42", " ", ","): they go upstream with a neighbour, never alone,
// so routes that refuse them (Sarvam) speak the whole turn.
func (c *conformanceCase) letterlessTexts(t *testing.T) {
	texts := []string{"42", " ", "apples, ", "7", ",", " pears", " and ", "3", " plums."}
	// What goes upstream: each letterless text joined to the next.
	sent := []string{"42 apples, ", "7, pears", " and ", "3 plums."}
	b := c.h.synthesize(t, testContext(t), c.ttsConfig())
	for i, text := range texts {
		if i > 0 {
			pause(50 * time.Millisecond) // a caller streaming an LLM's text pauses
		}
		b.send(ttsText(text, false))
	}
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Flush{Flush: &speechv1.Flush{}}})
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	wantTurn(t, audio, ends, 1, c.spokenText(sent))
}

// telephony is sentences in a G.711 law at 8 kHz, with the same pauses as
// spoken's.
func telephony(sentences []string, law string) []byte {
	silence := byte(0xff) // μ-law zero
	if law == "alaw" {
		silence = 0xd5
	}
	var audio []byte
	for _, s := range sentences {
		audio = append(audio, slngsim.Synthesize(s, law, 8000)...)
		audio = append(audio, bytes.Repeat([]byte{silence}, 3200)...)
	}
	return audio
}

// transcribeTelephony sends telephony audio, MULAW and ALAW at 8 kHz,
// which SLNG's STT bridge does not take: the gateway decodes it, and the
// finals are exact.
func (c *conformanceCase) transcribeTelephony(t *testing.T) {
	for law, enc := range map[string]speechv1.AudioEncoding{
		"mulaw": speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
		"alaw":  speechv1.AudioEncoding_AUDIO_ENCODING_ALAW,
	} {
		cfg := c.sttConfig()
		cfg.Format = &speechv1.AudioFormat{Encoding: enc, SampleRateHz: 8000}
		resps, err := c.h.transcribe(t, testContext(t), cfg, telephony(conformanceSentences, law), 160)
		if err != nil {
			t.Fatalf("%s: status %v, want OK", law, err)
		}
		if got, want := finalText(resps), strings.Join(conformanceSentences, " "); got != want {
			t.Errorf("%s: finals %q, want %q", law, got, want)
		}
	}
}
