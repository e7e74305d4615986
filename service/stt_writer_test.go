package service

import (
	"bytes"
	"testing"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// TestCoalesceQueuedAudio: audio chunks already queued behind the one the
// writer took go up as one frame of at most 100 ms, in order; the first
// command that cannot join (a finalize, audio for another session, or
// audio past the limit) is handed back to be handled next; compressed
// audio and an empty queue are sent as they are.
func TestCoalesceQueuedAudio(t *testing.T) {
	t.Parallel()
	pcm := clockOf(&speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16, SampleRateHz: 16000})
	chunk := func(b byte) []byte { return bytes.Repeat([]byte{b}, 640) } // 20 ms
	sess, other := newFakeSTT("one"), newFakeSTT("two")
	audio := func(b byte) sttCmd { return sttCmd{kind: sttAudio, sess: sess, audio: chunk(b)} }
	w := newSTTWriter(&sttCore{clock: pcm})

	// Nothing queued: the chunk is sent as it is.
	joined, _, held := w.coalesce(audio(1))
	if len(joined) != 0 || held {
		t.Fatalf("empty queue: joined %d bytes, held %v", len(joined), held)
	}

	// Two queued chunks, then a finalize: one frame of three chunks, and
	// the finalize comes back.
	w.cmds.put(audio(2))
	w.cmds.put(audio(3))
	w.cmds.put(sttCmd{kind: sttFinalize, sess: sess})
	joined, next, held := w.coalesce(audio(1))
	if want := append(append(chunk(1), chunk(2)...), chunk(3)...); !bytes.Equal(joined, want) {
		t.Fatalf("joined %d bytes, want the three chunks in order", len(joined))
	}
	if !held || next.kind != sttFinalize {
		t.Fatalf("held %v %v, want the finalize", held, next.kind)
	}

	// Seven queued chunks: the one taken and four more fill 100 ms (3200
	// bytes), the fifth is handed back, the last two stay queued.
	for i := range 7 {
		w.cmds.put(audio(byte(10 + i)))
	}
	joined, next, held = w.coalesce(audio(9))
	if len(joined) != 3200 || joined[0] != 9 || joined[3199] != 13 {
		t.Fatalf("joined %d bytes (%d..%d), want 3200 (9..13)", len(joined), joined[0], joined[len(joined)-1])
	}
	if !held || next.kind != sttAudio || next.audio[0] != 14 || w.cmds.len() != 2 {
		t.Fatalf("held %v (kind %v), %d queued; want chunk 14 held and two queued", held, next.kind, w.cmds.len())
	}
	w.cmds.tryTake()
	w.cmds.tryTake()

	// Audio for another session is not joined.
	w.cmds.put(sttCmd{kind: sttAudio, sess: other, audio: chunk(2)})
	if joined, next, held = w.coalesce(audio(1)); len(joined) != 0 || !held || next.sess != other {
		t.Fatalf("another session's audio: joined %d bytes, held %v", len(joined), held)
	}

	// Compressed audio is never joined.
	w.c.clock = pcmClock{}
	w.cmds.put(audio(2))
	if joined, _, held = w.coalesce(audio(1)); len(joined) != 0 || held || w.cmds.len() != 1 {
		t.Fatalf("compressed: joined %d bytes, held %v, %d queued", len(joined), held, w.cmds.len())
	}
}
