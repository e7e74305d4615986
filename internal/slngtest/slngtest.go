// Package slngtest starts SLNG simulators for tests, and proxies to them
// whose connections can vanish without a FIN.
package slngtest

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/slngsim"
)

// NewServer starts a simulator on loopback with opts, logging to t, and
// closes it when the test ends.
func NewServer(t testing.TB, opts slngsim.Options) *slngsim.Server {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	s, err := slngsim.Start(opts)
	if err != nil {
		t.Fatalf("start simulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close simulator: %v", err)
		}
	})
	return s
}
