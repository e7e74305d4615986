package catalog

import (
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// file is a catalog file: YAML (or JSON, which is YAML), for example
//
//	models:
//	  - model: deepgram/aura:2
//	    kind: tts
//	    source: "where these facts come from"
//	    encodings: [linear16, mulaw, alaw]
//	    encodings_complete: true
//	    voices:
//	      - {id: aura-2-thalia-en, name: Thalia, language: en}
//	    voices_complete: false
//	    sends: {timings: false}
//
// slng.yaml, the built-in catalog, shows every field.
type file struct {
	Models []Model `json:"models"`
}

// Parse reads a catalog file. Unknown fields are errors, so that a typo
// does not silently leave a list open or a check off; so are lists said
// to be complete that are empty, a file that lists no models, unknown encodings, sample rates outside
// 8000-48000 Hz, a model listed twice, and a model with no source.
func Parse(b []byte) (*Catalog, error) {
	var f file
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if len(f.Models) == 0 {
		// A catalog refuses every model it does not list; one that lists
		// none is a mistake, or a file read while it was being written.
		return nil, errors.New("catalog: lists no models")
	}
	if err := validate(f.Models); err != nil {
		return nil, err
	}
	return newCatalog(f.Models), nil
}

//go:embed slng.yaml
var builtin []byte

// Default returns the built-in catalog: the SLNG models documented today
// (slng.yaml), each entry naming its sources. It fails only if the
// embedded file is broken, which its tests rule out.
func Default() (*Catalog, error) {
	return Parse(builtin)
}

// validate checks models as Parse documents.
func validate(models []Model) error {
	var errs []error
	seen := map[string]bool{}
	for i := range models {
		m := &models[i]
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("models[%d] (%s): %s", i, m.Model, fmt.Sprintf(format, args...)))
		}
		if err := slngclient.ValidateModel(m.Model); err != nil {
			bad("not a model id like provider/model:variant")
		}
		if seen[m.Model] {
			bad("listed twice")
		}
		seen[m.Model] = true
		if m.Kind != TTS && m.Kind != STT {
			bad("kind %q is neither tts nor stt", m.Kind)
		}
		if strings.TrimSpace(m.Source) == "" {
			bad("no source: say where the facts come from")
		}
		for _, e := range m.Encodings {
			if !slices.Contains(Encodings, e) {
				bad("encoding %q is none of %s", e, strings.Join(Encodings, ", "))
			}
		}
		for _, r := range m.SampleRates {
			if r < minSampleRate || r > maxSampleRate {
				bad("sample rate %d is outside %d-%d Hz", r, minSampleRate, maxSampleRate)
			}
		}
		for _, l := range []struct {
			name     string
			n        int
			complete bool
		}{
			{"regions", len(m.Regions), m.RegionsComplete},
			{"encodings", len(m.Encodings), m.EncodingsComplete},
			{"sample_rates_hz", len(m.SampleRates), m.SampleRatesComplete},
			{"languages", len(m.Languages), m.LanguagesComplete},
			{"voices", len(m.Voices), m.VoicesComplete},
		} {
			if l.complete && l.n == 0 {
				bad("%s is said to be complete but is empty", l.name)
			}
		}
		validateVoices(m, bad)
	}
	if len(errs) > 0 {
		return fmt.Errorf("catalog: %w", errors.Join(errs...))
	}
	return nil
}

// validateVoices checks a model's voices and what only one kind has.
func validateVoices(m *Model, bad func(string, ...any)) {
	if m.Kind == STT && (len(m.Voices) > 0 || m.DefaultVoice != "") {
		bad("a speech-to-text model has no voices")
	}
	if m.Kind == TTS && (m.Sends.Partials != nil || m.Sends.UtteranceEnd != nil) {
		bad("partials and utterance_end are sent by speech-to-text models only")
	}
	ids := map[string]bool{}
	for _, v := range m.Voices {
		id := strings.ToLower(v.ID)
		switch {
		case v.ID == "":
			bad("a voice without an id")
		case ids[id]:
			bad("voice %q listed twice", v.ID)
		}
		ids[id] = true
	}
	if m.DefaultVoice != "" && m.VoicesComplete && !ids[strings.ToLower(m.DefaultVoice)] {
		bad("default_voice %q is not among its voices", m.DefaultVoice)
	}
}

// quote quotes a value for a message, cut to 140 bytes: a caller's value
// may be long.
func quote(s string) string {
	if len(s) > 140 {
		return strconv.Quote(s[:140]) + "..."
	}
	return strconv.Quote(s)
}

func itoa(n int) string { return strconv.Itoa(n) }

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ", ")
}
