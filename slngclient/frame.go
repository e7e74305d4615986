package slngclient

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// serverMsg is any JSON message SLNG sends, TTS or STT. Fields absent from a
// message stay zero.
type serverMsg struct {
	Type      string `json:"type"`
	SessionID string `json:"session_id"`
	RequestID string `json:"slng_request_id"`

	// JSON audio (slow path only; see decodeFrame): the payload is in data
	// (a string or an object holding audio) or in audio. The sequence is
	// only informative: one of an unexpected kind must not cost the audio.
	Data     json.RawMessage `json:"data"`
	Audio    json.RawMessage `json:"audio"`
	Sequence json.RawMessage `json:"sequence"`

	// undecodable marks a JSON audio message whose payload is not base64
	// in any alphabet or padding decodeBase64 reads: audio lost, which
	// the session reports (TTSUndecodableAudio) rather than dropping it.
	undecodable bool

	SegmentID string   `json:"segment_id"`
	Duration  *float64 `json:"duration"`

	// error: see errorFields; a nested data object may hold them too.
	errorFields

	Transcript string     `json:"transcript"`
	Confidence float64    `json:"confidence"`
	Language   string     `json:"language"`
	Start      *float64   `json:"start"`
	Words      []wireWord `json:"words"`
	// FromFinalize is raw so that its presence is known: the bridge's
	// AsyncAPI shape has no such field, and then any final answers an
	// outstanding finalize.
	FromFinalize json.RawMessage `json:"from_finalize"`
	LastWordEnd  *float64        `json:"last_word_end"`

	// IsFinal ends an ElevenLabs generation in frames without a type,
	// which some routes pass through (see normalizeType).
	IsFinal json.RawMessage `json:"isFinal"`
	// The alignment objects ElevenLabs frames carry beside their audio
	// (alignment.go); copied only when present.
	Alignment                json.RawMessage `json:"alignment"`
	NormalizedAlignment      json.RawMessage `json:"normalizedAlignment"`
	NormalizedAlignmentSnake json.RawMessage `json:"normalized_alignment"`
}

type wireWord struct {
	Word           string          `json:"word"`
	PunctuatedWord string          `json:"punctuated_word"`
	Start          float64         `json:"start"`
	End            float64         `json:"end"`
	Confidence     float64         `json:"confidence"`
	Speaker        json.RawMessage `json:"speaker"` // int on WebSockets, string in some docs
}

// audioTypes are the message types that carry JSON audio, lower-cased:
// SLNG's own audio_chunk and the spellings LiveKit's SLNG plugin accepts
// from routes that pass a provider's messages through.
var audioTypes = map[string]bool{"audio_chunk": true, "audio": true, "chunk": true}

// errNoAudioPayload reports a JSON audio message whose payload is missing
// or not a string: malformed, unlike an empty payload, which is no audio.
var errNoAudioPayload = errors.New("audio message without a string payload")

// decodeFrame decodes one text frame: JSON audio into dst (grown if
// needed), or a message, with its *UpstreamError when it is an error
// frame. JSON audio in a flat object, the hot path, is scanned by hand
// (scanAudio) and decoded without allocating when dst is large enough;
// everything else goes through encoding/json. Work and memory are bounded
// by len(b).
//
// JSON audio comes in several shapes (slng-real-clients.md): a type of
// audio_chunk, audio or chunk in any letter case, with the base64 payload
// in data, in data.audio or in audio; or no type at all and the payload in
// audio, as ElevenLabs routes pass it through ({"audio": "...",
// "isFinal": false}). A payload that is an empty string or null is no
// audio: such a frame is returned as a message, which sessions count as an
// unknown type, so that a caller never sees an empty audio event. A
// payload that is not base64 (see decodeBase64) is returned as a message
// marked undecodable.
//
// A frame that ends a turn (see normalizeType for its spellings) may carry
// the turn's last audio in the same places: it is returned with both, the
// audio first. Frames are then audio alone (msg nil), a message alone, or
// such an end with its audio.
func decodeFrame(b []byte, dst []byte) (frame, error) {
	if payload, seq, align, ok := scanAudio(b); ok {
		// An undecodable payload takes the full decode, which marks it.
		if audio, err := decodeBase64(payload, dst); err == nil && len(audio) > 0 {
			return frame{audio: audio, sequence: seq, align: align}, nil
		}
	}
	return decodeJSON(b, dst)
}

// decodeJSON is decodeFrame through encoding/json, for every frame.
func decodeJSON(b []byte, dst []byte) (frame, error) {
	var msg serverMsg
	if err := json.Unmarshal(b, &msg); err != nil {
		return frame{}, err
	}
	msg.Type = normalizeType(&msg)
	var payload []byte
	switch {
	case audioTypes[msg.Type]:
		p, ok := audioPayload(&msg)
		if !ok {
			return frame{}, errNoAudioPayload
		}
		payload = p
	case msg.Type == "":
		// No type: ElevenLabs pass-through audio, or something unknown.
		// An audio that is not a string is no audio.
		payload, _ = jsonString(msg.Audio)
	case endsTurn(msg.Type) && msg.Type != "cleared":
		// An end of a turn may carry the turn's last audio, in the
		// places JSON audio has it (LiveKit plays it before the end).
		payload, _ = audioPayload(&msg)
	}
	f := frame{msg: &msg, align: alignRaw{text: rawOrNil(msg.Alignment), normalized: rawOrNil(msg.NormalizedAlignment)}}
	if f.align.normalized == nil {
		f.align.normalized = rawOrNil(msg.NormalizedAlignmentSnake)
	}
	if msg.Type == "error" {
		f.err = errorFrame(&msg)
	}
	if len(payload) == 0 {
		return f, nil
	}
	audio, err := decodeBase64(payload, dst)
	switch {
	case err != nil && f.msg.Type != "" && !audioTypes[f.msg.Type]:
		// An end of a turn with a payload that is not audio: the end
		// still counts.
		return f, nil
	case err != nil:
		msg.undecodable = true
		return frame{msg: &msg}, nil
	case len(audio) == 0: // only line breaks, which base64 skips
		return f, nil
	}
	f.audio, f.sequence = audio, sequenceOf(msg.Sequence)
	if audioTypes[msg.Type] || msg.Type == "" {
		f.msg = nil // audio alone
	}
	return f, nil
}

// eventEnds and eventFails are the names a frame of type `event` gives,
// in data.event or data.event_type, to the end of a reply and to its
// failure (LiveKit's SLNG plugin, tts.py).
var (
	eventEnds  = map[string]bool{"complete": true, "completed": true, "done": true, "end": true, "final": true}
	eventFails = map[string]bool{"error": true, "failed": true}
)

// normalizeType returns the type of m as the sessions read it: lower
// case, with the other spellings SLNG's routes use for the end of a reply
// and for an error made into "done" and "error" (slng-real-clients.md,
// "Second reading"): an `event` frame naming the end or a failure in
// data.event or data.event_type, and, in frames without a type (passed
// through from ElevenLabs), a true isFinal (the end; its audio, if any,
// comes first) or an error key.
func normalizeType(m *serverMsg) string {
	typ := strings.ToLower(m.Type) // some gateways send "Error", "Flushed", "Audio"
	switch typ {
	case "event":
		var ev struct {
			Event     string `json:"event"`
			EventType string `json:"event_type"`
		}
		if len(m.Data) > 0 && m.Data[0] == '{' && json.Unmarshal(m.Data, &ev) == nil {
			name := strings.ToLower(strings.TrimSpace(firstNonEmpty(ev.Event, ev.EventType)))
			switch {
			case eventEnds[name]:
				return "done"
			case eventFails[name]:
				return "error"
			}
		}
	case "":
		switch {
		case truthy(m.IsFinal):
			return "done"
		case len(m.Error) > 0 && string(m.Error) != "null":
			return "error"
		}
	}
	return typ
}

// truthy reads isFinal as LiveKit does: true, 1, or a string "true" or
// "1" in any letter case.
func truthy(raw json.RawMessage) bool {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x == 1
	case string:
		s := strings.ToLower(strings.TrimSpace(x))
		return s == "true" || s == "1"
	}
	return false
}

// audioPayload finds the base64 payload of a typed JSON audio message: data
// as a string, else data.audio, else audio. ok is false when none of them
// is a string (null counts as absent).
func audioPayload(m *serverMsg) (payload []byte, ok bool) {
	if p, ok := jsonString(m.Data); ok {
		return p, true
	}
	if len(m.Data) > 0 && m.Data[0] == '{' {
		var nested struct {
			Audio json.RawMessage `json:"audio"`
		}
		if json.Unmarshal(m.Data, &nested) == nil {
			if p, ok := jsonString(nested.Audio); ok {
				return p, true
			}
		}
	}
	return jsonString(m.Audio)
}

// jsonString reads a raw JSON value that is a string. Base64 has no
// characters JSON must escape, so a string without escapes is used in
// place, without copying; one with escapes is unquoted.
func jsonString(r json.RawMessage) (s []byte, ok bool) {
	if len(r) == 0 || r[0] != '"' {
		return nil, false // absent, null, or not a string
	}
	if v, next, ok := scanString(r, 0); ok && next == len(r) {
		return v, true
	}
	var str string
	if json.Unmarshal(r, &str) != nil {
		return nil, false
	}
	return []byte(str), true
}

// decodeBase64 decodes base64 into dst, grown if needed, in every form
// that providers' audio comes in through SLNG's routes: the standard
// alphabet (RFC 4648 section 4) or the URL-safe one (section 5, as
// Python's urlsafe_b64encode and JavaScript's base64url write it), padded
// or not, wrapped in lines (CR and LF are skipped anywhere), and padded
// pieces run together (chunks encoded one by one, then joined). The
// result is empty only when the input has no base64 characters. Standard
// padded base64, SLNG's documented form, takes one pass; the others a
// second one.
func decodeBase64(src, dst []byte) ([]byte, error) {
	// Room for the unpadded decoding, which may be 2 bytes longer.
	n := base64.RawStdEncoding.DecodedLen(len(src))
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	if m, err := base64.StdEncoding.Decode(dst[:n], src); err == nil {
		return dst[:m], nil
	}
	return decodeLenient(src, dst[:0])
}

// decodeLenient is decodeBase64 for what is not standard padded base64:
// it decodes each piece that padding ends, in the alphabet the input
// uses, without padding. dst has room for the unpadded decoding of src,
// which is at least what this one makes.
func decodeLenient(src, dst []byte) ([]byte, error) {
	enc := base64.RawStdEncoding
	if bytes.ContainsAny(src, "-_") {
		enc = base64.RawURLEncoding // one mixing both alphabets fails below
	}
	for len(src) > 0 {
		piece, rest := src, []byte(nil)
		if i := bytes.IndexByte(src, '='); i >= 0 {
			j := i
			for j < len(src) && (src[j] == '=' || src[j] == '\r' || src[j] == '\n') {
				j++
			}
			if bytes.Count(src[i:j], []byte("=")) > 2 {
				return nil, errors.New("base64: more than two padding characters")
			}
			piece, rest = src[:i], src[j:]
		}
		k := len(dst)
		m, err := enc.Decode(dst[k:k+enc.DecodedLen(len(piece))], piece)
		if err != nil {
			return nil, err
		}
		dst, src = dst[:k+m], rest
	}
	return dst, nil
}

// sequenceOf reads an audio_chunk sequence: an integer, or an integer in a
// string; 0 for anything else.
func sequenceOf(raw json.RawMessage) int64 {
	if len(raw) == 0 {
		return 0 // most JSON audio shapes have none: no failing decodes per chunk
	}
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return n
		}
	}
	return 0
}

// errorFields are the fields that carry an error's code and message, in
// every shape SLNG's clients meet (slng-real-clients.md): SLNG's {code,
// message}, {description}, a numeric status_code or err_code, and error as
// a string or as an object holding the same fields (where type may name
// the code). The top level of an error frame, its nested data object, an
// error object and the JSON body of a refused handshake are all read with
// it.
type errorFields struct {
	Code        json.RawMessage `json:"code"`
	StatusCode  json.RawMessage `json:"status_code"`
	ErrCode     json.RawMessage `json:"err_code"`
	Message     json.RawMessage `json:"message"`
	Description json.RawMessage `json:"description"`
	Error       json.RawMessage `json:"error"`
	// Detail is FastAPI's message field, in handshake bodies.
	Detail json.RawMessage `json:"detail"`
	// Type names the code in an error object; an error frame's own type
	// (serverMsg.Type) hides it there.
	Type json.RawMessage `json:"type"`
}

// own is the code and message of these fields alone. typeIsCode says that
// a type field names the code, as in an error object.
func (f *errorFields) own(typeIsCode bool) (code, message string) {
	code = firstNonEmpty(rawString(f.Code), rawString(f.StatusCode), rawString(f.ErrCode))
	if typeIsCode && code == "" {
		code = rawString(f.Type)
	}
	return code, firstNonEmpty(rawString(f.Message), rawString(f.Description))
}

// codeMessage is the code and message the fields carry: their own, then,
// for what is missing, their error field's: a string is a message, an
// object is read like these fields.
func (f *errorFields) codeMessage() (code, message string) {
	code, message = f.own(false)
	if code != "" && message != "" {
		return code, message
	}
	if s := rawString(f.Error); s != "" {
		return code, firstNonEmpty(message, s)
	}
	var obj errorFields
	if len(f.Error) > 0 && f.Error[0] == '{' && json.Unmarshal(f.Error, &obj) == nil {
		c, m := obj.own(true)
		code, message = firstNonEmpty(code, c), firstNonEmpty(message, m)
	}
	return code, message
}

// errorFrame is the error of an error frame, read leniently from every
// shape of errorFields, at its top level first, then in a nested data
// object. It is the one place an error frame becomes an *UpstreamError,
// once per frame (decodeFrame).
func errorFrame(m *serverMsg) *UpstreamError {
	code, message := m.codeMessage()
	if (code == "" || message == "") && len(m.Data) > 0 && m.Data[0] == '{' {
		var nested errorFields
		if json.Unmarshal(m.Data, &nested) == nil {
			c, msg := nested.codeMessage()
			code, message = firstNonEmpty(code, c), firstNonEmpty(message, msg)
		}
	}
	// Bounded, and cut on a rune boundary: the message reaches protobuf
	// strings, which must be valid UTF-8.
	return NewErrorFrame(truncate(code, 128), truncate(message, 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// rawString reads a JSON string or number as a string.
func rawString(r json.RawMessage) string {
	if len(r) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(r, &n) == nil {
		return n.String()
	}
	return ""
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
