package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/fleet"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// setupFleet connects the replicas' shared limits (Redis with --redis-url,
// else per process) and the callers' gate on top of them. The caller
// closes both, the gate first.
func setupFleet(ctx context.Context, cfg *config, log *zap.Logger, reg prom.Registerer) (*fleet.Fleet, *callers.Gate, error) {
	opts := cfg.fleet.opts
	opts.Logger, opts.Metrics = log, fleet.NewMetrics(reg)
	var f *fleet.Fleet
	if cfg.fleet.redis.URL == "" {
		f = fleet.New(opts)
	} else {
		redisLog.Do(func() { redis.SetLogger(redisLogger{log.Named("redis")}) })
		var err error
		if f, err = fleet.Connect(ctx, cfg.fleet.redis, opts); err != nil {
			return nil, nil, err
		}
	}
	co := cfg.callers
	co.Logger, co.Metrics = log, callers.NewMetrics(reg)
	gate, err := callers.New(f, co)
	if errors.Is(err, callers.ErrAssertedIdentity) {
		err = fmt.Errorf("%w: any caller could claim any id; behind a mesh use its identity (--caller-identity xfcc:By=..., or l5d), "+
			"or accept it with --trust-asserted-caller-identity (docs/operations.md, \"Caller identity\")", err)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, gate, nil
}

// redisLog sets, once per process, where go-redis logs: the client's own
// lines (a dropped connection, a retry) would otherwise go to stderr
// unstructured, between the gateway's JSON lines. go-redis keeps its
// logger in a package variable, hence once, for the first gateway.
var redisLog sync.Once

// redisLogger hands go-redis's lines to zap at warn level.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// poolBudget is the pool's session budget per SLNG key, n sessions: nil
// (none) for n negative or 0.
func poolBudget(f *fleet.Fleet, n int) slngpool.Budget {
	if n <= 0 {
		return nil // never a typed nil in the interface
	}
	return f.Budget(n)
}
