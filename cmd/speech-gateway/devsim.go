//go:build !nodev

package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"go.uber.org/zap"

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
