package slngclient

import (
	"bytes"
	"strconv"
)

// audioKeys are the keys scanAudio reads, by index.
var audioKeys = [4]string{"type", "data", "audio", "sequence"}

// moreKeys are the keys that make a frame more than audio (see scanAudio).
var moreKeys = [2]string{"isFinal", "error"}

// Indexes into audioKeys.
const (
	keyType = iota
	keyData
	keyAudio
	keySequence
)

// scanAudio recognizes JSON audio in a flat object, in every shape
// decodeFrame documents, and returns its raw base64 payload and sequence
// without encoding/json. Anything it is not sure encoding/json reads the
// same way reports ok=false and takes the full decode: a known key in
// other letter case ("Data" is data to encoding/json) or twice (the last
// wins there), a known key's value of an unexpected kind or with escapes,
// a type that is not JSON audio or not ASCII, a sequence that is not an
// integer, or no payload. Other keys may hold any value, which is skipped;
// ElevenLabs' alignment objects (alignKeys) are only located, in align,
// for a consumer that asks for them to parse, and the same rules send
// those keys in other letter case or twice to the full decode.
func scanAudio(b []byte) (payload []byte, seq int64, align alignRaw, ok bool) {
	var typ, data, nested, audio []byte
	var seen [len(audioKeys)]bool
	var aligns [len(alignKeys)][]byte
	var alignSeen [len(alignKeys)]bool
	end, ok := eachMember(b, 0, func(key, val []byte) bool {
		k := knownKey(key, audioKeys[:])
		if k < 0 {
			// An ElevenLabs frame that ends its generation, or one that
			// carries an error, is more than audio: the full decode reads
			// it. isFinal false (or null) is the common case and stays.
			switch knownKey(key, moreKeys[:]) {
			case 0:
				return string(val) == "false" || string(val) == "null"
			case 1:
				return false
			}
			if a := knownKey(key, alignKeys[:]); a >= 0 {
				if alignSeen[a] || string(key) != alignKeys[a] {
					return false
				}
				alignSeen[a] = true
				if string(val) != "null" {
					aligns[a] = val
				}
			}
			return true
		}
		if seen[k] || string(key) != audioKeys[k] {
			return false
		}
		seen[k] = true
		var good bool
		switch k {
		case keyType:
			typ, good = stringValue(val)
		case keyData:
			if val[0] == '{' {
				nested, good = nestedAudio(val)
			} else {
				data, good = stringOrNull(val)
			}
		case keyAudio:
			audio, good = stringOrNull(val)
		case keySequence:
			// A sequence in a string goes to the full decode.
			var err error
			seq, err = strconv.ParseInt(string(val), 10, 64)
			good = err == nil
		}
		return good
	})
	if !ok || skipSpace(b, end) != len(b) {
		return nil, 0, align, false
	}
	switch {
	case len(typ) == 0:
		payload = audio // ElevenLabs pass-through: only audio counts
	case !isAudioType(typ):
		return nil, 0, align, false
	case data != nil:
		payload = data
	case nested != nil:
		payload = nested
	default:
		payload = audio
	}
	align = alignRaw{text: aligns[0], normalized: aligns[1]}
	if align.normalized == nil {
		align.normalized = aligns[2]
	}
	return payload, seq, align, len(payload) > 0
}

// isAudioType reports an ASCII type that, lower-cased, is in audioTypes.
// Other letters go to the full decode, where strings.ToLower has the last
// word on them.
func isAudioType(typ []byte) bool {
	for _, c := range typ {
		if c >= 0x80 {
			return false
		}
	}
	for t := range audioTypes {
		if bytes.EqualFold(typ, []byte(t)) {
			return true
		}
	}
	return false
}

// nestedAudio reads data as an object {"audio": "<base64>", ...}: the
// payload, nil when audio is absent or null, ok=false for anything the
// full decode must judge.
func nestedAudio(obj []byte) (payload []byte, ok bool) {
	seen := false
	end, ok := eachMember(obj, 0, func(key, val []byte) bool {
		if knownKey(key, audioKeys[keyAudio:keyAudio+1]) < 0 {
			return true
		}
		if seen || string(key) != "audio" {
			return false
		}
		seen = true
		var good bool
		payload, good = stringOrNull(val)
		return good
	})
	return payload, ok && end == len(obj)
}

// stringValue reads a raw value, as eachMember gives it (whole, and free
// of control characters), that is a string without escapes.
func stringValue(val []byte) ([]byte, bool) {
	if val[0] != '"' || bytes.IndexByte(val, '\\') >= 0 {
		return nil, false
	}
	return val[1 : len(val)-1], true
}

// stringOrNull reads a raw value that is a string without escapes (s is
// then non-nil, even when empty) or null (s nil).
func stringOrNull(val []byte) (s []byte, ok bool) {
	if string(val) == "null" {
		return nil, true
	}
	s, ok = stringValue(val)
	if ok && s == nil {
		s = val[1:1]
	}
	return s, ok
}

// knownKey is the index in keys of key in any letter case, as
// encoding/json matches them, or -1.
func knownKey(key []byte, keys []string) int {
	for k, name := range keys {
		if bytes.EqualFold(key, []byte(name)) {
			return k
		}
	}
	return -1
}

// eachMember calls visit with each key and raw value of the JSON object
// at b[i], in order, and returns the index after the object. Keys with
// escapes, or visit returning false, end it with ok=false. Values are
// skipped, not validated: the full decode judges what is not audio.
func eachMember(b []byte, i int, visit func(key, val []byte) bool) (next int, ok bool) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		key, j, ok := scanString(b, i)
		if !ok {
			return 0, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipSpace(b, i+1)
		j, ok = skipValue(b, i)
		if !ok || !visit(key, b[i:j]) {
			return 0, false
		}
		i = skipSpace(b, j)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// skipValue returns the index after the JSON value at b[i]. Objects and
// arrays are skipped by counting brackets outside strings.
func skipValue(b []byte, i int) (next int, ok bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := skipString(b, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	case c == '-' || (c >= '0' && c <= '9'):
		j := i + 1
		for j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-' || (b[j] >= '0' && b[j] <= '9')) {
			j++
		}
		return j, true
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(b[i:], []byte(lit)) {
			return i + len(lit), true
		}
	}
	return 0, false
}

// skipString returns the index after the JSON string at b[i], escapes
// included.
func skipString(b []byte, i int) (next int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\':
			j++
		case c < 0x20:
			return 0, false
		}
	}
	return 0, false
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
