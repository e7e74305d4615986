package slngsim

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any simulator goroutine outlives
// them: Server.Close must wait for every session.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
