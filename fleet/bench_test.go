package fleet

import (
	"slices"
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
