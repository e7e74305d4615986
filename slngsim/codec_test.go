package slngsim

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
)

func longText(n int) string {
	words := []string{"Hello", "world,", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs.", "Zürich", "naïve", "日本語", "¿qué?", "42"}
	var b strings.Builder
	r := rand.New(rand.NewPCG(1, 2))
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[r.IntN(len(words))])
	}
	s := b.String()
	for len(s) > n { // trim to a rune boundary at or below n bytes
		s = s[:len(s)-1]
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "")
}

// TestCodecRoundTrip checks that every encoding round trips, whatever the
// chunking, including odd chunk sizes that split samples.
func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	text := longText(2000)
	for _, enc := range []string{"linear16", "mulaw", "alaw", "mp3", "opus"} {
		for _, rate := range []int{8000, 16000, 24000, 48000} {
			audio := Synthesize(text, enc, rate)
			got, err := Decode(audio, enc, rate)
			if err != nil || got != text {
				t.Fatalf("%s@%d: Decode = %q..., %v", enc, rate, got[:min(40, len(got))], err)
			}
			// Streaming decode in odd chunks.
			d, err := newDecoder(enc, rate)
			if err != nil {
				t.Fatal(err)
			}
			var finals []string
			for i := 0; i < len(audio); i += 333 {
				d.write(audio[i:min(i+333, len(audio))], func(ev decoded) { finals = append(finals, string(ev.text)) })
			}
			if len(finals) != 1 || finals[0] != text {
				t.Fatalf("%s@%d: streaming decode gave %d finals", enc, rate, len(finals))
			}
		}
	}
}

func TestCodecIsNotSilent(t *testing.T) {
	t.Parallel()
	audio := Synthesize("a", "linear16", 24000)
	var peak int16
	for i := 0; i+1 < len(audio); i += 2 {
		s := int16(uint16(audio[i]) | uint16(audio[i+1])<<8)
		peak = max(peak, s)
	}
	if peak < 4000 {
		t.Fatalf("peak amplitude %d: the audio is nearly silent", peak)
	}
}

func TestCodecUtterances(t *testing.T) {
	t.Parallel()
	a := append(Synthesize("First one.", "linear16", 16000), Synthesize("Second one.", "linear16", 16000)...)
	got, err := Decode(a, "linear16", 16000)
	if err != nil || got != "First one. Second one." {
		t.Fatalf("Decode = %q, %v", got, err)
	}
}

func TestG711(t *testing.T) {
	t.Parallel()
	for _, s := range []int16{0, 1, -1, 100, -100, 1000, -1000, 8000, -8000, 32767, -32768} {
		for name, rt := range map[string]func(int16) int16{
			"mulaw": func(s int16) int16 { return pcmconv.MuLaw.DecodeSample(pcmconv.MuLaw.EncodeSample(s)) },
			"alaw":  func(s int16) int16 { return pcmconv.ALaw.DecodeSample(pcmconv.ALaw.EncodeSample(s)) },
		} {
			got := rt(s)
			diff := int(got) - int(s)
			if diff < 0 {
				diff = -diff
			}
			limit := max(int(s)/16, -int(s)/16, 16)
			if diff > limit {
				t.Errorf("%s(%d) = %d", name, s, got)
			}
		}
	}
}
