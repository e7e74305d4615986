package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// TestRunVersion: --version prints one line and starts nothing.
func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(--version) = %v", err)
	}
	line := stdout.String()
	if !strings.HasPrefix(line, "slngsim ") || !strings.HasSuffix(line, runtime.Version()+")\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("run(--version) printed %q, want one line naming slngsim and %s", line, runtime.Version())
	}
	if stderr.Len() != 0 {
		t.Fatalf("run(--version) wrote %q to stderr", stderr.String())
	}
}
