package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	slngsimPackage = "github.com/speech-gateway/speech-gateway/slngsim"
	// noSimulator is what --dev says in the nodev build (devsim_off.go).
	noSimulator = "the embedded SLNG simulator is not built into this binary"
)

// TestNodevBuildLeavesSimulatorOut: the production build (-tags nodev, as
// the Dockerfile builds it) links no simulator, and its --dev says so and
// stops, where the default build links it.
func TestNodevBuildLeavesSimulatorOut(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	deps := func(tags ...string) []string {
		t.Helper()
		out, err := exec.CommandContext(ctx, goBin, append(append([]string{"list"}, tags...), "-deps", ".")...).Output()
		if err != nil {
			t.Fatalf("go list %v: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	if !slices.Contains(deps(), slngsimPackage) {
		t.Fatalf("the default build does not import %s: nothing to leave out", slngsimPackage)
	}
	if slices.Contains(deps("-tags", "nodev"), slngsimPackage) {
		t.Errorf("the nodev build imports %s", slngsimPackage)
	}

	// Built with -race when the test is, as buildGatewayBinary does, so
	// that the packages are already compiled.
	bin := filepath.Join(t.TempDir(), "speech-gateway")
	args := []string{"build", "-tags", "nodev", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok && slices.Contains(bi.Settings, debug.BuildSetting{Key: "-race", Value: "true"}) {
		args = append(args, "-race")
	}
	if out, err := exec.CommandContext(ctx, goBin, append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("speech-gateway --dev of the nodev build: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), noSimulator) {
		t.Errorf("speech-gateway --dev of the nodev build says\n%s\nwant %q", out, noSimulator)
	}
}
