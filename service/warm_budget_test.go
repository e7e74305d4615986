package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestStreamDialBudget (in a file late in the alphabet, so that go test
// starts it first among the parallel tests): through the whole gateway
// with the pool's default options, for each way the simulator can turn
// sessions away, one SynthesizeText and one Transcribe stream, then 30 s of
// silence. SLNG must see at most 5 sessions of each configuration in the
// first 5 s and 15 in the 30 s, the streams' own reconnects included, and
// a later stream must still end quickly with audio, a transcript or a
// clear status. Every fault runs at once; with -v it prints the figures.
func TestStreamDialBudget(t *testing.T) {
	t.Parallel()
	type scenario struct {
		name string
		sim  slngsim.Options
		h    *harness
		n    *kindCounter
	}
	scenarios := []*scenario{
		{name: "rate_limit after ready", sim: slngsim.Options{Faults: slngsim.MustFaults("*=error:rate_limit@ready,fatal")}},
		{name: "auth_error answering init", sim: slngsim.Options{Faults: slngsim.MustFaults("*=error:auth_error@init,fatal,close=1008")}},
		{name: "http 429", sim: slngsim.Options{Faults: slngsim.MustFaults("*=handshake:429")}},
		{name: "http 503", sim: slngsim.Options{Faults: slngsim.MustFaults("*=handshake:503")}},
		{name: "drop after ready", sim: slngsim.Options{Faults: slngsim.MustFaults("*=drop@ready")}},
		{name: "idle drop after init", sim: slngsim.Options{TTSTextTimeout: 5 * time.Second}},
	}
	for _, sc := range scenarios {
		sc.n = &kindCounter{n: map[string]int{}}
		faults := sc.sim.Faults
		sc.sim.Faults = nil
		sc.sim.Script = func(ci slngsim.ConnInfo) slngsim.Fault {
			sc.n.add(ci.Kind)
			return faults["*"]
		}
		sc.h = newPooledHarness(t, sc.sim, Config{FinalsTimeout: 3 * time.Second}, slngpool.Options{})
	}

	var mu sync.Mutex
	var report []string
	var wg sync.WaitGroup
	for _, sc := range scenarios {
		wg.Go(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			first := sc.h.budgetStreams(t, ctx)
			at := func(d time.Duration) map[string]int {
				t := time.NewTimer(time.Until(start.Add(d)))
				defer t.Stop()
				<-t.C
				return sc.n.snapshot()
			}
			in5, in30 := at(5*time.Second), at(30*time.Second)
			lstart := time.Now()
			later := sc.h.budgetStreams(t, ctx)
			took := time.Since(lstart)
			mu.Lock()
			report = append(report, fmt.Sprintf("%-26s sessions tts/stt in 5 s: %d/%d, in 30 s: %d/%d; first streams: %s; later streams: %s in %s",
				sc.name, in5["tts"], in5["stt"], in30["tts"], in30["stt"], first, later, took.Round(time.Millisecond)))
			mu.Unlock()
			for _, kind := range []string{"tts", "stt"} {
				if in5[kind] > 5 || in30[kind] > 15 {
					t.Errorf("%s: SLNG saw %d %s sessions in 5 s and %d in 30 s, want at most 5 and 15", sc.name, in5[kind], kind, in30[kind])
				}
			}
			for _, o := range strings.Split(later, ", ") {
				// Clear: OK, or a status with its ErrorInfo reason.
				if !strings.HasSuffix(o, " OK") && (strings.HasSuffix(o, "/") || strings.Contains(o, "UNKNOWN") || !strings.Contains(o, "/")) {
					t.Errorf("%s: a later stream ended with %s, not a clear status", sc.name, o)
				}
			}
			if took > 5*time.Second {
				t.Errorf("%s: the later streams took %s", sc.name, took)
			}
		})
	}
	wg.Wait()
	t.Log("FIGURES one stream of each RPC, then 30 s of silence:\n  " + strings.Join(report, "\n  "))
}

// budgetStreams runs one SynthesizeText and one Transcribe stream at once
// and names how each ended, as "tts OK, stt Unavailable/...". It may run in
// a goroutine of the test.
func (h *harness) budgetStreams(t *testing.T, ctx context.Context) string {
	var tts, stt string
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "One stream."})
		if err == nil {
			_, err = recvAll(t, stream.Recv)
		}
		tts = outcomeOf(err)
	})
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		audio := slngsim.Synthesize("One stream.", "linear16", 16000)
		_, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, audio, 3200)
		stt = outcomeOf(err)
	})
	wg.Wait()
	return "tts " + tts + ", stt " + stt
}

// kindCounter counts the simulator's connections by kind.
type kindCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *kindCounter) add(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind]++
}

func (c *kindCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return map[string]int{"tts": c.n["tts"], "stt": c.n["stt"]}
}
