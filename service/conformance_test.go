package service

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// conformanceRoute is one route behaviour of the simulator, with the
// models the gateway names on it.
type conformanceRoute struct {
	name     string
	profile  func(model string) slngsim.Profile
	tts, stt string
	// cells, when set, are the only cells (by name prefix) the route can
	// change: a profile that only answers finalize or clear late runs
	// those cells alone, so that its waits cost no other cell's time.
	cells []string
}

// onlyCells are the cells of the profiles that change nothing but the
// answer to a finalize or a clear.
var onlyCells = map[string][]string{
	"finalize-late":          {"Transcribe finalize"},
	"clear-late":             {"Synthesize clear mid-turn", "Synthesize barge-in"},
	"audio-after-cleared":    {"Synthesize clear mid-turn", "Synthesize barge-in"},
	"clear-late-audio-after": {"Synthesize clear mid-turn", "Synthesize barge-in"},
}

// runs reports whether the route runs the cell.
func (r conformanceRoute) runs(cell string) bool {
	if r.cells == nil {
		return true
	}
	for _, prefix := range r.cells {
		if strings.HasPrefix(cell, prefix) {
			return true
		}
	}
	return false
}

// conformanceRoutes are every named simulator profile (each isolates one
// behaviour of slng-real-clients.md) and the realistic rule for each
// provider it knows, plus one it does not.
func conformanceRoutes(t *testing.T) []conformanceRoute {
	var routes []conformanceRoute
	for name := range onlyCells {
		if _, err := slngsim.ProfileByName(name); err != nil {
			t.Fatalf("onlyCells: %v", err)
		}
	}
	for _, name := range slngsim.ProfileNames() {
		if name == "realistic" || name == "not-deployed" {
			// not-deployed refuses every model: TestModelNotDeployed.
			continue
		}
		p, err := slngsim.ProfileByName(name)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, conformanceRoute{name: name, profile: func(string) slngsim.Profile { return p },
			tts: "deepgram/aura:2", stt: "deepgram/nova:3", cells: onlyCells[name]})
	}
	for _, m := range [][2]string{
		{"deepgram/aura:2", "deepgram/nova:3"},
		{"soniox/tts-rt:v1", "soniox/stt-rt:v3"},
		{"slng/rime/arcana:3-en", "slng/rime/stt:1"},
		{"cartesia/sonic:2", "cartesia/ink:1"},
		{"elevenlabs/flash:v2", "elevenlabs/scribe:v1"},
		{"sarvam/bulbul:v2", "sarvam/saarika:v2"},
		{"acme/speech:1", "acme/listen:1"},
	} {
		provider, _, _ := strings.Cut(strings.TrimPrefix(m[0], "slng/"), "/")
		routes = append(routes, conformanceRoute{name: "realistic:" + provider, profile: slngsim.Realistic, tts: m[0], stt: m[1]})
	}
	return routes
}

// TestConformance runs every route behaviour that SLNG's own clients
// document (slng-real-clients.md), as simulator profiles, against the
// gateway: the same RPCs must give callers the same exact audio, text and
// status on every route. docs/upstream.md shows the table; -v prints it
// with each cell's time.
func TestConformance(t *testing.T) {
	t.Parallel()
	type cell struct {
		name string
		run  func(c *conformanceCase, t *testing.T)
	}
	cells := []cell{
		{"SynthesizeText", (*conformanceCase).synthesizeText},
		{"Synthesize 3 turns", (*conformanceCase).threeTurns},
		{"Synthesize clear mid-turn", (*conformanceCase).clearMidTurn},
		{"Synthesize failing turn", (*conformanceCase).failingTurn},
		{"Synthesize across a reap", (*conformanceCase).synthesizeAcrossReap},
		{"Synthesize texts with pauses", (*conformanceCase).textsWithPauses},
		{"Synthesize barge-in", (*conformanceCase).bargeIn},
		{"Synthesize dropped mid-turn", (*conformanceCase).droppedMidTurn},
		{"Synthesize letterless texts", (*conformanceCase).letterlessTexts},
		{"Transcribe half-close", (*conformanceCase).transcribeHalfClose},
		{"Transcribe finalize", (*conformanceCase).transcribeFinalize},
		{"Transcribe finalize, talking on", (*conformanceCase).transcribeFinalizeTalkingOn},
		{"Transcribe real time across a reap", (*conformanceCase).transcribeAcrossReap},
		{"Transcribe telephony", (*conformanceCase).transcribeTelephony},
	}
	var mu sync.Mutex
	table := map[string]map[string]string{}
	t.Cleanup(func() {
		var names []string
		for n := range table {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		fmt.Fprintf(&b, "%-28s", "route")
		for _, c := range cells {
			fmt.Fprintf(&b, " | %-20s", c.name)
		}
		b.WriteString("\n")
		for _, n := range names {
			fmt.Fprintf(&b, "%-28s", n)
			for _, c := range cells {
				fmt.Fprintf(&b, " | %-20s", table[n][c.name])
			}
			b.WriteString("\n")
		}
		t.Log("conformance table:\n" + b.String())
	})
	for _, route := range conformanceRoutes(t) {
		t.Run(route.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cells {
				if !route.runs(c.name) {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					cc := newConformanceCase(t, route)
					start := time.Now()
					c.run(cc, t)
					result := "ok " + time.Since(start).Round(time.Millisecond).String()
					if t.Failed() {
						result = "FAIL"
					}
					mu.Lock()
					if table[route.name] == nil {
						table[route.name] = map[string]string{}
					}
					table[route.name][c.name] = result
					mu.Unlock()
				})
			}
		})
	}
}

// conformanceCase is one cell: a gateway in front of a simulator that
// serves one route behaviour, with "<error>" as the marker of a turn that
// fails mid-turn on every route.
type conformanceCase struct {
	route conformanceRoute
	h     *harness
	// realtime is a second gateway whose simulator paces audio at
	// playback speed, for cells that act in the middle of a turn.
	realtime func() *harness
}

func newConformanceCase(t *testing.T, route conformanceRoute) *conformanceCase {
	profile := func(model string) slngsim.Profile {
		p := route.profile(model)
		p.MidTurnError.Marker = "<error>"
		p.MidTurnDrop = slngsim.MidTurnDrop{Marker: "<drop>", AfterChunks: 2}
		return p
	}
	c := &conformanceCase{route: route}
	cfg := Config{TurnTimeout: 5 * time.Second, FinalizeTimeout: time.Second}
	c.h = newHarness(t, slngsim.Options{ProfileFor: profile}, cfg)
	c.realtime = func() *harness {
		return newHarness(t, slngsim.Options{ProfileFor: profile, Realtime: true}, cfg)
	}
	return c
}

func (c *conformanceCase) ttsConfig() *speechv1.SynthesisConfig {
	return &speechv1.SynthesisConfig{Model: c.route.tts, Voice: "v",
		Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 24000}}
}

func (c *conformanceCase) sttConfig() *speechv1.RecognitionConfig {
	return &speechv1.RecognitionConfig{Model: c.route.stt,
		Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000}}
}

// turns splits a Synthesize response stream by turn: audio per turn, and
// how each turn ended ("flushed audio_end", "turn_failed", "cleared").
func turns(resps []*speechv1.SynthesizeResponse) (audio map[uint64][]byte, ends map[uint64]string) {
	audio, ends = map[uint64][]byte{}, map[uint64]string{}
	add := func(id uint64, what string) {
		ends[id] = strings.TrimSpace(ends[id] + " " + what)
	}
	for _, r := range resps {
		switch {
		case r.GetAudio() != nil:
			audio[r.GetAudio().GetTurnId()] = append(audio[r.GetAudio().GetTurnId()], r.GetAudio().GetData()...)
		case r.GetFlushed() != nil:
			add(r.GetFlushed().GetTurnId(), "flushed")
		case r.GetAudioEnd() != nil:
			add(r.GetAudioEnd().GetTurnId(), "audio_end")
		case r.GetTurnFailed() != nil:
			add(r.GetTurnFailed().GetTurnId(), "turn_failed")
		case r.GetCleared() != nil:
			add(r.GetCleared().GetTurnId(), "cleared")
		}
	}
	return audio, ends
}

// spokenText is what the route's audio of a turn sent as texts decodes to:
// their text, or, on a route that speaks each text as an utterance of its
// own, the utterances' text, which Decode joins with a space.
func (c *conformanceCase) spokenText(texts []string) string {
	if c.route.profile(c.route.tts).SpeakOnText {
		return strings.Join(texts, " ")
	}
	return strings.Join(texts, "")
}

func wantTurn(t *testing.T, audio map[uint64][]byte, ends map[uint64]string, id uint64, text string) {
	t.Helper()
	if got, err := slngsim.Decode(audio[id], "linear16", 24000); err != nil || got != text {
		t.Errorf("turn %d: audio decodes to %q (%v), want %q", id, got, err, text)
	}
	if ends[id] != "flushed audio_end" {
		t.Errorf("turn %d ended with %q, want flushed audio_end", id, ends[id])
	}
}

func (c *conformanceCase) synthesizeText(t *testing.T) {
	const text = "Every route says the same."
	req := &speechv1.SynthesizeTextRequest{Text: text, Config: c.ttsConfig()}
	resps, err := c.h.synthesizeText(t, testContext(t), req)
	if err != nil {
		t.Fatalf("status %v, want OK", err)
	}
	audio, ends := turns(resps)
	wantTurn(t, audio, ends, 1, text)
	if k := kinds(resps); !strings.HasSuffix(k, "flushed audio_end") {
		t.Errorf("responses end %q, want flushed audio_end", k)
	}
}

func (c *conformanceCase) threeTurns(t *testing.T) {
	texts := []string{"First turn.", "Second turn.", "Third turn."}
	b := c.h.synthesize(t, testContext(t), c.ttsConfig())
	for _, text := range texts {
		b.send(ttsText(text, true))
	}
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	for i, text := range texts {
		wantTurn(t, audio, ends, uint64(i+1), text)
	}
}

func (c *conformanceCase) clearMidTurn(t *testing.T) {
	h := c.realtime()
	b := h.synthesize(t, testContext(t), c.ttsConfig())
	b.send(ttsText(strings.Repeat("A long turn that is cleared. ", 10), true))
	b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudio() != nil })
	b.send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Clear{Clear: &speechv1.Clear{}}})
	rest := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetCleared() != nil })
	if id := rest[len(rest)-1].GetCleared().GetTurnId(); id != 1 {
		t.Errorf("cleared turn %d, want 1", id)
	}
	b.send(ttsText("After the clear.", true))
	resps := closeAndRecv(t, b)
	audio, ends := turns(resps)
	if len(audio[1]) > 0 || ends[1] != "" {
		t.Errorf("turn 1 went on after its clear: %d bytes, %q", len(audio[1]), ends[1])
	}
	wantNothingAfterCleared(t, append(rest, resps...))
	wantTurn(t, audio, ends, 2, "After the clear.")
}

func (c *conformanceCase) failingTurn(t *testing.T) {
	texts := []string{"Before it.", "This <error> turn fails.", "After it."}
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
	wantTurn(t, audio, ends, 3, texts[2])
}

func (c *conformanceCase) synthesizeAcrossReap(t *testing.T) {
	p := c.route.profile(c.route.tts)
	b := c.h.synthesize(t, testContext(t), c.ttsConfig())
	b.send(ttsText("Before the reap.", true))
	first := b.until(func(r *speechv1.SynthesizeResponse) bool { return r.GetAudioEnd() != nil })
	c.h.sim.Reap(func(s slngsim.SessionInfo) bool { return s.Kind == "tts" }, reapCode(p), p.ReapErrorFrame)
	// Between turns: the next text follows the reap. (One that crosses it
	// is spoken on a new session if none of its audio came yet, and fails
	// with turn_failed otherwise.)
	waitFor(t, func() bool {
		for _, s := range c.h.sim.Sessions() {
			if s.Open {
				return false
			}
		}
		return true
	}, "the reaped session to close")
	b.send(ttsText("After the reap.", true))
	resps := append(first, closeAndRecv(t, b)...)
	audio, ends := turns(resps)
	wantTurn(t, audio, ends, 1, "Before the reap.")
	wantTurn(t, audio, ends, 2, "After the reap.")
}

func reapCode(p slngsim.Profile) int {
	if p.ReapCode == 0 {
		return 1008
	}
	return p.ReapCode
}

func closeAndRecv(t *testing.T, b *bidi) []*speechv1.SynthesizeResponse {
	t.Helper()
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, b.stream.Recv)
	if err != nil {
		t.Fatalf("status %v after %s, want OK", err, kinds(resps))
	}
	return resps
}

var conformanceSentences = []string{"The first sentence.", "A second one follows.", "And the third ends it."}

// spoken is the simulator's speech of sentences at 16 kHz with a pause of
// 400 ms after each, as people pause between sentences. Routes without
// timing need the pause: a recognizer ends an utterance in the silence
// after it, and the gateway replays after a reconnect from where the final
// arrived (docs/upstream.md).
func spoken(sentences []string) []byte {
	var audio []byte
	for _, s := range sentences {
		audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
		audio = append(audio, make([]byte, 12800)...)
	}
	return audio
}

func (c *conformanceCase) transcribeHalfClose(t *testing.T) {
	audio := spoken(conformanceSentences)
	resps, err := c.h.transcribe(t, testContext(t), c.sttConfig(), audio, 3200)
	if err != nil {
		t.Fatalf("status %v, want OK", err)
	}
	if got, want := finalText(resps), strings.Join(conformanceSentences, " "); got != want {
		t.Errorf("finals %q, want %q", got, want)
	}
	for _, r := range resps {
		if r.GetPartialTranscript() != nil {
			t.Fatalf("a partial transcript, but the caller turned them off: %v", r)
		}
	}
}

// finalizeFirstSentence starts a Transcribe stream and sends the first
// sentence without the silence that ends an utterance, then a finalize:
// only the finalize makes it final.
func (c *conformanceCase) finalizeFirstSentence(t *testing.T) *sttCall {
	call := startSTT(t, c.h, c.sttConfig())
	first := slngsim.Synthesize(conformanceSentences[0], "linear16", 16000)
	call.audio(first[:len(first)-2*96])
	call.finalize()
	return call
}

func (c *conformanceCase) transcribeFinalize(t *testing.T) {
	call := c.finalizeFirstSentence(t)
	stream := call.stream
	var resps []*speechv1.TranscribeResponse
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv before the finalize's answer: %v", err)
		}
		resps = append(resps, r)
		if f := r.GetFinalTranscript(); f != nil {
			if !f.GetFromFinalize() || f.GetText() != conformanceSentences[0] {
				t.Fatalf("the final after the finalize is %v, want %q from_finalize", f, conformanceSentences[0])
			}
			break
		}
	}
	call.audio(spoken(conformanceSentences[1:2]))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	rest, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatalf("status %v, want OK", err)
	}
	resps = append(resps, rest...)
	if got, want := finalText(resps), conformanceSentences[0]+" "+conformanceSentences[1]; got != want {
		t.Errorf("finals %q, want %q", got, want)
	}
	checkOffsets(t, resps)
}

func (c *conformanceCase) transcribeAcrossReap(t *testing.T) {
	p := c.route.profile(c.route.stt)
	ctx := testContext(t)
	stream, err := c.h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(sttConfig(c.sttConfig())); err != nil {
		t.Fatal(err)
	}
	audio := spoken(conformanceSentences)
	const chunk = 3200 // 100 ms
	chunks := (len(audio) + chunk - 1) / chunk
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for i := 0; len(audio) > 0; i++ {
		n := min(chunk, len(audio))
		if err := stream.Send(sttAudioReq(audio[:n])); err != nil {
			break // the status comes from Recv
		}
		audio = audio[n:]
		if i == chunks/2 {
			c.h.sim.Reap(func(s slngsim.SessionInfo) bool { return s.Kind == "stt" }, reapCode(p), p.ReapErrorFrame)
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatalf("status %v, want OK", err)
	}
	if got, want := finalText(resps), strings.Join(conformanceSentences, " "); got != want {
		t.Errorf("finals %q, want %q", got, want)
	}
	reconnected := false
	for _, r := range resps {
		reconnected = reconnected || r.GetReconnected() != nil
	}
	if !reconnected {
		t.Errorf("no reconnected event across the reap")
	}
	checkOffsets(t, resps)
}

// checkOffsets requires finals whose offsets never go back and end after
// they start; a final without upstream timing must say so.
func checkOffsets(t *testing.T, resps []*speechv1.TranscribeResponse) {
	t.Helper()
	var last time.Duration
	for _, r := range resps {
		f := r.GetFinalTranscript()
		if f == nil || f.GetText() == "" {
			continue
		}
		start, end := f.GetStartOffset().AsDuration(), f.GetEndOffset().AsDuration()
		if start < last || end < start {
			t.Errorf("final %q at %v-%v after one ending at %v", f.GetText(), start, end, last)
		}
		last = end
	}
}
