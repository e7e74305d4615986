package callers

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// RPCs are the method names a policy may name.
var RPCs = []string{"Synthesize", "SynthesizeText", "Transcribe"}

// Policy is an access policy file: which callers may use which RPCs and
// models, and their quotas. YAML or JSON (JSON is YAML), for example:
//
//	callers:
//	  - id: spiffe://cluster.local/ns/checkout/sa/web
//	    rpcs: [Synthesize, SynthesizeText]
//	    models: ["deepgram/aura:*"]
//	    max_streams: 20
//	    characters_per_minute: 100000
//	  - id: "spiffe://cluster.local/ns/support/*"
//	    rpcs: [Transcribe]
//
// A stream is allowed when an entry whose id matches its caller lists its
// RPC (no rpcs: all) and its model (no models: all). Anything else is
// denied, unknown callers included. A caller's quota is, per field, the
// first matching entry that sets it, else the gateway's flag; 0 means no
// limit.
type Policy struct {
	Callers []Entry `json:"callers"`
}

// Entry is one rule of a Policy.
type Entry struct {
	// ID is a caller id, or a pattern where * matches any run of
	// characters, "/" included.
	ID     string   `json:"id"`
	RPCs   []string `json:"rpcs,omitempty"`
	Models []string `json:"models,omitempty"`
	// Quotas; nil keeps the gateway's default.
	MaxStreams            *int   `json:"max_streams,omitempty"`
	CharactersPerMinute   *int64 `json:"characters_per_minute,omitempty"`
	AudioSecondsPerMinute *int64 `json:"audio_seconds_per_minute,omitempty"`
}

// ParsePolicy reads a policy from YAML or JSON; unknown fields are errors,
// so that a typo does not silently allow or limit nothing.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("access policy: %w", err)
	}
	var errs []error
	for i, e := range p.Callers {
		where := fmt.Sprintf("callers[%d]", i)
		if !validID(strings.ReplaceAll(e.ID, "*", "x")) {
			errs = append(errs, fmt.Errorf("%s: id %q is not a caller id or pattern", where, e.ID))
		}
		for _, r := range e.RPCs {
			if r != "*" && !slices.Contains(RPCs, r) {
				errs = append(errs, fmt.Errorf("%s: rpc %q is none of %s", where, r, strings.Join(RPCs, ", ")))
			}
		}
		for _, m := range e.Models {
			if m == "" {
				errs = append(errs, fmt.Errorf("%s: an empty model pattern", where))
			}
		}
		if (e.MaxStreams != nil && *e.MaxStreams < 0) || (e.CharactersPerMinute != nil && *e.CharactersPerMinute < 0) ||
			(e.AudioSecondsPerMinute != nil && *e.AudioSecondsPerMinute < 0) {
			errs = append(errs, fmt.Errorf("%s: a negative quota", where))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("access policy: %w", err)
	}
	return &p, nil
}

// LoadPolicy reads a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("access policy: %w", err)
	}
	return ParsePolicy(b)
}

// Allows reports whether caller may use rpc with model.
// AllowsRPC reports whether the policy lets caller use rpc with some model:
// what a stream can be told before its config names one.
func (p *Policy) AllowsRPC(caller, rpc string) bool {
	for _, e := range p.Callers {
		if match(e.ID, caller) && (len(e.RPCs) == 0 || slices.Contains(e.RPCs, rpc) || slices.Contains(e.RPCs, "*")) {
			return true
		}
	}
	return false
}

func (p *Policy) Allows(caller, rpc, model string) bool {
	for _, e := range p.Callers {
		if match(e.ID, caller) && (len(e.RPCs) == 0 || slices.Contains(e.RPCs, rpc) || slices.Contains(e.RPCs, "*")) &&
			(len(e.Models) == 0 || matchAny(e.Models, model)) {
			return true
		}
	}
	return false
}

// Limits are one caller's quotas; 0 means no limit.
type Limits struct {
	MaxStreams            int
	CharactersPerMinute   int64
	AudioSecondsPerMinute int64
}

// limits applies the policy's overrides for caller to def.
func (p *Policy) limits(caller string, def Limits) Limits {
	var streams, chars, audio bool
	for _, e := range p.Callers {
		if !match(e.ID, caller) {
			continue
		}
		if e.MaxStreams != nil && !streams {
			def.MaxStreams, streams = *e.MaxStreams, true
		}
		if e.CharactersPerMinute != nil && !chars {
			def.CharactersPerMinute, chars = *e.CharactersPerMinute, true
		}
		if e.AudioSecondsPerMinute != nil && !audio {
			def.AudioSecondsPerMinute, audio = *e.AudioSecondsPerMinute, true
		}
	}
	return def
}

// named lists the ids the policy names exactly (no pattern): they always
// get a metric label of their own.
func (p *Policy) named() []string {
	var out []string
	for _, e := range p.Callers {
		if !strings.Contains(e.ID, "*") {
			out = append(out, e.ID)
		}
	}
	return out
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if match(p, s) {
			return true
		}
	}
	return false
}

// match reports whether s matches pattern, where * matches any run of
// characters ("/" and ":" included: caller ids are URIs, models
// "provider/model:variant").
func match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, last)
}
