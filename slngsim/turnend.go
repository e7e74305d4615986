package slngsim

import (
	"encoding/base64"
	"encoding/json"

	"github.com/coder/websocket"
)

// How a simulated TTS turn ends, and how a clear is answered, in the
// session's profile.

// answerClear answers a `clear` as the profile says; false means the
// session is over.
func (ss *session) answerClear(sp *speaker) bool {
	rest := sp.abandoned
	sp.abandoned = nil
	if d := ss.profile.ClearDelay.draw(); d > 0 && !sleepCtx(ss.ctx, d) {
		return false
	}
	switch ss.profile.ClearAnswer {
	case ClearNothing:
	case ClearEnd:
		// The end of the discarded turn, in the route's own words.
		end := ss.endMessages(sp, 0, nil)
		if len(end) == 0 {
			end = []map[string]any{{"type": "audio_end"}}
		}
		if !ss.writeJSON(end[0]) {
			return false
		}
	default:
		if !ss.writeJSON(map[string]any{"type": "cleared"}) {
			return false
		}
	}
	if ss.profile.ClearAnswer != ClearNothing {
		ss.record(func(i *SessionInfo) { i.ClearsAnswered++ })
	}
	// Audio of the cleared turn, after its answer (Profile.AudioAfterCleared).
	if rest != nil {
		for n := 0; n < ss.profile.AudioAfterCleared && len(rest.audio) > 0; n++ {
			chunk := rest.audio[:min(rest.chunkBytes, len(rest.audio))]
			rest.audio = rest.audio[len(chunk):]
			if !ss.writeAudio(sp, chunk, nil, 0) {
				return false
			}
			ss.record(func(i *SessionInfo) { i.ClearedAudioSent++ })
		}
	}
	return true
}

// abandoned is the audio a cleared turn had yet to send.
type abandoned struct {
	audio      []byte
	chunkBytes int
}

// writeAudio sends one chunk of audio in the profile's shape, with the
// alignment of the characters heard in it when align is not nil (off is
// the chunk's offset in the utterance); false means the session is over.
func (ss *session) writeAudio(sp *speaker, chunk []byte, align *aligner, off int) bool {
	sp.chunks++
	typ, b := websocket.MessageBinary, chunk
	if ss.profile.AudioShape != AudioShapeBinary {
		sp.frame = appendAudioFrame(sp.frame[:0], ss.profile.AudioShape, chunk, sp.chunks)
		if align != nil {
			// The alignment goes before the frame's closing brace.
			sp.frame = append(align.appendFields(sp.frame[:len(sp.frame)-1], off, len(chunk)), '}')
		}
		typ, b = websocket.MessageText, sp.frame
	}
	if err := ss.ws.Write(ss.ctx, typ, b); err != nil || ss.closing.Load() {
		return false
	}
	ss.record(func(i *SessionInfo) { i.AudioBytesSent += int64(len(chunk)) })
	return true
}

// turnFailure is the error frame of a turn that fails mid-turn.
type turnFailure struct{ code, message string }

// endTurn sends what follows a turn's last audio in the session's profile
// (with last, the audio LastAudioInEnd holds back, in its first message);
// false means the session is over. final counts the turn as the caller's;
// segID "" sends no segment_end.
func (ss *session) endTurn(sp *speaker, segID string, dur float64, last []byte, final bool) bool {
	p := ss.profile
	// ElevenLabs' last message of a generation follows its audio at once.
	if p.IsFinalFrame && p.TurnEnd != TurnEndIsFinal && !ss.writeJSON(json.RawMessage(isFinalFrame)) {
		return false
	}
	// A route that ends its turns by closing closes right after the audio,
	// so nothing, not even segment_end, comes between.
	if p.Segments && segID != "" && p.TurnEnd != TurnEndClose && !ss.writeJSON(map[string]any{"type": "segment_end", "segment_id": segID}) {
		return false
	}
	ends := ss.endMessages(sp, dur, last)
	if final {
		// Counted before the turn's end goes out, so that a client that
		// has seen it finds the turn counted.
		ss.srv.stats.turns.Add(1)
		ss.record(func(i *SessionInfo) { i.TurnsCompleted++ })
	}
	for _, m := range ends {
		if !ss.writeJSON(m) {
			return false
		}
	}
	if p.TurnEnd == TurnEndClose || (p.CloseAfterTurn && final) {
		ss.closeWith(websocket.StatusNormalClosure, "turn complete")
		return false
	}
	return true
}

// endMessages are the end-of-turn messages of the session's profile for a
// turn of dur seconds, the first carrying last (LastAudioInEnd) when it
// is not nil: none for TurnEndClose.
func (ss *session) endMessages(sp *speaker, dur float64, last []byte) []map[string]any {
	p := ss.profile
	flushed := map[string]any{"type": p.FlushedType}
	if p.FlushedType == "Flushed" {
		flushed["sequence_id"] = sp.turns // as Deepgram's own Flushed does
	}
	audioEnd := map[string]any{"type": "audio_end", "duration": dur}
	var ends []map[string]any
	switch p.TurnEnd {
	case TurnEndBoth:
		ends = []map[string]any{flushed, audioEnd}
	case TurnEndFlushed:
		ends = []map[string]any{flushed}
	case TurnEndAudioEnd:
		ends = []map[string]any{audioEnd}
	case TurnEndIsFinal:
		ends = []map[string]any{{"audio": nil, "isFinal": true}}
	case TurnEndEvent:
		key := "event"
		if sp.turns%2 == 0 {
			key = "event_type"
		}
		ends = []map[string]any{{"type": "event", "data": map[string]any{key: eventEnds[sp.turns%len(eventEnds)]}}}
	}
	if last != nil && len(ends) > 0 {
		b64 := base64.StdEncoding.EncodeToString(last)
		first := ends[0]
		if a := sp.lastAlign; a != nil {
			first["normalizedAlignment"], first["alignment"] = a.normalized, a.text
			sp.lastAlign = nil
		}
		switch {
		case p.TurnEnd == TurnEndIsFinal || sp.turns%3 == 2:
			first["audio"] = b64
		case p.TurnEnd == TurnEndEvent || sp.turns%3 == 1:
			data, _ := first["data"].(map[string]any)
			if data == nil {
				data = map[string]any{}
				first["data"] = data
			}
			data["audio"] = b64
		default:
			first["data"] = b64
		}
	}
	return ends
}

// failTurn sends a turn's mid-turn error frame and leaves the turn
// unfinished; later turns on the socket get the same frame.
func (ss *session) failTurn(sp *speaker, f *turnFailure) bool {
	sp.failed = f
	ss.record(func(i *SessionInfo) { i.TurnsFailed++ })
	return ss.sendError(f.code, f.message)
}

// isFinalFrame is the last message of an ElevenLabs generation, which its
// routes pass through: no audio, no type.
const isFinalFrame = `{"audio":null,"isFinal":true}`
