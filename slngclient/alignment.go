package slngclient

import (
	"encoding/json"
	"math"
	"time"
)

// ElevenLabs routes send, beside the audio of each frame, when its
// characters are spoken: {"audio": B64, "isFinal": false, "alignment":
// {"chars": [...], "charStartTimesMs": [...], "charsDurationsMs": [...]},
// "normalizedAlignment": {...}}. ElevenLabs' stream-input AsyncAPI
// documents the spellings above, integer milliseconds "relative to the
// returned chunk from the model, and not the full audio response", and
// both objects as nullable; pipecat reads `charDurationsMs`, LiveKit both
// spellings of each array and snake_case ones from the dialogue API
// (docs/upstream.md, "Timings"). A session reads them only when its
// consumer asks (SetAlignment): the audio path finds where they are
// (scanAudio) and nothing more.

// Alignment is the timing of the characters a route spoke in a piece of a
// turn's audio.
type Alignment struct {
	// Chars are the characters, in the order they are spoken.
	Chars []AlignedChar
	// Normalized: the route aligned its normalized text (numbers and
	// abbreviations spelt out), not the text it was sent, because the
	// frame had no alignment of that text (`normalizedAlignment`).
	Normalized bool
	// AfterAudio: the frame that carried the alignment carried audio too,
	// the TTSAudio event just before this one. A frame without audio
	// (audio null) may carry an alignment alone.
	AfterAudio bool
}

// AlignedChar is one aligned character and when it is heard, as the route
// reports it: ElevenLabs documents Start relative to the start of the
// audio of the frame that carried it; a route may instead report it from
// the start of the reply (the consumer tells them apart). Neither is ever
// negative.
type AlignedChar struct {
	// Text is the character as the route sent it: usually one Unicode
	// code point, sometimes more, possibly a space.
	Text            string
	Start, Duration time.Duration
}

// alignRaw holds a frame's raw alignment objects, nil where absent or
// null: text is `alignment`, normalized `normalizedAlignment` (or
// `normalized_alignment`). They are spans of the frame's buffer (or of
// its full decode), valid while the frame is.
type alignRaw struct {
	text, normalized []byte
}

// alignKeys are the keys of alignment objects, by index: 0 is the
// alignment of the text sent, the others the normalized one.
var alignKeys = [3]string{"alignment", "normalizedAlignment", "normalized_alignment"}

// maxAlignedMs bounds the times an alignment may report (maxSeconds).
const maxAlignedMs = maxSeconds * 1000

// readAlignment parses a frame's alignment: that of the text sent when it
// is there and valid, else the normalized one; nil when neither is.
func readAlignment(r alignRaw) *Alignment {
	if a, ok := parseAlignment(r.text); ok {
		return a
	}
	if a, ok := parseAlignment(r.normalized); ok {
		a.Normalized = true
		return a
	}
	return nil
}

// wireAlignment is an alignment object in every spelling the clients read.
type wireAlignment struct {
	Chars       []string  `json:"chars"`
	Starts      []float64 `json:"charStartTimesMs"`
	StartsS     []float64 `json:"charsStartTimesMs"`
	StartsSnake []float64 `json:"char_start_times_ms"`
	Durs        []float64 `json:"charsDurationsMs"`
	DursS       []float64 `json:"charDurationsMs"`
	DursSnake   []float64 `json:"char_durations_ms"`
}

// parseAlignment reads one alignment object. It is not ok, and the
// alignment is ignored, when raw is absent, not such an object, or its
// arrays differ in length, hold no character, or hold a time that is
// negative or beyond maxSeconds: a route that sends those breaks its own
// format, and guessing would put characters at the wrong times.
func parseAlignment(raw []byte) (*Alignment, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var w wireAlignment
	if json.Unmarshal(raw, &w) != nil {
		return nil, false
	}
	starts := firstNonNil(w.Starts, w.StartsS, w.StartsSnake)
	durs := firstNonNil(w.Durs, w.DursS, w.DursSnake)
	n := len(w.Chars)
	if n == 0 || len(starts) != n || len(durs) != n {
		return nil, false
	}
	a := &Alignment{Chars: make([]AlignedChar, n)}
	for i := range n {
		start, ok1 := millis(starts[i])
		dur, ok2 := millis(durs[i])
		if !ok1 || !ok2 {
			return nil, false
		}
		a.Chars[i] = AlignedChar{Text: w.Chars[i], Start: start, Duration: dur}
	}
	return a, true
}

// millis converts milliseconds to a duration; not ok when negative, not a
// number, or beyond maxAlignedMs.
func millis(ms float64) (time.Duration, bool) {
	if !(ms >= 0 && ms <= maxAlignedMs) { // also false for NaN
		return 0, false
	}
	return time.Duration(math.Round(ms * float64(time.Millisecond))), true
}

func firstNonNil(ss ...[]float64) []float64 {
	for _, s := range ss {
		if s != nil {
			return s
		}
	}
	return nil
}

// rawOrNil is r, or nil when it is absent or null.
func rawOrNil(r json.RawMessage) []byte {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}
