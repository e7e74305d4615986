package slngclient

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
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
		{name: "bad base64", in: `{"type":"audio_chunk","data":"!!!"}`, wantErr: true},
		{name: "data not a string", in: `{"type":"audio_chunk","data":5}`, wantErr: true},
		{name: "ready", in: `{"type":"ready","session_id":"s1"}`, typ: "ready"},
		{name: "Error upper case", in: `{"type":"Error","code":"x"}`, typ: "error"},
		{name: "truncated", in: `{"type":"audio_chunk","data":"AAAA"`, wantErr: true},
		{name: "not json", in: `hello`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodeFrame([]byte(tc.in), nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if tc.typ != "" {
				if d.msg == nil || d.msg.Type != tc.typ {
					t.Fatalf("decoded %+v, want type %q", d, tc.typ)
				}
				return
			}
			if d.msg != nil || !bytes.Equal(d.audio, tc.audio) || d.sequence != tc.seq {
				t.Fatalf("decoded audio %v seq %d msg %v, want %v seq %d", d.audio, d.sequence, d.msg, tc.audio, tc.seq)
			}
		})
	}
}

func TestErrorOf(t *testing.T) {
	for _, tc := range []struct{ in, code, msg string }{
		{`{"type":"error","code":"rate_limit_exceeded","message":"slow down"}`, "rate_limit_exceeded", "slow down"},
		{`{"type":"error","status_code":429,"description":"slow down"}`, "429", "slow down"},
		{`{"type":"error","error":"boom"}`, "", "boom"},
		{`{"type":"error","data":{"err_code":1008,"error":"nested"}}`, "1008", "nested"},
		{`{"type":"error","code":"x","message":"` + strings.Repeat("é", 400) + `"}`, "x", strings.Repeat("é", 256)},
	} {
		d, err := decodeFrame([]byte(tc.in), nil)
		if err != nil {
			t.Fatal(err)
		}
		code, msg := errorOf(d.msg)
		if code != tc.code || msg != tc.msg {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", tc.in, code, msg, tc.code, tc.msg)
		}
	}
}

// FuzzDecodeFrame checks that no frame panics the decoder, that its output
// is bounded by its input, that error codes and messages stay valid UTF-8
// within their bounds, and that the hand-written audio_chunk scanner agrees
// with encoding/json on every valid JSON object it accepts.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"audio_chunk","data":"AAECAw==","sequence":1}`,
		`{"sequence":2,"data":"AAECAw==","type":"audio_chunk","final":true}`,
		`{"type":"audio_chunk","data":"AAEC\/w==","sequence":3}`,
		`{"type":"ready","session_id":"sess_1","slng_request_id":"req_1"}`,
		`{"type":"error","code":"rate_limit_exceeded","message":"slow down"}`,
		`{"type":"error","data":{"status_code":503,"description":"busy"}}`,
		`{"type":"final_transcript","transcript":"hi","words":[{"word":"hi","start":0,"end":0.1,"speaker":"1"}]}`,
		`{"type":"utterance_end","last_word_end":1.5}`,
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
		if d.msg != nil {
			code, msg := errorOf(d.msg)
			if len(code) > 128 || len(msg) > 512 || !utf8.ValidString(code) || !utf8.ValidString(msg) {
				t.Fatalf("errorOf = (%q, %q)", code, msg)
			}
			return
		}
		if _, _, fast := scanAudioChunk(b); !fast || !json.Valid(b) {
			return
		}
		// The slow path alone must decode the same audio and sequence.
		var msg serverMsg
		if err := json.Unmarshal(b, &msg); err != nil {
			t.Fatalf("valid JSON did not unmarshal: %v", err)
		}
		var s string
		if json.Unmarshal(msg.Data, &s) != nil || !strings.EqualFold(msg.Type, "audio_chunk") {
			t.Fatalf("scanner accepted %q, encoding/json sees type %q data %s", b, msg.Type, msg.Data)
		}
		want, err := base64.StdEncoding.DecodeString(s)
		if seq := sequenceOf(msg.Sequence); err != nil || !bytes.Equal(want, d.audio) || seq != d.sequence {
			t.Fatalf("scanner decoded %x seq %d, encoding/json %x seq %d (%v)", d.audio, d.sequence, want, seq, err)
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
