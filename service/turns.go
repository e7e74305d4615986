package service

import (
	"errors"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// turn tracks one turn: text up to a flush and the audio that answers it.
type turn struct {
	id         uint64
	text       strings.Builder // kept to replay the turn on a new session
	flushed    bool
	flushedAt  time.Time
	firstAudio bool
	// failed is set on an open turn that failed before its flush: the rest
	// of its text is dropped until the caller flushes it.
	failed bool
	// retried is set when an error frame already sent the turn to a new
	// session once: a second one fails it, as the text itself is likely
	// what the route refuses.
	retried bool
	bytes   uint64
	lastSeq uint64
	// The open turn on a route that speaks each text before the flush
	// (slngclient.TTSTextSpoken): pieces are where the text messages sent
	// on the current session end (offsets in text), spokenPieces how many
	// of them the route has finished, spoken where the text spoken so far
	// ends, and spokenBytes the turn's audio then. A new session hears
	// only what follows spoken; audio past spokenBytes is a piece cut.
	pieces       []int
	spokenPieces int
	spoken       int
	spokenBytes  uint64
	tm           turnTimings // timings.go
}

type clearReq struct {
	cancel    bool // a Cancel (already acknowledged) rather than a Clear
	turnID    uint64
	delivered *speechv1.TurnDelivery
	at        time.Time // when it was sent upstream
}

// synthOut is one response for the caller. Audio is kept apart, as the
// event's own bytes (valid until the next upstream event), so that the
// stream copies it once into a buffer of its own.
type synthOut struct {
	resp *speechv1.SynthesizeResponse // nil for audio
	// audio, seq and turn make an AudioChunk.
	audio     []byte
	seq, turn uint64
}

// maxChunk bounds the audio of one AudioChunk: a larger frame from SLNG is
// split, so that no response approaches the caller's message size limit
// (grpc-go's default is 4 MiB, the same as the largest frame read).
const maxChunk = 256 << 10

// turnResult reports what an upstream event did, beyond the responses.
type turnResult struct {
	// ended is a turn that the event completed.
	ended *turn
	// failed is a turn that an error frame ended.
	failed *turn
	// replace is set when an error frame arrived during a turn: the
	// session must be replaced, since the same socket keeps answering with
	// the same error. Without failed, the turn had no audio yet and the
	// error may pass: the turn is spoken again on the new session.
	replace bool
	// firstAudio is a turn whose first audio the event carried.
	firstAudio *turn
	// audio is the number of audio bytes relayed.
	audio int
	// warning is set when the event was an upstream error frame.
	warning bool
	// violation names how the route broke its own protocol, "" if it did
	// not: audio_outside_turn, end_outside_turn.
	violation string
}

// turnBook is the bookkeeping of one Synthesize stream's turns: text
// queued, flushed, audio delivered, ended, cleared, failed. It does no I/O
// and holds no lock: fed what the caller and the upstream did, it returns
// the responses to send, in order. Its stream's loop alone calls it. The
// upstream session has already made the route's ways of ending a turn
// into one TTSTurnEnd per flushed turn (slngclient's turn account).
//
// Invariants: every flushed turn ends exactly once, with `flushed` and
// `audio_end`, `turn_failed`, or the acknowledgement of a clear or cancel
// that discarded it; no audio of a turn follows its end; sequence numbers
// rise by one per chunk across the stream.
type turnBook struct {
	clock  pcmClock
	lastID uint64
	seq    uint64 // last AudioChunk.sequence sent
	// open is the turn receiving text, not yet flushed.
	open *turn
	// pending are flushed turns not yet ended, oldest first; pending[0]
	// is the one being spoken.
	pending []*turn
	// clears are Clear/Cancel requests sent upstream whose `cleared` has
	// not arrived; until it does, everything SLNG sends belongs to
	// discarded turns and is dropped.
	clears []clearReq
	// held is a segment_start not yet sent: it goes out with the segment's
	// first audio or its end, so that a turn replayed on a new session does
	// not show the caller a segment that never spoke.
	held *speechv1.SynthesizeResponse
	// strayWarned is set once the caller has been warned of audio outside
	// any turn, until a turn makes progress again: one warning per burst.
	strayWarned bool
	tm          streamTimings // timings.go

	out []synthOut
}

func newTurnBook(clock pcmClock) *turnBook {
	return &turnBook{clock: clock}
}

// emit adds a response to out.
func (b *turnBook) emit(r *speechv1.SynthesizeResponse) { b.out = append(b.out, synthOut{resp: r}) }

// errTurnTooLong rejects text beyond maxTurnText in one turn.
var errTurnTooLong = errors.New("turn text too long")

// addText appends text to the open turn, opening one if needed. send is
// false when the text belongs to a turn that already failed, and must not
// go upstream.
func (b *turnBook) addText(text string, limit int) (send bool, err error) {
	if b.open == nil {
		b.lastID++
		b.open = &turn{id: b.lastID}
	}
	if b.open.failed {
		return false, nil
	}
	if b.open.text.Len()+len(text) > limit {
		return false, errTurnTooLong
	}
	b.open.text.WriteString(text)
	return true, nil
}

// flush ends the open turn's text and queues it to be spoken. It returns
// nil when there is nothing to send upstream: no open turn, or one that
// already failed.
func (b *turnBook) flush(now time.Time) *turn {
	t := b.open
	if t == nil {
		return nil
	}
	b.open = nil
	if t.failed {
		return nil
	}
	t.flushed, t.flushedAt = true, now
	b.pending = append(b.pending, t)
	return t
}

// inProgress is the turn being spoken or, failing that, the one receiving
// text; nil when there is neither.
func (b *turnBook) inProgress() *turn {
	if len(b.pending) > 0 {
		return b.pending[0]
	}
	if b.open != nil && !b.open.failed && b.open.text.Len() > 0 {
		return b.open
	}
	return nil
}

// idle reports that no turn awaits audio and no clear awaits `cleared`.
func (b *turnBook) idle() bool {
	return len(b.pending) == 0 && len(b.clears) == 0
}

// openText reports whether the open turn holds text not yet spoken.
func (b *turnBook) openText() bool {
	return b.open != nil && !b.open.failed && b.open.text.Len() > b.open.spoken
}

// sentPiece records that the open turn's text up to end went upstream as
// one text message.
func (b *turnBook) sentPiece(end int) {
	if t := b.open; t != nil && !t.failed {
		t.pieces = append(t.pieces, end)
	}
}

// clearDue is when the oldest clear not yet acknowledged was sent, zero
// when there is none.
func (b *turnBook) clearDue() time.Time {
	if len(b.clears) == 0 {
		return time.Time{}
	}
	return b.clears[0].at
}

// cutTurns ends with turn_failed the turns whose audio a lost session cut:
// the one being spoken, if any of its audio came, and the open turn, if
// audio of text not known to be spoken came. Turns behind them go on.
func (b *turnBook) cutTurns(cause error) ([]synthOut, []*turn) {
	b.out = b.out[:0]
	var cut []*turn
	if len(b.pending) > 0 && b.pending[0].bytes > 0 {
		cut = append(cut, b.pending[0])
	}
	if t := b.open; t != nil && !t.failed && t.bytes > t.spokenBytes {
		cut = append(cut, t)
	}
	for _, t := range cut {
		b.fail(t, cause)
	}
	return b.out, cut
}

// clear discards the open turn and every pending one. With the upstream
// session open, a Clear is acknowledged when `cleared` arrives (SLNG sends
// it after the last frame of the discarded turns); a Cancel, or any clear
// with no session to clear, is acknowledged now.
func (b *turnBook) clear(cancel, upstreamOpen bool, now time.Time) []synthOut {
	b.out = b.out[:0]
	req := clearReq{cancel: cancel, delivered: &speechv1.TurnDelivery{}, at: now}
	if cur := b.inProgress(); cur != nil {
		req.turnID = cur.id
		req.delivered = b.cutDelivery(cur)
	}
	b.pending = nil
	b.open = nil
	b.held = nil
	if upstreamOpen {
		b.clears = append(b.clears, req)
	}
	if cancel || !upstreamOpen {
		b.emit(ackFor(req))
	}
	return b.out
}

// event feeds one upstream event and returns the responses it makes.
func (b *turnBook) event(ev slngclient.TTSEvent) ([]synthOut, turnResult) {
	b.out = b.out[:0]
	var res turnResult
	switch ev.Kind {
	case slngclient.TTSWarning:
		res.warning = true
		reap := announcesReap(ev.Err)
		if reap {
			// SLNG is about to close the session (idle or too old): it
			// ends no turn of the caller's by itself, but the session must
			// not take another.
			res.replace = true
		}
		if t := b.inProgress(); t != nil && len(b.clears) == 0 {
			res.replace = true
			if ev.Err == nil || !ev.Err.Class().Retryable || t.bytes > 0 || t.retried {
				// SLNG answered the turn with an error and will not
				// finish it (e.g. text with no letters, text too long,
				// an unknown pronunciation dictionary), failed it after
				// some of its audio, which a retry would repeat, or
				// failed it again on a new session.
				res.failed = t
				return b.fail(t, ev.Err), res
			}
			t.retried = true
		}
		if !reap {
			b.emit(warningResponse(ev.Err))
		}
		return b.out, res
	case slngclient.TTSCleared:
		if len(b.clears) == 0 {
			return b.out, res // not ours to acknowledge
		}
		req := b.clears[0]
		b.clears = b.clears[1:]
		if !req.cancel {
			b.emit(ackFor(req))
		}
		return b.out, res
	}
	if len(b.clears) > 0 {
		return b.out, res // a frame of a discarded turn
	}
	t := b.inProgress()
	switch ev.Kind {
	case slngclient.TTSUndecodableAudio:
		// Audio SLNG sent that is not base64 in any form: the caller
		// misses it and is told so; the turn goes on.
		res.violation = "undecodable_audio"
		b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{
			Warning: &speechv1.Warning{Code: "undecodable_audio", Message: "the upstream sent audio that could not be decoded; it is missing from the stream"}}})
	case slngclient.TTSAudio:
		if len(ev.Audio) == 0 {
			return b.out, res
		}
		if t == nil {
			// Audio after its turn ended, or before any text: a route
			// breaking its own protocol. Dropped, with one warning.
			res.violation = "audio_outside_turn"
			if !b.strayWarned {
				b.strayWarned = true
				b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Warning{
					Warning: &speechv1.Warning{Code: "upstream_protocol", Message: "the upstream sent audio outside any turn; it was dropped"}}})
			}
			return b.out, res
		}
		b.strayWarned = false
		if !t.firstAudio {
			t.firstAudio = true
			res.firstAudio = t
		}
		res.audio = len(ev.Audio)
		b.releaseHeld()
		first := b.seq + 1
		for audio := ev.Audio; len(audio) > 0; {
			n := min(len(audio), maxChunk)
			if n < len(audio) && b.clock.ok() {
				n -= n % int(b.clock.frame) // whole samples in every chunk
			}
			b.seq++
			t.bytes += uint64(n)
			t.lastSeq = b.seq
			b.out = append(b.out, synthOut{audio: audio[:n], seq: b.seq, turn: t.id})
			audio = audio[n:]
		}
		t.tm.noteAudio(t.bytes-uint64(res.audio), first, b.seq)
	case slngclient.TTSAlignment:
		b.timings(t, ev.Alignment)
	case slngclient.TTSSegmentStart:
		if t != nil {
			b.held = &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_SegmentStart{
				SegmentStart: &speechv1.SegmentStart{SegmentId: ev.SegmentID, TurnId: t.id}}}
		}
	case slngclient.TTSSegmentEnd:
		if t != nil {
			b.releaseHeld()
			b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_SegmentEnd{
				SegmentEnd: &speechv1.SegmentEnd{SegmentId: ev.SegmentID, TurnId: t.id}}})
		}
	case slngclient.TTSTextSpoken:
		// The route spoke the text it had before the caller's flush: the
		// turn goes on, and only the caller's flush ends it.
		if o := b.open; o != nil && !o.failed && len(o.pieces) > 0 {
			o.spokenPieces++
			o.spoken = o.pieces[min(o.spokenPieces, len(o.pieces))-1]
			o.spokenBytes = o.bytes
		}
	case slngclient.TTSTurnEnd:
		if ev.Unflushed || t == nil || !t.flushed {
			// An end when no turn was in flight: the route broke its own
			// protocol. No turn ends before the caller's flush.
			res.violation = "end_outside_turn"
			return b.out, res
		}
		b.lastWord(t)
		b.end(t, ev.Duration)
		res.ended = t
	}
	return b.out, res
}

// upstreamClosed records the end of the upstream session: a closed socket
// acknowledges no clears, so they are acknowledged here.
func (b *turnBook) upstreamClosed() []synthOut {
	b.out = b.out[:0]
	for _, req := range b.clears {
		if !req.cancel {
			b.emit(ackFor(req))
		}
	}
	b.clears = nil
	b.held = nil // its segment never spoke
	return b.out
}

// failInProgress ends the turn in progress with turn_failed, if there is
// one.
func (b *turnBook) failInProgress(cause error) ([]synthOut, *turn) {
	b.out = b.out[:0]
	t := b.inProgress()
	if t == nil {
		return b.out, nil
	}
	return b.fail(t, cause), t
}

// fail ends t with turn_failed; b.out collects the response.
func (b *turnBook) fail(t *turn, cause error) []synthOut {
	row := turnOutcome(cause)
	tf := &speechv1.TurnFailed{
		TurnId:    t.id,
		Code:      int32(row.code),
		Reason:    row.reason,
		Message:   row.message,
		Delivered: b.cutDelivery(t),
	}
	if ue, ok := slngclient.AsUpstreamError(cause); ok {
		tf.UpstreamCode = truncate(ue.Code, 64)
	}
	if t == b.open {
		// The rest of its text, up to the caller's flush, is dropped.
		t.failed = true
	} else {
		b.remove(t)
	}
	b.held = nil
	b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_TurnFailed{TurnFailed: tf}})
	return b.out
}

// end completes t: the caller always sees `flushed` then `audio_end`,
// whichever of them the route sent.
func (b *turnBook) end(t *turn, reported time.Duration) {
	b.releaseHeld()
	b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Flushed{Flushed: &speechv1.Flushed{TurnId: t.id}}})
	b.emit(&speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_AudioEnd{AudioEnd: &speechv1.AudioEnd{
		TurnId: t.id, Duration: durationOrNil(reported), Delivered: b.delivery(t)}}})
	b.remove(t)
}

// remove takes t out of the pending or open turn.
func (b *turnBook) remove(t *turn) {
	if len(b.pending) > 0 && b.pending[0] == t {
		b.pending[0] = nil
		b.pending = b.pending[1:]
		return
	}
	if b.open == t {
		// The model ended (or failed) a turn the caller had not flushed.
		b.open = nil
	}
}

func (b *turnBook) releaseHeld() {
	if b.held != nil {
		b.emit(b.held)
		b.held = nil
	}
}

func (b *turnBook) delivery(t *turn) *speechv1.TurnDelivery {
	d := &speechv1.TurnDelivery{AudioBytes: t.bytes, LastSequence: t.lastSeq}
	if b.clock.ok() {
		d.AudioDuration = durationpb.New(b.clock.duration(int64(t.bytes)))
	}
	return d
}

// queued returns the texts to replay on a new session: every flushed turn
// not yet ended, then the open turn's text not yet spoken, but for the
// last held bytes, which wait for a neighbour (see synthCore.held). The
// open turn's pieces start again from there.
func (b *turnBook) queued(held int) (flushed []string, open string) {
	for _, t := range b.pending {
		flushed = append(flushed, t.text.String())
	}
	if t := b.open; t != nil && !t.failed {
		end := t.text.Len() - held
		t.pieces, t.spokenPieces = t.pieces[:0], 0
		if end > t.spoken {
			open = t.text.String()[t.spoken:end]
			t.pieces = append(t.pieces, end)
		}
	}
	return flushed, open
}

func ackFor(req clearReq) *speechv1.SynthesizeResponse {
	if req.cancel {
		return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cancelled{
			Cancelled: &speechv1.Cancelled{TurnId: req.turnID, Delivered: req.delivered}}}
	}
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Cleared{
		Cleared: &speechv1.Cleared{TurnId: req.turnID, Delivered: req.delivered}}}
}

// announcesReap reports an error frame that SLNG sends before it reaps a
// session (slng-protocol.md section 6): the close follows.
func announcesReap(ue *slngclient.UpstreamError) bool {
	return ue != nil && ue.Kind == slngclient.KindErrorFrame && ue.Class().Category == slngclient.CategoryExpired
}
