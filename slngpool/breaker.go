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
// model and region is open, or that of one configuration of it (Config).
type CircuitOpenError struct {
	Model, Region string
	// Config: the breaker is one configuration's (its voice, language,
	// encoding and the rest of its init), whose sessions SLNG kept ending
	// right after init; other configurations of the model are dialled.
	Config bool
	// RetryAfter is the time left until the breaker lets a probe through.
	RetryAfter time.Duration
}

func (e *CircuitOpenError) Error() string {
	region := e.Region
	if region == "" {
		region = "default"
	}
	scope := ""
	if e.Config {
		scope = " (this configuration)"
	}
	return fmt.Sprintf("slng circuit open for %s%s in region %s; retry in %s", e.Model, scope, region, e.RetryAfter.Round(time.Millisecond))
}

// breaker wraps a gobreaker two-step breaker for one (model, region), or
// one configuration of it, and remembers when it opened, which gobreaker
// does not expose.
type breaker struct {
	model, region string
	cb            *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout       time.Duration
	openedAt      atomic.Int64 // Unix nanoseconds of the last transition to open
	// config: the breaker of one configuration (see atInit). spent says
	// that the configuration has already counted one failure against its
	// model's breaker since it last worked.
	config bool
	spent  atomic.Bool
}

// counted reports whether err counts against a breaker: only failures that
// say SLNG is unwell do (slngclient's Class().Unwell), and the deaths
// reportDeath reports. Caller cancellations, invalid configs, auth and
// rate limits are excluded, neither success nor failure.
func counted(err error) bool {
	var only errConfigOnly
	if errors.As(err, &only) {
		return false
	}
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
	return nil, &CircuitOpenError{Model: b.model, Region: b.region, Config: b.config, RetryAfter: max(left, 100*time.Millisecond)}
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

// breakers holds one breaker per (model, region), and one per
// configuration that SLNG ended sessions of at init, bounded: when full,
// the closed breakers are forgotten (they hold no state worth keeping).
type breakers struct {
	mu      sync.Mutex
	m       map[string]*breaker
	cm      map[poolKey]*breaker
	max     int
	opts    *Options
	log     *zap.Logger
	metrics *Metrics
}

// atInit reports a failure that may be the configuration's rather than
// the model's: SLNG ended a session in answer to its init (see
// slngclient.UpstreamError.AtInit), or soon after ready, before it was of
// use (early), with an error frame or a close. One caller's voice, language
// or encoding that the provider refuses must not open the breaker for
// every caller of the model.
func atInit(err error, early bool) bool {
	ue, ok := slngclient.AsUpstreamError(err)
	return ok && (ue.AtInit() || early && (ue.Kind == slngclient.KindErrorFrame || ue.Kind == slngclient.KindClose))
}

// errUndecided is what a configuration's breaker hears of a dial that got
// past init: neither success nor failure, since SLNG may still end the
// session right after ready; the session's end decides (configWorked, or
// outcome).
var errUndecided = errors.New("configuration not proven yet")

// configWorked records that a session of k's configuration served a
// stream to its end: its breaker, if it has one, closes, and its next
// failure at init counts against the model again.
func (bs *breakers) configWorked(k poolKey) {
	cb := bs.config(k, false)
	if cb == nil {
		return
	}
	cb.spent.Store(false)
	if done, err := cb.cb.Allow(); err == nil {
		done(nil)
	}
}

// errConfigOnly wraps a failure that counts against its configuration's
// breaker alone: the model's excludes it.
type errConfigOnly struct{ error }

func (e errConfigOnly) Unwrap() error { return e.error }

// config returns the breaker of k's configuration, nil if there is none
// and create is false.
func (bs *breakers) config(k poolKey, create bool) *breaker {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b := bs.cm[k]; b != nil || !create {
		return b
	}
	if bs.cm == nil {
		bs.cm = map[poolKey]*breaker{}
	}
	if len(bs.cm) >= bs.max {
		for key, b := range bs.cm {
			if b.cb.State() == gobreaker.StateClosed {
				delete(bs.cm, key)
			}
		}
	}
	b := bs.newBreaker(k.model, k.region, true, func(err error) bool { return errors.Is(err, errUndecided) },
		func(from, to gobreaker.State) {
			bs.log.Info("slng circuit breaker of one configuration changed state",
				zap.String("kind", k.kind), zap.String("model", k.model), zap.String("region", k.region),
				zap.Stringer("from", from), zap.Stringer("to", to))
		})
	bs.cm[k] = b
	return b
}

// outcome records how a session of k ended or failed to open (nil: it
// worked) on the breakers: a failure at init (see atInit) on k's
// configuration's breaker, and on the model's only the first time since
// the configuration last worked, so that a refused voice counts there
// once however often its caller retries, while several configurations
// failing in a row still open it. done is the model breaker's two-step
// callback, nil to report on br itself.
func (bs *breakers) outcome(k poolKey, br *breaker, done func(error), err error, early bool) {
	if done == nil {
		done = br.report
	}
	if err == nil || !atInit(err, early) || !early && !counted(err) {
		done(err) // a refusal at init is the caller's: no breaker counts it
		return
	}
	cb := bs.config(k, true)
	if early {
		cb.reportDeath(err)
	} else {
		cb.report(err)
	}
	if cb.spent.Swap(true) {
		err = errConfigOnly{err}
	} else if early {
		err = fmt.Errorf("%w: %w", errDied, err)
	}
	done(err)
}

// newBreaker is a breaker of model in region (of one configuration of it
// when config) that opens after BreakerFailures failures in a row not
// excluded, and reports each change to changed.
func (bs *breakers) newBreaker(model, region string, config bool, excluded func(error) bool, changed func(from, to gobreaker.State)) *breaker {
	b := &breaker{model: model, region: region, timeout: bs.opts.BreakerOpenTimeout, config: config}
	failures := uint32(bs.opts.BreakerFailures)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        model,
		MaxRequests: 1,
		Timeout:     bs.opts.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  excluded,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.openedAt.Store(time.Now().UnixNano())
			}
			changed(from, to)
		},
	})
	return b
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
	b := bs.newBreaker(model, region, false, func(err error) bool { return err != nil && !counted(err) },
		func(from, to gobreaker.State) {
			bs.log.Warn("slng circuit breaker changed state",
				zap.String("model", model), zap.String("region", region),
				zap.Stringer("from", from), zap.Stringer("to", to))
			bs.metrics.breakerState(model, region, to)
		})
	bs.m[k] = b
	bs.metrics.breakerState(model, region, gobreaker.StateClosed)
	return b
}

// allowConfig asks the breaker of k's configuration, if SLNG ended
// sessions of it at init, for a dial; a *CircuitOpenError while it is
// open. The returned func takes the dial's outcome to a half-open
// breaker's probe; outcome records everything else.
func (p *Pool) allowConfig(k poolKey) (func(error), error) {
	cb := p.br.config(k, false)
	if cb == nil || cb.cb.State() == gobreaker.StateClosed {
		return func(error) {}, nil
	}
	done, err := cb.allow()
	if err != nil {
		return nil, err
	}
	return func(err error) {
		if err != nil && atInit(err, false) {
			done(err)
			return
		}
		done(errUndecided)
	}, nil
}
