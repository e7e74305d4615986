package service

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestReplayBufferModel drives a replay buffer with random audio and trims
// and checks it against the whole stream: it always holds the stream from
// its start to its end, at most max bytes, and a trim at or after its start
// moves the start there.
func TestReplayBufferModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, max := range []int{0, 1000, 64 << 10} {
		r := &replayBuffer{max: max}
		var stream []byte
		for i := range 5000 {
			if rng.IntN(10) < 8 {
				b := make([]byte, 1+rng.IntN(700))
				for j := range b {
					b[j] = byte(i + j)
				}
				r.add(b)
				stream = append(stream, b...)
			} else {
				before := r.start
				off := rng.Int64N(int64(len(stream)) + 1)
				r.trim(off)
				switch {
				case off >= before && (r.start != off || r.overflow):
					t.Fatalf("max %d step %d: trim(%d) left start %d, overflow %v", max, i, off, r.start, r.overflow)
				case off < before && r.start != before:
					t.Fatalf("max %d step %d: trim(%d) before the start %d moved it to %d", max, i, off, before, r.start)
				}
			}
			if r.end != int64(len(stream)) || !bytes.Equal(r.buf, stream[r.start:]) {
				t.Fatalf("max %d step %d: the buffer does not hold the stream's [%d, %d)", max, i, r.start, r.end)
			}
			if len(r.buf) > max {
				t.Fatalf("max %d: buffer holds %d bytes", max, len(r.buf))
			}
		}
	}
}

// TestReplayBufferSteadyStateAllocatesNothing: 20 ms chunks with a final
// every 50 of them reuse one array.
func TestReplayBufferSteadyStateAllocatesNothing(t *testing.T) {
	r := &replayBuffer{max: 2 << 20}
	chunk := make([]byte, 640)
	cycle := func() {
		for range 50 {
			r.add(chunk)
		}
		r.trim(r.end - 10*640) // the final covers all but the last 200 ms
	}
	cycle()
	cycle()
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Fatalf("%v allocations per utterance", n)
	}
}
