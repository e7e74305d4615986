package slngpool

import (
	"context"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/speech-gateway/speech-gateway/internal/poll"
)

// Settle waits, within ctx, until a maintenance pass that began after the
// call has ended: the pool has acted on its clock as the test left it, and
// every background dial it started is counted by InFlight or done.
func Settle(ctx context.Context, p *Pool) error {
	begun := p.passesBegun.Load()
	p.wake()
	return poll.Until(ctx, time.Millisecond, func() bool { return p.passesEnded.Load() > begun })
}

// InFlight is the number of background dials under way.
func InFlight(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, d := range p.dialing {
		n += d
	}
	return n
}

// BreakerState is the state of the breaker of model in region, as
// gobreaker computes it now.
func BreakerState(p *Pool, model, region string) gobreaker.State {
	return p.br.get(model, region).cb.State()
}
