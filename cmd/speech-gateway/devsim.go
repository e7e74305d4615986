//go:build !nodev

package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/catalog"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// The embedded simulator of --dev is built in unless the build tag nodev
// is set. The production image's binary is built with the tag
// (scripts/image.sh, the Dockerfile), so that the image holds no simulator
// and its --dev says so (devsim_off.go).

// startSimulator starts the embedded SLNG simulator for --dev and points the
// config at it, with a random key so that the auth path is exercised too.
func startSimulator(cfg *config, log *zap.Logger) (io.Closer, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	key := "dev_" + hex.EncodeToString(b[:])
	profile, err := slngsim.ProfileFunc(cfg.serve.devProfile)
	if err != nil {
		return nil, fmt.Errorf("--dev-profile: %w", err)
	}
	sim, err := slngsim.Start(slngsim.Options{
		Addr:       "127.0.0.1:0",
		APIKey:     key,
		Realtime:   cfg.serve.devRealtime,
		ProfileFor: profile,
		Logger:     log.Named("slngsim"),
	})
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	cfg.client.BaseURL = sim.URL()
	cfg.client.APIKey = key
	log.Info("dev mode: using the embedded SLNG simulator", zap.String("url", sim.URL()), zap.String("profile", cfg.serve.devProfile))
	return sim, nil
}

// devCatalog is the catalog of --dev: the models of c, which the simulator
// serves under any id with the profile that profileName gives it, as it
// plays them. The lists the gateway checks (voices, encodings, sample
// rates) stay SLNG's, so that dev mode refuses what SLNG would, but for a
// TTS route the profile makes produce one format (Profile.Produces), whose
// lists say just that; what the routes send is the simulator's: partial transcripts when asked for (or
// always), utterance_end where the model's profile sends any, and no
// alignment with synthesized audio.
func devCatalog(c *catalog.Catalog, profileName string) (*catalog.Catalog, error) {
	profile, err := slngsim.ProfileFunc(profileName)
	if err != nil {
		return nil, fmt.Errorf("--dev-profile: %w", err)
	}
	yes, no := true, false
	return c.Map(func(m catalog.Model) catalog.Model {
		m.Source = "slngsim, the embedded SLNG simulator, serving this model as its route profile says (docs/simulator.md); " +
			"the voices, encodings and sample rates are SLNG's: " + m.Source
		m.Regions, m.RegionsComplete = nil, false
		switch m.Kind {
		case catalog.STT:
			ends := &no
			if profile(m.Model).UtteranceEnd != slngsim.UtteranceEndNever {
				ends = &yes
			}
			m.Sends = catalog.Sends{Partials: &yes, UtteranceEnd: ends}
		case catalog.TTS:
			m.Sends = catalog.Sends{Timings: &no}
		}
		if f := profile(m.Model).Produces; m.Kind == catalog.TTS && f.Encoding != "" {
			// A route of one format (pcm24k-only): the gateway asks for
			// it and converts it into what callers ask for.
			m.Encodings, m.EncodingsComplete = []string{f.Encoding}, true
			m.SampleRates, m.SampleRatesComplete = []int{f.SampleRate}, true
		}
		return m
	})
}
