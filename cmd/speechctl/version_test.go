package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// TestRunVersion: "speechctl --version" and "speechctl version" print one
// line, and need no gateway.
func TestRunVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "version"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{arg}, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("run(%s) = %v", arg, err)
		}
		line := stdout.String()
		if !strings.HasPrefix(line, "speechctl ") || !strings.HasSuffix(line, runtime.Version()+")\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("run(%s) printed %q, want one line naming speechctl and %s", arg, line, runtime.Version())
		}
	}
}
