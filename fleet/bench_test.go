package fleet

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/redistest"
)

// BenchmarkStreamStart is what the shared limits cost a stream that dials:
// a caller's stream lease and the session budget, taken and given back,
// against a real Redis on loopback. It reports the 50th and 99th
// percentiles of taking both, the part on a stream's start.
//
//	go test -run '^$' -bench BenchmarkStreamStart ./fleet/
func BenchmarkStreamStart(b *testing.B) {
	srv := redistest.Start(b)
	f, err := Connect(b.Context(), Redis{URL: srv.URL()}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	streams, budget := f.Semaphore("caller_streams"), f.Budget(1<<20)
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		l, err := streams.Acquire(b.Context(), "bench", 1<<20, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := budget.Acquire(b.Context(), "cred", 0); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		budget.Release("cred")
		l.Release()
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkHeartbeatWithManyCallers is one heartbeat flushing the counts of
// 65536 callers (the most a Counter tracks) to a real Redis on loopback, in
// round trips of maxBatch; it reports the mean round trip of the slowest
// heartbeat, which the default OpTimeout (250 ms) must cover for the
// replica to stay shared.
//
//	go test -run '^$' -bench BenchmarkHeartbeatWithManyCallers ./fleet/
func BenchmarkHeartbeatWithManyCallers(b *testing.B) {
	srv := redistest.Start(b)
	f, err := Connect(b.Context(), Redis{URL: srv.URL()}, Options{OpTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c := f.Counter("characters", time.Hour)
	trips := (maxCounterEntries + maxBatch - 1) / maxBatch
	var slowest time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range maxCounterEntries {
			c.Add("caller-"+strconv.Itoa(i), 1)
		}
		b.StartTimer()
		start := time.Now()
		if err := f.heartbeat(b.Context()); err != nil {
			b.Fatal(err)
		}
		slowest = max(slowest, time.Since(start)/time.Duration(trips))
	}
	b.ReportMetric(float64(slowest.Microseconds())/1000, "ms/round-trip")
}
