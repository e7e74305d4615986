package slngclient

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecodeFrame(t *testing.T) {
	pcm := []byte{1, 2, 3, 4, 5}
	b64 := base64.StdEncoding.EncodeToString(pcm)
	for _, tc := range []struct {
		name, in string
		audio    []byte
		seq      int64
		typ      string
		wantErr  bool
		// undecodable: a message of type typ marked undecodable.
		undecodable bool
	}{
		{name: "fast path", in: `{"type":"audio_chunk","data":"` + b64 + `","sequence":7}`, audio: pcm, seq: 7},
		{name: "fast path any order", in: ` { "sequence" : 3 , "data":"` + b64 + `", "type":"audio_chunk", "final":false, "x":null } `, audio: pcm, seq: 3},
		{name: "escaped slash takes the slow path", in: `{"type":"audio_chunk","data":"` + strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte{0xff, 0xff}), "/", `\/`) + `","sequence":1}`, audio: []byte{0xff, 0xff}, seq: 1},
		{name: "nested field takes the slow path", in: `{"type":"audio_chunk","data":"` + b64 + `","meta":{"a":1}}`, audio: pcm},
		{name: "uppercase type", in: `{"type":"Audio_Chunk","data":"` + b64 + `"}`, audio: pcm},
		{name: "a key in other case is the same key to encoding/json", in: `{"type":"audio_chunk","data":"AAAA","Data":"` + b64 + `"}`, audio: pcm},
		{name: "a key twice: the last wins", in: `{"type":"audio_chunk","data":"AAAA","sequence":1,"data":"` + b64 + `","sequence":2}`, audio: pcm, seq: 2},
		{name: "sequence in a string", in: `{"type":"audio_chunk","data":"` + b64 + `","sequence":"2"}`, audio: pcm, seq: 2},
		{name: "sequence neither: the audio still counts", in: `{"type":"audio_chunk","data":"` + b64 + `","sequence":{"n":2}}`, audio: pcm},
		{name: "bad base64", in: `{"type":"audio_chunk","data":"!!!"}`, typ: "audio_chunk", undecodable: true},
		{name: "unpadded", in: `{"type":"audio_chunk","data":"` + base64.RawStdEncoding.EncodeToString(pcm) + `"}`, audio: pcm},
		{name: "url-safe", in: `{"type":"audio_chunk","data":"` + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe}) + `"}`, audio: []byte{0xfb, 0xff, 0xfe}},
		{name: "url-safe unpadded, no type", in: `{"audio":"` + base64.RawURLEncoding.EncodeToString([]byte{0xfb, 0xff}) + `"}`, audio: []byte{0xfb, 0xff}},
		{name: "both alphabets", in: `{"type":"audio_chunk","data":"+-AA"}`, typ: "audio_chunk", undecodable: true},
		{name: "data not a string", in: `{"type":"audio_chunk","data":5}`, wantErr: true},
		{name: "ready", in: `{"type":"ready","session_id":"s1"}`, typ: "ready"},
		{name: "Error upper case", in: `{"type":"Error","code":"x"}`, typ: "error"},
		{name: "truncated", in: `{"type":"audio_chunk","data":"AAAA"`, wantErr: true},
		{name: "not json", in: `hello`, wantErr: true},

		// JSON audio in every shape LiveKit's SLNG plugin accepts.
		{name: "type audio, data", in: `{"type":"audio","data":"` + b64 + `"}`, audio: pcm},
		{name: "type Audio, data", in: `{"type":"Audio","data":"` + b64 + `","sequence":4}`, audio: pcm, seq: 4},
		{name: "type chunk, data", in: `{"type":"chunk","data":"` + b64 + `"}`, audio: pcm},
		{name: "type audio, data.audio", in: `{"type":"audio","data":{"audio":"` + b64 + `","format":"pcm"}}`, audio: pcm},
		{name: "type audio_chunk, data.audio", in: `{"type":"audio_chunk","data":{"audio":"` + b64 + `"},"sequence":9}`, audio: pcm, seq: 9},
		{name: "type chunk, top-level audio", in: `{"type":"chunk","audio":"` + b64 + `"}`, audio: pcm},
		{name: "type audio, data null, top-level audio", in: `{"type":"audio","data":null,"audio":"` + b64 + `"}`, audio: pcm},
		{name: "data wins over audio", in: `{"type":"audio","data":"` + b64 + `","audio":"AAAA"}`, audio: pcm},
		{name: "no type: ElevenLabs pass-through", in: `{"audio":"` + b64 + `","isFinal":false,"normalizedAlignment":{"chars":["a"]}}`, audio: pcm},
		{name: "no type, null audio, isFinal: an end", in: `{"audio":null,"isFinal":true}`, typ: "done"},
		{name: "no type, null audio is not audio", in: `{"audio":null,"isFinal":false}`, typ: ""},
		{name: "no type, empty audio is not audio", in: `{"audio":"","isFinal":false}`, typ: ""},
		{name: "no type, audio not a string", in: `{"audio":[1,2],"isFinal":false}`, typ: ""},
		{name: "no type, isFinal alone: an end", in: `{"isFinal":true}`, typ: "done"},
		{name: "no type, nothing", in: `{"isFinal":"no"}`, typ: ""},
		{name: "no type, an error", in: `{"error":"x"}`, typ: "error"},
		{name: "event complete", in: `{"type":"event","data":{"event":"complete"}}`, typ: "done"},
		{name: "event failed", in: `{"type":"EVENT","data":{"event_type":"failed"}}`, typ: "error"},
		{name: "event of another kind", in: `{"type":"event","data":{"event":"started"}}`, typ: "event"},
		{name: "an end with a payload that is not audio", in: `{"type":"done","data":"!!"}`, typ: "done"},
		{name: "empty data is not audio", in: `{"type":"audio_chunk","data":""}`, typ: "audio_chunk"},
		{name: "empty data on the slow path is not audio", in: `{"type":"Audio","data":{"audio":""}}`, typ: "audio"},
		{name: "line breaks only are not audio", in: `{"type":"audio","data":"\r\n"}`, typ: "audio"},
		{name: "typed audio without a payload", in: `{"type":"audio"}`, wantErr: true},
		{name: "typed audio with null data", in: `{"type":"chunk","data":null}`, wantErr: true},
		{name: "typed audio with a numeric payload", in: `{"type":"audio","data":{"audio":5}}`, wantErr: true},
		{name: "typed audio, bad base64", in: `{"type":"audio","audio":"!!!"}`, typ: "audio", undecodable: true},
		{name: "a transcript's audio field is not audio", in: `{"type":"final_transcript","transcript":"x","audio":"` + b64 + `"}`, typ: "final_transcript"},
		{name: "Flushed", in: `{"type":"Flushed"}`, typ: "flushed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodeFrame([]byte(tc.in), nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if tc.audio == nil {
				if d.msg == nil || d.msg.Type != tc.typ || d.audio != nil || d.msg.undecodable != tc.undecodable {
					t.Fatalf("decoded %+v, want a message of type %q, undecodable %v", d, tc.typ, tc.undecodable)
				}
				return
			}
			if d.msg != nil || !bytes.Equal(d.audio, tc.audio) || d.sequence != tc.seq {
				t.Fatalf("decoded audio %v seq %d msg %v, want %v seq %d", d.audio, d.sequence, d.msg, tc.audio, tc.seq)
			}
		})
	}
}

// TestDecodeBase64: every form of base64 that audio may come in decodes to
// the same bytes, at every length (so every padding), into a buffer
// exactly as large as decodeBase64 asks for; what is not base64 fails.
func TestDecodeBase64(t *testing.T) {
	t.Parallel()
	wrap := func(s string) string { // lines of 8, CRLF, as MIME wraps at 76
		var b strings.Builder
		for i := 0; i < len(s); i += 8 {
			b.WriteString(s[i:min(i+8, len(s))])
			b.WriteString("\r\n")
		}
		return b.String()
	}
	forms := map[string]func([]byte) string{
		"standard":          base64.StdEncoding.EncodeToString,
		"standard unpadded": base64.RawStdEncoding.EncodeToString,
		"url-safe":          base64.URLEncoding.EncodeToString,
		"url-safe unpadded": base64.RawURLEncoding.EncodeToString,
		"wrapped":           func(b []byte) string { return wrap(base64.StdEncoding.EncodeToString(b)) },
		"url-safe wrapped":  func(b []byte) string { return wrap(base64.RawURLEncoding.EncodeToString(b)) },
		"padded pieces joined": func(b []byte) string {
			h := len(b) / 2
			return base64.StdEncoding.EncodeToString(b[:h]) + base64.StdEncoding.EncodeToString(b[h:])
		},
		"url-safe padded pieces joined": func(b []byte) string {
			h := len(b) / 3
			return base64.URLEncoding.EncodeToString(b[:h]) + base64.URLEncoding.EncodeToString(b[h:])
		},
	}
	for name, encode := range forms {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for n := 1; n <= 40; n++ {
				want := make([]byte, n)
				for i := range want {
					want[i] = byte(251 + i*7) // 0xfb, 0xff, ...: both alphabets' last characters
				}
				in := encode(want)
				got, err := decodeBase64([]byte(in), nil)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("decodeBase64(%q) = %v, %v; want %v", in, got, err, want)
				}
			}
		})
	}
	for _, bad := range []string{"!!!!", "QQ===", "QUJD+-_/", "Q", "QUJDR", "QQ==Q"} {
		if got, err := decodeBase64([]byte(bad), nil); err == nil {
			t.Errorf("decodeBase64(%q) = %v, want an error", bad, got)
		}
	}
}

// TestScanAudio: the hand scanner reads every common JSON audio shape, and
// leaves to encoding/json whatever it might read differently.
func TestScanAudio(t *testing.T) {
	t.Parallel()
	const b64 = "AQID"
	for _, tc := range []struct {
		in   string
		seq  int64
		fast bool
	}{
		{`{"type":"audio_chunk","data":"` + b64 + `","sequence":7}`, 7, true},
		{`{"type":"Audio","data":{"audio":"` + b64 + `","format":"pcm"},"sequence":2}`, 2, true},
		{`{"type":"chunk","data":null,"audio":"` + b64 + `"}`, 0, true},
		{`{"audio":"` + b64 + `","isFinal":false,"normalizedAlignment":{"chars":["a","\"",","],"charStartTimesMs":[0,1.5e1]}}`, 0, true},
		{`{"type":"audio","data":"` + b64 + `","Data":"AAAA"}`, 0, false},
		{`{"type":"audio","data":{"audio":"` + b64 + `","Audio":"AAAA"}}`, 0, false},
		{`{"audio":"` + b64 + `","audio":"AAAA"}`, 0, false},
		{`{"type":"audio","data":"` + b64 + `","sequence":"3"}`, 0, false},
		{`{"type":"audio","data":"` + b64 + `","sequence":1.5}`, 0, false},
		{`{"type":"\u0061udio","data":"` + b64 + `"}`, 0, false},
		{`{"type":"AUDİO","data":"` + b64 + `"}`, 0, false},
		{`{"type":"final_transcript","audio":"` + b64 + `"}`, 0, false},
		{`{"type":"audio","data":"` + b64 + `"} x`, 0, false},
		{`{"audio":null,"isFinal":true}`, 0, false},
		{`{"audio":"` + b64 + `","isFinal":true}`, 0, false},
		{`{"audio":"` + b64 + `","IsFinal":1}`, 0, false},
		{`{"audio":"` + b64 + `","isFinal":null}`, 0, true},
		{`{"audio":"` + b64 + `","error":null}`, 0, false},
	} {
		payload, seq, _, fast := scanAudio([]byte(tc.in))
		if fast != tc.fast || (fast && (string(payload) != b64 || seq != tc.seq)) {
			t.Errorf("scanAudio(%s) = %q, %d, %v; want fast %v seq %d", tc.in, payload, seq, fast, tc.fast, tc.seq)
		}
	}
}

func TestErrorFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, code, msg string }{
		{"code and message", `{"type":"error","code":"rate_limit_exceeded","message":"slow down"}`, "rate_limit_exceeded", "slow down"},
		{"Error capitalised", `{"type":"Error","code":"provider_error","message":"upstream failed"}`, "provider_error", "upstream failed"},
		{"numeric status_code and description", `{"type":"error","status_code":429,"description":"slow down"}`, "429", "slow down"},
		{"top-level description only", `{"type":"error","description":"no such voice"}`, "", "no such voice"},
		{"error as a string", `{"type":"error","error":"boom"}`, "", "boom"},
		{"error as an object with message", `{"type":"error","error":{"message":"Text is too long"}}`, "", "Text is too long"},
		{"error as an object with code and message", `{"type":"error","error":{"code":"pronunciation_not_found","message":"no such word"}}`, "pronunciation_not_found", "no such word"},
		{"error object with numeric status_code and description", `{"type":"error","error":{"status_code":408,"description":"idle"}}`, "408", "idle"},
		{"error object typed", `{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}`, "invalid_request_error", "bad"},
		{"top-level code wins over the error object's", `{"type":"error","code":"a","error":{"code":"b","message":"m"}}`, "a", "m"},
		{"nested data with err_code and error", `{"type":"error","data":{"err_code":1008,"error":"nested"}}`, "1008", "nested"},
		{"nested data with code and message", `{"type":"error","data":{"code":"backend_error","message":"down"}}`, "backend_error", "down"},
		{"nested data with status_code and description", `{"type":"error","data":{"status_code":503,"description":"busy"}}`, "503", "busy"},
		{"nested data with an error object", `{"type":"error","data":{"error":{"code":"x","message":"deep"}}}`, "x", "deep"},
		{"top-level err_code", `{"type":"error","err_code":"backend_connection_failed","message":"BYOK key rejected"}`, "backend_connection_failed", "BYOK key rejected"},
		{"message as a number", `{"type":"error","code":"x","message":42}`, "x", "42"},
		{"message of another kind is ignored", `{"type":"error","code":"x","message":{"a":1},"description":"d"}`, "x", "d"},
		{"nothing", `{"type":"error"}`, "", ""},
		{"bounded on a rune boundary", `{"type":"error","code":"x","message":"` + strings.Repeat("é", 400) + `"}`, "x", strings.Repeat("é", 256)},
		{"code bounded", `{"type":"error","code":"` + strings.Repeat("c", 200) + `"}`, strings.Repeat("c", 128), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := decodeFrame([]byte(tc.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.err == nil {
				t.Fatalf("decodeFrame(%s) gave no error", tc.in)
			}
			code, msg := d.err.Code, d.err.Message
			if code != tc.code || msg != tc.msg || d.err.Kind != KindErrorFrame {
				t.Errorf("errorFrame(%s) = (%v, %q, %q), want (%q, %q)", tc.in, d.err.Kind, code, msg, tc.code, tc.msg)
			}
		})
	}
}

func TestTranscriptOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want Transcript
	}{
		{"AsyncAPI shape: no start, duration or from_finalize",
			`{"type":"final_transcript","transcript":"hi","confidence":0.9,"language":"en"}`,
			Transcript{Text: "hi", Confidence: 0.9, Language: "en"}},
		{"duration only",
			`{"type":"final_transcript","transcript":"hi","duration":1.5}`,
			Transcript{Text: "hi", Duration: 1500 * time.Millisecond, HasDuration: true}},
		{"duration zero is present",
			`{"type":"final_transcript","transcript":"","duration":0}`,
			Transcript{HasDuration: true}},
		{"words without start: times in the words",
			`{"type":"final_transcript","transcript":"hi there","words":[{"word":"hi","start":1.25,"end":1.5},{"word":"there","start":1.5,"end":2}]}`,
			Transcript{Text: "hi there", Words: []Word{{Word: "hi", Start: 1250 * time.Millisecond, End: 1500 * time.Millisecond}, {Word: "there", Start: 1500 * time.Millisecond, End: 2 * time.Second}}}},
		{"rich shape",
			`{"type":"final_transcript","transcript":"a","start":2,"duration":0.5,"from_finalize":false}`,
			Transcript{Text: "a", Start: 2 * time.Second, HasStart: true, Duration: 500 * time.Millisecond, HasDuration: true, HasFromFinalize: true}},
		{"from_finalize true",
			`{"type":"final_transcript","transcript":"a","from_finalize":true}`,
			Transcript{Text: "a", FromFinalize: true, HasFromFinalize: true}},
		{"from_finalize null is absent",
			`{"type":"final_transcript","transcript":"a","from_finalize":null}`,
			Transcript{Text: "a"}},
		{"from_finalize of another kind is absent, and costs nothing else",
			`{"type":"final_transcript","transcript":"a","from_finalize":"yes","start":1}`,
			Transcript{Text: "a", Start: time.Second, HasStart: true}},
		{"negative and absurd times are absent",
			`{"type":"final_transcript","transcript":"a","start":-1,"duration":1e300}`,
			Transcript{Text: "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := decodeFrame([]byte(tc.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := transcriptOf(d.msg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("transcriptOf(%s) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzDecodeFrame checks that no frame panics the decoder, that its output
// is bounded by its input, that audio is never empty (an empty payload is a
// message, counted as unknown), that error codes and messages stay valid
// UTF-8 within their bounds, that transcript times are never negative, and
// that the hand-written audio_chunk scanner agrees with encoding/json on
// every valid JSON object it accepts, the alignment included, which is
// never negative nor longer than its frame. The seeds in testdata cover
// every audio, end-of-turn, error, transcript and alignment shape SLNG's
// clients meet.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"audio_chunk","data":"AAECAw==","sequence":1}`,
		`{"sequence":2,"data":"AAECAw==","type":"audio_chunk","final":true}`,
		`{"type":"audio_chunk","data":"AAEC\/w==","sequence":3}`,
		`{"type":"ready","session_id":"sess_1","slng_request_id":"req_1"}`,
		`{"type":"error","code":"rate_limit_exceeded","message":"slow down"}`,
		`{"type":"error","data":{"status_code":503,"description":"busy"}}`,
		`{"type":"error","error":{"code":"x","message":"object"}}`,
		`{"type":"final_transcript","transcript":"hi","words":[{"word":"hi","start":0,"end":0.1,"speaker":"1"}]}`,
		`{"type":"final_transcript","transcript":"hi","confidence":0.9,"language":"en"}`,
		`{"type":"utterance_end","last_word_end":1.5}`,
		`{"type":"Audio","data":{"audio":"AAECAw=="}}`,
		`{"type":"chunk","audio":"AAECAw=="}`,
		`{"audio":"AAECAw==","isFinal":false}`,
		`{"audio":null,"isFinal":true}`,
		`{"audio":"AAECAw==","isFinal":false,"normalizedAlignment":{"chars":["H","i"],"charStartTimesMs":[0,3],"charsDurationsMs":[3,4]},` +
			`"alignment":{"chars":["H","i"],"charStartTimesMs":[0,3],"charsDurationsMs":[3,4]}}`,
		`{"audio":"AAECAw==","alignment":null,"normalized_alignment":{"chars":["\u00e9"],"char_start_times_ms":[0.5],"char_durations_ms":[1e2]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeFrame(b, nil)
		if err != nil {
			return
		}
		if len(d.audio) > len(b) {
			t.Fatalf("%d bytes of audio from a %d-byte frame", len(d.audio), len(b))
		}
		if d.msg == nil && len(d.audio) == 0 {
			t.Fatalf("%q decoded to empty audio", b)
		}
		align := readAlignment(d.align)
		if align != nil {
			if len(align.Chars) > len(b) {
				t.Fatalf("%d aligned characters from a %d-byte frame", len(align.Chars), len(b))
			}
			for _, ch := range align.Chars {
				if ch.Start < 0 || ch.Duration < 0 || !utf8.ValidString(ch.Text) {
					t.Fatalf("aligned character %+v from %q", ch, b)
				}
			}
		}
		if d.msg != nil {
			if d.audio != nil {
				t.Fatalf("%q decoded to both audio and a message", b)
			}
			code, msg := errorFrame(d.msg).Code, errorFrame(d.msg).Message
			if len(code) > 128 || len(msg) > 512 || !utf8.ValidString(code) || !utf8.ValidString(msg) {
				t.Fatalf("errorOf = (%q, %q)", code, msg)
			}
			tr := transcriptOf(d.msg)
			if tr.Start < 0 || tr.Duration < 0 || tr.HasStart != (d.msg.Start != nil && *d.msg.Start >= 0 && *d.msg.Start <= maxSeconds) ||
				(tr.FromFinalize && !tr.HasFromFinalize) {
				t.Fatalf("transcriptOf(%q) = %+v", b, tr)
			}
			return
		}
		if _, _, _, fast := scanAudio(b); !fast || !json.Valid(b) {
			return
		}
		// The full decode alone must decode the same audio, sequence and
		// alignment.
		want, err := decodeJSON(b, nil)
		if err != nil || want.msg != nil || !bytes.Equal(want.audio, d.audio) || want.sequence != d.sequence {
			t.Fatalf("scanner decoded %x seq %d from %q, encoding/json %x seq %d msg %v (%v)", d.audio, d.sequence, b, want.audio, want.sequence, want.msg, err)
		}
		if wantAlign := readAlignment(want.align); !reflect.DeepEqual(wantAlign, align) {
			t.Fatalf("scanner read the alignment %+v from %q, encoding/json %+v", align, b, wantAlign)
		}
	})
}

// audioChunk20ms is a JSON audio_chunk carrying 20 ms of 24 kHz LINEAR16
// (960 bytes), the size SLNG streams.
func audioChunk20ms() []byte {
	pcm := make([]byte, 960)
	for i := range pcm {
		pcm[i] = byte(i * 7)
	}
	return []byte(`{"type":"audio_chunk","data":"` + base64.StdEncoding.EncodeToString(pcm) + `","sequence":12345}`)
}

// BenchmarkDecodeAudioChunk measures the JSON audio_chunk hot path with the
// reader's reused buffer: it should not allocate.
func BenchmarkDecodeAudioChunk(b *testing.B) {
	frame := audioChunk20ms()
	dst := make([]byte, 0, 1024)
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		d, err := decodeFrame(frame, dst)
		if err != nil || len(d.audio) != 960 {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeJSONAudioShapes measures JSON audio shapes other than a
// flat audio_chunk, which scanAudio reads too: 20 ms of audio each.
func BenchmarkDecodeJSONAudioShapes(b *testing.B) {
	pcm := make([]byte, 960)
	b64 := base64.StdEncoding.EncodeToString(pcm)
	for name, frame := range map[string]string{
		"elevenlabs": `{"audio":"` + b64 + `","isFinal":false}`,
		"data.audio": `{"type":"audio","data":{"audio":"` + b64 + `"}}`,
	} {
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			in := []byte(frame)
			b.SetBytes(960)
			b.ReportAllocs()
			for b.Loop() {
				d, err := decodeFrame(in, dst)
				if err != nil || len(d.audio) != 960 {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeAudioChunkEncodingJSON is the same frame through
// encoding/json alone, the cost the scanner avoids.
func BenchmarkDecodeAudioChunkEncodingJSON(b *testing.B) {
	frame := audioChunk20ms()
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		var m struct {
			Type     string `json:"type"`
			Data     []byte `json:"data"`
			Sequence int64  `json:"sequence"`
		}
		if err := json.Unmarshal(frame, &m); err != nil || len(m.Data) != 960 {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadBinaryFrame measures reading a 960-byte binary frame into a
// reader slot whose buffer is reused: it should not allocate.
func BenchmarkReadBinaryFrame(b *testing.B) {
	pcm := make([]byte, 960)
	r := bytes.NewReader(pcm)
	var s slot
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(pcm)
		var err error
		s.raw, err = readAll(r, s.raw[:0])
		if err != nil || len(s.raw) != 960 {
			b.Fatal(err)
		}
	}
}
