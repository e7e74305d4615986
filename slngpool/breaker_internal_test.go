package slngpool

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/poll"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestReportOKLeavesHalfOpenAlone: a session that worked, reported while
// the breaker is half-open, neither closes it nor takes its probe.
func TestReportOKLeavesHalfOpenAlone(t *testing.T) {
	opts := &Options{BreakerFailures: 1, BreakerOpenTimeout: 20 * time.Millisecond}
	bs := &breakers{m: map[string]*breaker{}, max: 4, opts: opts, log: zap.NewNop(), metrics: NewMetrics(prometheus.NewRegistry())}
	b := bs.get("deepgram/aura:2", "")
	b.report(slngclient.NewTimeout("no answer", nil))
	if st := b.cb.State(); st != gobreaker.StateOpen {
		t.Fatalf("state %v after a failure, want open", st)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// gobreaker's open timeout runs on the real clock.
	poll.Wait(t, ctx, "the breaker half-open", func() bool { return b.cb.State() == gobreaker.StateHalfOpen })
	b.reportOK() // a session dialled before the outage, retired now
	if st := b.cb.State(); st != gobreaker.StateHalfOpen {
		t.Fatalf("state %v after an old session's success, want half-open", st)
	}
	done, err := b.allow()
	if err != nil {
		t.Fatalf("the probe was taken: %v", err)
	}
	done(nil)
	if st := b.cb.State(); st != gobreaker.StateClosed {
		t.Fatalf("state %v after the probe succeeded, want closed", st)
	}
}
