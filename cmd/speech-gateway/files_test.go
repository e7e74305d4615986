package main

import (
	"os"
	"testing"
)

// readFile returns the content of path (a repository file the tests check
// against), failing the test when it cannot be read.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
