package slngsim

import (
	"strings"

	"github.com/coder/websocket"
)

// partialEvery is how much new text (bytes) makes a new partial transcript.
const partialEvery = 8

// sttState is the recognizer of one STT session.
type sttState struct {
	cfg         initConfig
	dec         *decoder
	partials    bool
	frames      int
	utterances  int
	lastPartial int
}

// loseFinalize reports whether a finalize on a session of model goes
// unanswered: one of the first lost the simulator gets for the model, or
// any with lost negative (Profile.LostFinalizes).
func (s *Server) loseFinalize(model string, lost int) bool {
	if lost >= 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.lostFinalizes == nil {
			s.lostFinalizes = map[string]int{}
		}
		if s.lostFinalizes[model] >= lost {
			return false
		}
		s.lostFinalizes[model]++
	}
	return true
}

// utteranceEnds reports whether an utterance's final is followed by
// `utterance_end` (Profile.UtteranceEnd).
func (ss *session) utteranceEnds(st *sttState) bool {
	switch ss.profile.UtteranceEnd {
	case UtteranceEndNever:
		return false
	case UtteranceEndAlways:
		return true
	}
	return st.cfg.EnableVAD
}

// serveSTT runs an STT session in this goroutine: audio in, transcripts out.
func (ss *session) serveSTT(cfg initConfig) {
	dec, err := newDecoder(cfg.Encoding, cfg.SampleRate)
	if err != nil {
		ss.fatal("config_error", err.Error(), websocket.StatusPolicyViolation)
		return
	}
	st := &sttState{cfg: cfg, dec: dec, partials: true}
	if cfg.EnablePartials != nil {
		st.partials = *cfg.EnablePartials
	} else if cfg.EnablePartialTranscript != nil {
		st.partials = *cfg.EnablePartialTranscript
	}
	st.partials = st.partials || ss.profile.PartialsAlways
	for {
		typ, data, err := ss.read()
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			ss.record(func(i *SessionInfo) { i.Received["binary"]++; i.AudioBytesHeard += int64(len(data)) })
			if !ss.hear(st, data) {
				return
			}
			continue
		}
		m, ok := ss.parseMessage(data)
		if !ok {
			if !ss.sendError("invalid_request", "invalid JSON") {
				return
			}
			continue
		}
		switch m.Type {
		case "audio":
			audio, err := decodeAudioMessage(m)
			if err != nil {
				ss.violation()
				if !ss.sendError("invalid_request", "audio data is not base64") {
					return
				}
				continue
			}
			if !ss.hear(st, audio) {
				return
			}
		case "finalize":
			if ss.srv.loseFinalize(ss.info.Model, ss.profile.LostFinalizes) {
				continue
			}
			// A late answer: nothing more is heard until it is sent.
			if d := ss.profile.FinalizeDelay.draw(); d > 0 && !sleepCtx(ss.ctx, d) {
				return
			}
			if !ss.final(st, true, st.dec.seconds(st.dec.pos)) {
				return
			}
		case "close", "stop":
			if len(st.dec.pending) > 0 && !ss.final(st, false, st.dec.seconds(st.dec.pos)) {
				return
			}
			ss.closeWith(websocket.StatusNormalClosure, "")
			return
		case "keepalive":
		default:
			ss.violation()
			if !ss.sendError("invalid_request", "unknown message type") {
				return
			}
		}
	}
}

// hear feeds audio to the recognizer and sends what it recognized; false
// means the session is over.
func (ss *session) hear(st *sttState, audio []byte) bool {
	st.frames++
	ok := true
	st.dec.write(audio, func(ev decoded) {
		if ok {
			ok = ss.sendFinal(st, string(ev.text), ev.start, ev.end, false)
			if ok && ss.utteranceEnds(st) {
				ok = ss.writeJSON(map[string]any{"type": "utterance_end", "last_word_end": round3(ev.end)})
			}
		}
	})
	if !ok {
		return false
	}
	if st.partials && len(st.dec.pending)-st.lastPartial >= partialEvery {
		st.lastPartial = len(st.dec.pending)
		msg := map[string]any{
			"type":       "partial_transcript",
			"transcript": string(st.dec.pending),
			"confidence": 0.8,
		}
		if ss.profile.FinalShape == FinalsRich {
			start := st.dec.seconds(st.dec.uttStart)
			msg["start"] = round3(start)
			msg["duration"] = round3(st.dec.seconds(st.dec.pos) - start)
		}
		if !ss.writeJSON(msg) {
			return false
		}
	}
	return !ss.maybeFault(PointChunks, st.frames)
}

// final sends the pending text as a final transcript (possibly empty, as
// SLNG answers a finalize with nothing pending) and starts a new utterance.
func (ss *session) final(st *sttState, fromFinalize bool, end float64) bool {
	text := string(st.dec.pending)
	start := st.dec.seconds(st.dec.uttStart)
	if text == "" {
		start = end
	}
	st.dec.pending = st.dec.pending[:0]
	return ss.sendFinal(st, text, start, end, fromFinalize)
}

func (ss *session) sendFinal(st *sttState, text string, start, end float64, fromFinalize bool) bool {
	st.lastPartial = 0
	if ss.maybeFault(PointFirstFinal, 0) {
		return false
	}
	lang := st.cfg.Language
	if lang == "" {
		lang = "en"
	}
	msg := map[string]any{
		"type":       "final_transcript",
		"transcript": text,
		"confidence": 0.98,
		"language":   lang,
	}
	switch ss.profile.FinalShape {
	case FinalsAsyncAPI:
		// The AsyncAPI's final: no start or from_finalize, so a client
		// cannot tell a finalize's answer from any other final; words
		// only where the profile's route sends them.
		if ss.profile.AsyncAPIDuration {
			msg["duration"] = round3(end - start)
		}
		if ss.profile.AsyncAPIWords && text != "" {
			msg["words"] = ss.words(st, text, start, end)
		}
	default:
		msg["start"] = round3(start)
		msg["duration"] = round3(end - start)
		msg["from_finalize"] = fromFinalize
		if (st.cfg.EnableWordTimestamps || st.cfg.EnableDiarization) && text != "" {
			msg["words"] = ss.words(st, text, start, end)
		}
	}
	st.utterances++
	ss.srv.stats.finals.Add(1)
	ss.record(func(i *SessionInfo) { i.FinalsSent++ })
	return ss.writeJSON(msg)
}

// words times each word by its share of the utterance's bytes, which is
// exact for the simulator's audio: every byte is two symbols long.
func (ss *session) words(st *sttState, text string, start, end float64) []map[string]any {
	perByte := (end - start) / float64(len(text))
	speaker := 0
	if st.cfg.EnableDiarization && st.cfg.MaxSpeakers > 1 {
		speaker = st.utterances % st.cfg.MaxSpeakers
	} else if st.cfg.EnableDiarization {
		speaker = st.utterances % 2
	}
	var out []map[string]any
	off := 0
	for _, f := range strings.SplitAfter(text, " ") {
		w := strings.TrimSpace(f)
		if w != "" {
			ws := start + float64(off)*perByte
			w2 := map[string]any{
				"word":            strings.ToLower(strings.Trim(w, ".,!?;:¿¡\"'")),
				"punctuated_word": w,
				"start":           round3(ws),
				"end":             round3(ws + float64(len(w))*perByte),
				"confidence":      0.97,
			}
			if st.cfg.EnableDiarization {
				w2["speaker"] = speaker
			}
			out = append(out, w2)
		}
		off += len(f)
	}
	return out
}

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}
