//go:build nodev

package main

import (
	"errors"
	"io"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/catalog"
)

// errNoSimulator is --dev in a build without the embedded simulator.
var errNoSimulator = errors.New("--dev: the embedded SLNG simulator is not built into this binary (built with -tags nodev); " +
	"run slngsim and point --slng-base-url at it, or use a build without the tag")

// startSimulator refuses --dev: this build (the production image's) leaves
// the simulator out.
func startSimulator(*config, *zap.Logger) (io.Closer, error) {
	return nil, errNoSimulator
}

// devCatalog is never reached: --dev fails first.
func devCatalog(*catalog.Catalog, string) (*catalog.Catalog, error) {
	return nil, errNoSimulator
}
