package catalog

import (
	"cmp"
	"slices"
	"strings"
)

// Kind says which RPCs serve a model.
type Kind string

// The kinds of model.
const (
	// TTS models serve Synthesize and SynthesizeText.
	TTS Kind = "tts"
	// STT models serve Transcribe.
	STT Kind = "stt"
)

// Encodings are the encoding names a catalog uses, SLNG's own.
var Encodings = []string{"linear16", "mp3", "opus", "mulaw", "alaw"}

// Sample rates outside this range are never valid: SLNG takes 8000-48000
// Hz.
const (
	minSampleRate = 8000
	maxSampleRate = 48000
)

// Model is what the catalog knows about one model. Each list comes with a
// Complete flag: true means the model offers nothing outside the list.
// Fields are read-only once the model is in a Catalog.
type Model struct {
	// Model is the id, e.g. "deepgram/aura:2", as SLNG routes take it.
	Model string `json:"model"`
	Kind  Kind   `json:"kind"`
	// DisplayName is a name for people, e.g. "Aura 2"; may be empty.
	DisplayName string `json:"display_name,omitempty"`
	// Source says where the facts come from; required.
	Source string `json:"source"`
	// Notes says what is not known, or worth knowing.
	Notes string `json:"notes,omitempty"`

	// Regions are where SLNG serves the model, in SLNG's terms (world
	// parts or cloud regions). Informational.
	Regions         []string `json:"regions,omitempty"`
	RegionsComplete bool     `json:"regions_complete,omitempty"`
	// Encodings are SLNG's names (Encodings): of the audio returned (TTS)
	// or sent (STT).
	Encodings         []string `json:"encodings,omitempty"`
	EncodingsComplete bool     `json:"encodings_complete,omitempty"`
	// SampleRates are in Hz.
	SampleRates         []int `json:"sample_rates_hz,omitempty"`
	SampleRatesComplete bool  `json:"sample_rates_complete,omitempty"`
	// Languages are ISO 639-1 codes or BCP-47 tags. Informational.
	Languages         []string `json:"languages,omitempty"`
	LanguagesComplete bool     `json:"languages_complete,omitempty"`
	// Voices are a TTS model's voices.
	Voices         []Voice `json:"voices,omitempty"`
	VoicesComplete bool    `json:"voices_complete,omitempty"`
	// DefaultVoice is the voice the model uses when a config names none,
	// "" when not known.
	DefaultVoice string `json:"default_voice,omitempty"`
	// Sends says what the model's route sends.
	Sends Sends `json:"sends,omitempty"`
}

// Voice is one voice of a TTS model.
type Voice struct {
	// ID is what a config's voice field takes.
	ID string `json:"id"`
	// Name is a name for people; may be empty.
	Name string `json:"name,omitempty"`
	// Language is an ISO 639-1 code or BCP-47 tag; may be empty.
	Language string `json:"language,omitempty"`
}

// Sends says which optional messages a model's route sends; nil is not
// known.
type Sends struct {
	// Partials: STT partial transcripts, when asked for.
	Partials *bool `json:"partials,omitempty"`
	// UtteranceEnd: STT end-of-utterance markers.
	UtteranceEnd *bool `json:"utterance_end,omitempty"`
	// Timings: TTS alignment of the spoken text with the audio; STT
	// per-word timings.
	Timings *bool `json:"timings,omitempty"`
}

// Catalog is a set of models, immutable once built. The nil *Catalog is
// empty.
type Catalog struct {
	models []*Model // sorted by Model
	byID   map[string]*Model
}

// newCatalog indexes models, which the caller has validated.
func newCatalog(models []Model) *Catalog {
	c := &Catalog{byID: make(map[string]*Model, len(models))}
	for i := range models {
		m := &models[i]
		c.models = append(c.models, m)
		c.byID[m.Model] = m
	}
	slices.SortFunc(c.models, func(a, b *Model) int { return cmp.Compare(a.Model, b.Model) })
	return c
}

// Lookup returns the model with id, or nil when the catalog has none.
func (c *Catalog) Lookup(id string) *Model {
	if c == nil {
		return nil
	}
	return c.byID[id]
}

// Models returns every model, ordered by id. The slice is the caller's;
// the models are shared and must not be modified.
func (c *Catalog) Models() []*Model {
	if c == nil {
		return nil
	}
	return slices.Clone(c.models)
}

// Len is the number of models.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.models)
}

// Map returns a catalog of the models f returns for each model of c (a
// copy it may change), e.g. to describe the same models as a simulator
// plays them. The result is validated as a parsed file is.
func (c *Catalog) Map(f func(Model) Model) (*Catalog, error) {
	var models []Model
	for _, m := range c.Models() {
		cp := *m
		cp.Regions = slices.Clone(m.Regions)
		cp.Encodings = slices.Clone(m.Encodings)
		cp.SampleRates = slices.Clone(m.SampleRates)
		cp.Languages = slices.Clone(m.Languages)
		cp.Voices = slices.Clone(m.Voices)
		models = append(models, f(cp))
	}
	if err := validate(models); err != nil {
		return nil, err
	}
	return newCatalog(models), nil
}

// Field names what a Problem is about.
type Field int

// The fields Check judges.
const (
	FieldVoice Field = iota
	FieldEncoding
	FieldSampleRate
)

// Problem is one value of a request that a model does not offer.
type Problem struct {
	Field Field
	// Message says what is wrong and what the model offers, for a
	// caller: lowercase, no trailing punctuation.
	Message string
}

// Request is what a stream's config asks of a model.
type Request struct {
	// Voice is the voice id, "" for the model's default (TTS only).
	Voice string
	// Encoding is the SLNG name of the audio's encoding (Encodings).
	Encoding string
	// SampleRate is in Hz.
	SampleRate int
}

// Check reports every value of r that m's complete lists do not offer;
// nil when there is none. Voices match regardless of case, so that a
// voice SLNG might take is never refused. An empty voice is the model's
// default and always offered.
func (m *Model) Check(r Request) []Problem {
	var out []Problem
	if r.Voice != "" && m.VoicesComplete && m.voice(r.Voice) == nil {
		msg := "model " + m.Model + " has no voice " + quote(r.Voice)
		if near := m.nearestVoice(r.Voice); near != "" {
			msg += ": did you mean " + quote(near) + "?"
		}
		out = append(out, Problem{FieldVoice, msg + " (CatalogService.ListVoices lists its voices)"})
	}
	if m.EncodingsComplete && !slices.Contains(m.Encodings, r.Encoding) {
		out = append(out, Problem{FieldEncoding, "model " + m.Model + " does not take " + r.Encoding + " audio; it takes " +
			strings.Join(m.Encodings, ", ")})
	}
	if m.SampleRatesComplete && !slices.Contains(m.SampleRates, r.SampleRate) {
		out = append(out, Problem{FieldSampleRate, "model " + m.Model + " offers no " + itoa(r.SampleRate) + " Hz; it offers " +
			joinInts(m.SampleRates) + " Hz"})
	}
	return out
}

// voice finds a voice by id, regardless of case.
func (m *Model) voice(id string) *Voice {
	for i := range m.Voices {
		if strings.EqualFold(m.Voices[i].ID, id) {
			return &m.Voices[i]
		}
	}
	return nil
}

// nearestVoice is the voice id closest to id, when one is close enough to
// be a typo of it (at most 3 edits, and at most a quarter of its letters),
// else "". Ids longer than any voice's name are no typo: their distances
// are not worth computing.
func (m *Model) nearestVoice(id string) string {
	if len(id) > maxVoiceGuess {
		return ""
	}
	best, bestDist := "", min(3, len(id)/4)+1
	for _, v := range m.Voices {
		if d := distance(strings.ToLower(id), strings.ToLower(v.ID)); d < bestDist {
			best, bestDist = v.ID, d
		}
	}
	return best
}

// maxVoiceGuess bounds the voice ids nearestVoice matches.
const maxVoiceGuess = 64

// distance is the Levenshtein distance of a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// VoicesFor returns m's voices for language ("" for all), in catalog order:
// "en" matches voices of "en" and "en-US"; "en-US" matches "en-US" and
// plain "en", whose region is not known. A voice of unknown language
// matches only "".
func (m *Model) VoicesFor(language string) []Voice {
	if language == "" {
		return slices.Clone(m.Voices)
	}
	var out []Voice
	for _, v := range m.Voices {
		if languageMatches(language, v.Language) {
			out = append(out, v)
		}
	}
	return out
}

func languageMatches(want, have string) bool {
	if have == "" {
		return false
	}
	wantLang, wantRegion, _ := strings.Cut(strings.ToLower(want), "-")
	haveLang, haveRegion, _ := strings.Cut(strings.ToLower(have), "-")
	return wantLang == haveLang && (wantRegion == "" || haveRegion == "" || wantRegion == haveRegion)
}
