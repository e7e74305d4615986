package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// watchAllocs counts the gateway's allocations per chunk in the middle
// third of a wave, when every stream is speaking and none is starting or
// ending, until the returned func is called (0 if the wave was too short
// to tell). Reading /metrics allocates too: a second read right after the
// first measures that, and it is taken off.
func watchAllocs(gw *proc, r *ttsResult, wave time.Duration) func() float64 {
	res := make(chan float64, 1)
	stop := make(chan struct{})
	go func() {
		var m [3]float64
		var b [2]float64
		t := time.NewTimer(wave / 3)
		defer t.Stop()
		for i := range 3 {
			if i != 1 {
				if i == 2 {
					t.Reset(wave / 3) // a third from now, after the reads
				}
				select {
				case <-t.C:
				case <-stop:
					res <- 0
					return
				}
			}
			u, err := gw.usage()
			if err != nil {
				res <- 0
				return
			}
			m[i] = u.mallocs
			if i != 1 {
				b[i/2] = float64(r.bytes.Load())
			}
		}
		scrape := m[1] - m[0]
		const chunk = 960 // 20 ms of 24 kHz LINEAR16
		if chunks := (b[1] - b[0]) / chunk; chunks > 0 {
			res <- max(m[2]-m[0]-2*scrape, 0) / chunks
			return
		}
		res <- 0
	}()
	return func() float64 {
		close(stop)
		return <-res
	}
}

// watchRSS samples p's RSS every 100 ms until the returned func is called,
// which returns the peak.
func watchRSS(p *proc) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if u, err := p.osUsage(); err == nil && u.rss > peak {
				peak = u.rss
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// profile takes a CPU profile and an allocation profile of gw during the
// first wave of a part, when profiling is on; the returned func waits for
// both.
func (b *bench) profile(ctx context.Context, gw *proc, wave int, part string) func() {
	if b.o.profileDir == "" || wave != 0 {
		return func() {}
	}
	d := max(b.o.wave-time.Second, time.Second)
	var wg sync.WaitGroup
	for kind, file := range map[string]string{"profile": part + "-cpu.pprof", "allocs": part + "-allocs.pprof"} {
		wg.Go(func() {
			if err := gw.profile(ctx, kind, d, filepath.Join(b.o.profileDir, file)); err != nil {
				fmt.Fprintln(os.Stderr, "speechbench:", err)
			}
		})
	}
	return wg.Wait
}
