package slngpool_test

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestKeyChanged: when the gateway's key is rotated, the standby dialled
// with the old key is closed at once and replaced by one with the new key;
// a session in use keeps serving its stream but does not go back to the
// pool; and SLNG, which now refuses the old key, never sees it again.
func TestKeyChanged(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-key-0123456789", "new-key-9876543210"
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: oldKey})
	c, err := slngclient.New(slngclient.Options{BaseURL: sim.URL(), APIKey: oldKey, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ttsCfg
	p, err := slngpool.New(c, slngpool.Options{Logger: zaptest.NewLogger(t),
		Prewarm: []slngpool.Profile{{Endpoint: slngclient.Endpoint{Model: aura}, TTS: &cfg}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	waitIdle(t, p, 1)
	ctx := testCtx(t)
	inUse, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	waitIdle(t, p, 1) // the prewarmed configuration gets its standby back

	sim.SetAPIKeys(newKey)
	c.SetAPIKey(newKey)
	p.KeyChanged()

	// The stream in flight goes on with its old-key session.
	speak(t, inUse, "still speaking")
	inUse.Release(nil, true)
	// A new standby, with the new key, replaces the old one.
	poll.Wait(t, ctx, "a standby with the new key", func() bool {
		for _, s := range sim.Sessions() {
			if s.KeyID == slngsim.KeyID(newKey) && s.Open {
				return p.IdleCount() == 1
			}
		}
		return false
	})
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Warm {
		t.Error("the new standby did not serve the next stream")
	}
	speak(t, l, "with the new key")
	l.Release(nil, false)
	// The simulator sees a close when its handler reads it, a little
	// after the pool closed the socket.
	poll.Wait(t, ctx, "every session with the old key closed", func() bool {
		for _, s := range sim.Sessions() {
			if s.KeyID == slngsim.KeyID(oldKey) && s.Open {
				return false
			}
		}
		return true
	})
	if n := sim.Stats().Rejected; n != 0 {
		t.Errorf("SLNG refused %d handshakes: the old key was used after the change", n)
	}
}

// TestStandbySurvivesTheEcho: a session handed back with the route's
// second end-of-turn signal for its last turn still to come (here
// audio_end after flushed) drops that signal itself while it waits as a
// standby: it stays warm, and the next stream's turn on it is whole.
func TestStandbySurvivesTheEcho(t *testing.T) {
	t.Parallel()
	sim, p := setup(t, slngsim.Options{}, slngpool.Options{RecentTTL: -1})
	ctx := testCtx(t)
	l, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Session.Text(ctx, "half read", true); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := l.Session.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == slngclient.TTSTurnEnd {
			break // audio_end is still to come
		}
	}
	if !l.Session.Reusable() {
		t.Fatal("a session with every turn ended is not reusable")
	}
	l.Release(nil, true)
	l2, err := p.AcquireTTS(ctx, slngpool.Request{Endpoint: slngclient.Endpoint{Model: aura}}, ttsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l2.Warm {
		t.Error("the session was not handed out again")
	}
	speak(t, l2, "a fresh turn")
	l2.Release(nil, false)
	if n := sim.Stats().Connections; n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}
