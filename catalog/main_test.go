package catalog

import (
	"testing"

	"go.uber.org/goleak"
)

// The file watcher's goroutine must be gone once a Live is closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
