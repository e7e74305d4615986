package slngpool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// CircuitOpenError is returned, without dialing, while the breaker of a
// model and region is open.
type CircuitOpenError struct {
	Model, Region string
	// RetryAfter is the time left until the breaker lets a probe through.
	RetryAfter time.Duration
}

func (e *CircuitOpenError) Error() string {
	region := e.Region
	if region == "" {
		region = "default"
	}
	return fmt.Sprintf("slng circuit open for %s in region %s; retry in %s", e.Model, region, e.RetryAfter.Round(time.Millisecond))
}

// breaker wraps a gobreaker two-step breaker for one (model, region) and
// remembers when it opened, which gobreaker does not expose.
type breaker struct {
	model, region string
	cb            *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout       time.Duration
	openedAt      atomic.Int64 // Unix nanoseconds of the last transition to open
}

// counted reports whether err counts against a breaker: only failures that
// say SLNG is unwell do (slngclient's Class().Unwell), and the deaths
// reportDeath reports. Caller cancellations, invalid configs, auth and
// rate limits are excluded, neither success nor failure.
func counted(err error) bool {
	if errors.Is(err, errDied) {
		return true
	}
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && ue.Unwell()
}

// errDied marks a session that SLNG ended before it was of use: right
// after ready, or as a standby before any caller used it. Whatever the
// close said, that is SLNG failing.
var errDied = errors.New("slng session ended before use")

// reportDeath records a session that SLNG ended before it was of use, err
// being how, as a failure.
func (b *breaker) reportDeath(err error) {
	b.report(fmt.Errorf("%w: %w", errDied, err))
}

// allow asks to dial. When the breaker refuses, it returns a
// *CircuitOpenError.
func (b *breaker) allow() (func(error), error) {
	done, err := b.cb.Allow()
	if err == nil {
		return done, nil
	}
	left := time.Duration(0)
	if errors.Is(err, gobreaker.ErrOpenState) {
		left = b.timeout - time.Since(time.Unix(0, b.openedAt.Load()))
	}
	// Half-open with its probe in flight: the probe decides soon.
	return nil, &CircuitOpenError{Model: b.model, Region: b.region, RetryAfter: max(left, 100*time.Millisecond)}
}

// errPending is what a standby's successful dial reports to its breaker:
// neither success nor failure yet, since a standby that SLNG ends before
// use is SLNG failing. Its fate is reported when the stream it served
// ends, or when it is retired or dies.
var errPending = errors.New("standby pending")

// reportOK records a session that worked: a standby that served a stream
// to its end, or lived out its age. Only a closed breaker hears of it: a
// half-open breaker waits for its own probe, and a session dialled before
// an outage must neither take the probe's place nor close the breaker.
func (b *breaker) reportOK() {
	if b.cb.State() != gobreaker.StateClosed {
		return
	}
	if done, err := b.cb.Allow(); err == nil {
		done(nil)
	}
}

// report records the outcome of a session after its dial succeeded: a
// session that fails because SLNG is unwell counts as a failure.
func (b *breaker) report(err error) {
	if !counted(err) {
		return
	}
	if done, aerr := b.cb.Allow(); aerr == nil {
		done(err)
	}
}

// breakers holds one breaker per (model, region), bounded: when full, the
// closed breakers are forgotten (they hold no state worth keeping).
type breakers struct {
	mu      sync.Mutex
	m       map[string]*breaker
	max     int
	opts    *Options
	log     *zap.Logger
	metrics *Metrics
}

func (bs *breakers) get(model, region string) *breaker {
	k := model + "\x00" + region
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b := bs.m[k]; b != nil {
		return b
	}
	if len(bs.m) >= bs.max {
		for key, b := range bs.m {
			if b.cb.State() == gobreaker.StateClosed {
				delete(bs.m, key)
				bs.metrics.forgetBreaker(b.model, b.region)
			}
		}
	}
	b := &breaker{model: model, region: region, timeout: bs.opts.BreakerOpenTimeout}
	failures := uint32(bs.opts.BreakerFailures)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        model,
		MaxRequests: 1,
		Timeout:     bs.opts.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return err != nil && !counted(err) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.openedAt.Store(time.Now().UnixNano())
			}
			bs.log.Warn("slng circuit breaker changed state",
				zap.String("model", model), zap.String("region", region),
				zap.Stringer("from", from), zap.Stringer("to", to))
			bs.metrics.breakerState(model, region, to)
		},
	})
	bs.m[k] = b
	bs.metrics.breakerState(model, region, gobreaker.StateClosed)
	return b
}
