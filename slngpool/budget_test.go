package slngpool_test

import (
	"errors"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/fleet"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestBudget: with a Budget of 2 sessions, a third caller waits
// AcquireTimeout and gets ErrBudget; a released session goes back to the
// Budget, and stays as a standby only when a caller would still find
// room; a caller short of room retires this pool's standby first.
func TestBudget(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := fleet.New(fleet.Options{Linger: -1})
	t.Cleanup(f.Close)
	budget := f.Budget(2)
	sim, p := setup(t, slngsim.Options{}, slngpool.Options{
		Budget: budget, AcquireTimeout: 50 * time.Millisecond, RecentTTL: -1, DialAttempts: 1,
	})
	ep := slngclient.Endpoint{Model: aura}
	l1, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, ttsCfg); !errors.Is(err, slngpool.ErrBudget) || !errors.Is(err, slngpool.ErrExhausted) {
		t.Fatalf("a third session: err = %v, want ErrBudget", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("the third caller gave up after %v, before AcquireTimeout", waited)
	}
	if n := sim.Stats().Connections; n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}

	// Both sessions are clean. The first, released while the Budget is
	// full, would leave callers no room: it is closed. The second then
	// leaves one free, and stays as a standby.
	speak(t, l1, "One.")
	speak(t, l2, "Two.")
	l1.Release(nil, true)
	if n := p.IdleCount(); n != 0 {
		t.Fatalf("kept %d standbys with the Budget full", n)
	}
	l2.Release(nil, true)
	if n := p.IdleCount(); n != 1 {
		t.Fatalf("%d standbys, want 1", n)
	}

	// Another configuration takes the free session; the next retires the
	// standby to get one.
	other := ttsCfg
	other.Voice = "aura-2-orion-en"
	l3, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, other)
	if err != nil {
		t.Fatal(err)
	}
	other.Voice = "aura-2-luna-en"
	l4, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: ep}, other)
	if err != nil {
		t.Fatalf("with a standby to retire: %v", err)
	}
	if n := p.IdleCount(); n != 0 {
		t.Errorf("%d standbys left", n)
	}
	l3.Release(nil, false)
	l4.Release(nil, false)
	if n := sim.Stats().Rejected; n != 0 {
		t.Errorf("the simulator refused %d connections", n)
	}
}
