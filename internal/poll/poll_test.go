package poll

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEveryStopsWhenDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	calls := 0
	Every(ctx, time.Millisecond, func() bool {
		calls++
		return calls == 3
	})
	if calls != 3 {
		t.Fatalf("check ran %d times, want 3", calls)
	}
	if ctx.Err() != nil {
		t.Fatal("Every returned only when its context ended")
	}
}

func TestEveryStopsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	Every(ctx, time.Millisecond, func() bool {
		calls++
		if calls == 2 {
			cancel()
		}
		return false
	})
	// Every has returned: a tick ready with the cancel may have run one
	// more check, never more.
	if calls != 2 && calls != 3 {
		t.Fatalf("check ran %d times, want 2 (or 3)", calls)
	}
}

func TestUntil(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	calls := 0
	if err := Until(ctx, time.Millisecond, func() bool { calls++; return calls == 3 }); err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d checks, want nil after 3", err, calls)
	}
	calls = 0
	if err := Until(ctx, time.Hour, func() bool { calls++; return true }); err != nil || calls != 1 {
		t.Fatalf("Until of a condition that holds = %v after %d checks, want nil after 1", err, calls)
	}
	short, cancelShort := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancelShort()
	if err := Until(short, time.Millisecond, func() bool { return false }); err != context.DeadlineExceeded {
		t.Fatalf("Until of a condition that never holds = %v, want context.DeadlineExceeded", err)
	}
}

// fakeT records what Wait reports.
type fakeT struct{ failed string }

func (*fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var ft fakeT
	calls := 0
	Wait(&ft, ctx, "the third call", func() bool {
		calls++
		return calls == 3
	})
	if ft.failed != "" || calls != 3 {
		t.Fatalf("Wait failed %q after %d calls", ft.failed, calls)
	}
	ended, cancelEnded := context.WithCancel(ctx)
	cancelEnded()
	Wait(&ft, ended, "nothing", func() bool { return false })
	if want := "waiting for nothing: context canceled"; ft.failed != want {
		t.Fatalf("Wait failed %q, want %q", ft.failed, want)
	}
}
