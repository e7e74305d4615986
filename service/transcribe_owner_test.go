package service

import (
	"bytes"
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// TestCoalesceQueuedAudio: audio chunks already queued behind the one the
// owner took go up as one frame of at most 100 ms, in order; the first
// request that cannot join (a finalize, or audio past the limit) is handed
// back to be handled next; compressed audio and an empty queue are sent as
// they are.
func TestCoalesceQueuedAudio(t *testing.T) {
	t.Parallel()
	pcm := clockOf(&speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000})
	chunk := func(b byte) []byte { return bytes.Repeat([]byte{b}, 640) } // 20 ms
	tr := &transcription{clock: pcm, ops: make(chan sttOp, sttOpQueue)}

	// Nothing queued: the chunk is sent as it is.
	joined, _, held := tr.coalesce(nil, chunk(1))
	if len(joined) != 0 || held {
		t.Fatalf("empty queue: joined %d bytes, held %v", len(joined), held)
	}

	// Two queued chunks, then a finalize: one frame of three chunks, and
	// the finalize comes back.
	tr.ops <- sttOp{kind: opAudio, audio: chunk(2)}
	tr.ops <- sttOp{kind: opAudio, audio: chunk(3)}
	tr.ops <- sttOp{kind: opFinalize}
	joined, next, held := tr.coalesce(nil, chunk(1))
	if want := append(append(chunk(1), chunk(2)...), chunk(3)...); !bytes.Equal(joined, want) {
		t.Fatalf("joined %d bytes, want the three chunks in order", len(joined))
	}
	if !held || next.kind != opFinalize {
		t.Fatalf("held %v %v, want the finalize", held, next.kind)
	}

	// Seven queued chunks: the one taken and four more fill 100 ms (3200
	// bytes), the fifth is handed back, the last two stay queued.
	for i := range 7 {
		tr.ops <- sttOp{kind: opAudio, audio: chunk(byte(10 + i))}
	}
	joined, next, held = tr.coalesce(joined[:0], chunk(9))
	if len(joined) != 3200 || joined[0] != 9 || joined[3199] != 13 {
		t.Fatalf("joined %d bytes (%d..%d), want 3200 (9..13)", len(joined), joined[0], joined[len(joined)-1])
	}
	if !held || next.kind != opAudio || next.audio[0] != 14 || len(tr.ops) != 2 {
		t.Fatalf("held %v (kind %v), %d queued; want chunk 14 held and two queued", held, next.kind, len(tr.ops))
	}
	<-tr.ops
	<-tr.ops

	// Compressed audio is never joined.
	tr.clock = pcmClock{}
	tr.ops <- sttOp{kind: opAudio, audio: chunk(2)}
	if joined, _, held = tr.coalesce(nil, chunk(1)); len(joined) != 0 || held || len(tr.ops) != 1 {
		t.Fatalf("compressed: joined %d bytes, held %v, %d queued", len(joined), held, len(tr.ops))
	}
}
