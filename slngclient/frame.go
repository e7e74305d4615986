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

	// audio_chunk (slow path only; see decodeFrame). The sequence is only
	// informative: one of an unexpected kind must not cost the audio.
	Data     json.RawMessage `json:"data"`
	Sequence json.RawMessage `json:"sequence"`

	SegmentID string   `json:"segment_id"`
	Duration  *float64 `json:"duration"`

	// error: SLNG's shape is {code, message}; clients also meet
	// {description}, {error}, numeric status_code and a nested data object.
	Code        json.RawMessage `json:"code"`
	StatusCode  json.RawMessage `json:"status_code"`
	Message     string          `json:"message"`
	Description string          `json:"description"`
	Error       json.RawMessage `json:"error"`

	Transcript   string     `json:"transcript"`
	Confidence   float64    `json:"confidence"`
	Language     string     `json:"language"`
	Start        *float64   `json:"start"`
	Words        []wireWord `json:"words"`
	FromFinalize bool       `json:"from_finalize"`
	LastWordEnd  *float64   `json:"last_word_end"`
}

type wireWord struct {
	Word           string          `json:"word"`
	PunctuatedWord string          `json:"punctuated_word"`
	Start          float64         `json:"start"`
	End            float64         `json:"end"`
	Confidence     float64         `json:"confidence"`
	Speaker        json.RawMessage `json:"speaker"` // int on WebSockets, string in some docs
}

// decoded is one decoded text frame. For an audio_chunk, audio holds the
// decoded bytes (in the dst buffer given to decodeFrame) and msg is nil.
type decoded struct {
	audio    []byte
	sequence int64
	msg      *serverMsg
}

// decodeFrame decodes one text frame. audio_chunk messages, the hot path,
// are scanned by hand and their base64 decoded into dst (grown if needed)
// without allocating when dst is large enough; every other message goes
// through encoding/json. Work and memory are bounded by len(b).
func decodeFrame(b []byte, dst []byte) (decoded, error) {
	if data, seq, ok := scanAudioChunk(b); ok {
		n := base64.StdEncoding.DecodedLen(len(data))
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		m, err := base64.StdEncoding.Decode(dst, data)
		if err != nil {
			return decoded{}, err
		}
		return decoded{audio: dst[:m], sequence: seq}, nil
	}
	var msg serverMsg
	if err := json.Unmarshal(b, &msg); err != nil {
		return decoded{}, err
	}
	msg.Type = strings.ToLower(msg.Type) // some gateways send "Error"
	if msg.Type == "audio_chunk" {
		// The slow path: escapes or unusual layout in an audio_chunk.
		var s string
		if err := json.Unmarshal(msg.Data, &s); err != nil {
			return decoded{}, errors.New("audio_chunk without string data")
		}
		n := base64.StdEncoding.DecodedLen(len(s))
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		m, err := base64.StdEncoding.Decode(dst[:n], []byte(s))
		if err != nil {
			return decoded{}, err
		}
		return decoded{audio: dst[:m], sequence: sequenceOf(msg.Sequence)}, nil
	}
	return decoded{msg: &msg}, nil
}

// sequenceOf reads an audio_chunk sequence: an integer, or an integer in a
// string; 0 for anything else.
func sequenceOf(raw json.RawMessage) int64 {
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

// scanAudioChunk recognizes a flat JSON object {"type":"audio_chunk",
// "data":"<base64>", ...} whose strings have no escapes, returning the raw
// base64 and the sequence. Anything else reports ok=false and takes the
// encoding/json path, including what encoding/json reads differently from
// a plain scan: a key of its own in other letter case ("Data" is data to
// encoding/json), a key twice (the last wins there), or a value of the
// wrong kind.
func scanAudioChunk(b []byte) (data []byte, seq int64, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	i++
	var isChunk bool
	var seen [3]bool // type, data, sequence
	for {
		i = skipSpace(b, i)
		if i < len(b) && b[i] == '}' {
			break
		}
		key, j, okk := scanString(b, i)
		if !okk {
			return nil, 0, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return nil, 0, false
		}
		if k := knownKey(key); k >= 0 {
			wantKind := byte('"')
			if k == 2 {
				wantKind = '0' // sequence: a number
			}
			kind := b[i]
			if kind == '-' || (kind >= '0' && kind <= '9') {
				kind = '0'
			}
			if seen[k] || string(key) != knownKeys[k] || kind != wantKind {
				return nil, 0, false
			}
			seen[k] = true
		}
		switch {
		case b[i] == '"':
			val, j, okv := scanString(b, i)
			if !okv {
				return nil, 0, false
			}
			switch string(key) { // no allocation: the compiler optimizes this conversion
			case "type":
				if !bytes.Equal(val, []byte("audio_chunk")) {
					return nil, 0, false
				}
				isChunk = true
			case "data":
				data = val
			}
			i = j
		case b[i] == '-' || (b[i] >= '0' && b[i] <= '9'):
			j := i + 1
			for j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-' || (b[j] >= '0' && b[j] <= '9')) {
				j++
			}
			if string(key) == "sequence" {
				n, err := strconv.ParseInt(string(b[i:j]), 10, 64)
				if err != nil {
					return nil, 0, false
				}
				seq = n
			}
			i = j
		case bytes.HasPrefix(b[i:], []byte("true")):
			i += 4
		case bytes.HasPrefix(b[i:], []byte("false")):
			i += 5
		case bytes.HasPrefix(b[i:], []byte("null")):
			i += 4
		default:
			return nil, 0, false // nested values: not the hot path
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			break
		}
		return nil, 0, false
	}
	if skipSpace(b, i+1) != len(b) {
		return nil, 0, false
	}
	return data, seq, isChunk && data != nil
}

// knownKeys are the keys scanAudioChunk reads, by index.
var knownKeys = [3]string{"type", "data", "sequence"}

// knownKey is the index of key in knownKeys in any letter case, as
// encoding/json matches them, or -1.
func knownKey(key []byte) int {
	for k, name := range knownKeys {
		if bytes.EqualFold(key, []byte(name)) {
			return k
		}
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the contents of the JSON string at b[i] and the index
// after it; strings with escapes or control characters are refused.
func scanString(b []byte, i int) (val []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// errorOf extracts an error frame's code and message, leniently.
func errorOf(m *serverMsg) (code, message string) {
	code = rawString(m.Code)
	if code == "" {
		code = rawString(m.StatusCode)
	}
	message = m.Message
	if message == "" {
		message = m.Description
	}
	if message == "" {
		message = rawString(m.Error)
	}
	if (code == "" || message == "") && len(m.Data) > 0 && m.Data[0] == '{' {
		var nested struct {
			Code        json.RawMessage `json:"code"`
			StatusCode  json.RawMessage `json:"status_code"`
			ErrCode     json.RawMessage `json:"err_code"`
			Message     string          `json:"message"`
			Description string          `json:"description"`
			Error       string          `json:"error"`
		}
		if json.Unmarshal(m.Data, &nested) == nil {
			if code == "" {
				code = firstNonEmpty(rawString(nested.Code), rawString(nested.StatusCode), rawString(nested.ErrCode))
			}
			if message == "" {
				message = firstNonEmpty(nested.Message, nested.Description, nested.Error)
			}
		}
	}
	// Bounded, and cut on a rune boundary: the message reaches protobuf
	// strings, which must be valid UTF-8.
	return truncate(code, 128), truncate(message, 512)
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
