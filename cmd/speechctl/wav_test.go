package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

func wavFile(t testing.TB, extra []byte, data []byte, rate uint32) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeWAVHeader(&b, rate, uint32(len(data))); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if extra != nil {
		// Insert a chunk between fmt and data.
		out = append(append(append([]byte(nil), out[:36]...), extra...), out[36:]...)
	}
	return append(out, data...)
}

func TestParseWAV(t *testing.T) {
	data := []byte{1, 2, 3, 4, 5, 6}
	list := append([]byte("LIST"), 3, 0, 0, 0, 'a', 'b', 'c', 0) // odd size, padded
	for name, file := range map[string][]byte{
		"plain":      wavFile(t, nil, data, 16000),
		"LIST chunk": wavFile(t, list, data, 16000),
	} {
		f, r, err := parseWAV(bytes.NewReader(append(file, 9, 9))) // trailing bytes past the data chunk
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := io.ReadAll(r)
		enc, err := f.encoding()
		if !bytes.Equal(got, data) || f.sampleRate != 16000 || err != nil || enc != "AUDIO_ENCODING_LINEAR16" {
			t.Fatalf("%s: data %v rate %d enc %q %v", name, got, f.sampleRate, enc, err)
		}
	}
	// The gateway mixes up to 8 channels to mono.
	for channels, ok := range map[uint16]bool{2: true, 8: true, 9: false, 0: false} {
		file := wavFile(t, nil, data, 8000)
		binary.LittleEndian.PutUint16(file[22:], channels)
		f, _, err := parseWAV(bytes.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.encoding(); (err == nil) != ok {
			t.Errorf("%d channels: %v", channels, err)
		}
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"not riff":  []byte("RIFX0000WAVEfmt "),
		"no data":   wavFile(t, nil, nil, 8000)[:36],
		"huge fmt":  append([]byte("RIFF\x00\x00\x00\x00WAVEfmt "), 0xff, 0xff, 0xff, 0x7f),
		"truncated": wavFile(t, nil, nil, 8000)[:30],
	} {
		if _, _, err := parseWAV(bytes.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParseWAV: no input panics the parser or makes it read more than the
// file holds.
func FuzzParseWAV(f *testing.F) {
	f.Add(wavFile(f, nil, []byte{1, 2, 3, 4}, 16000))
	f.Add(wavFile(f, append([]byte("LIST"), 1, 0, 0, 0, 'x', 0), []byte{1, 2}, 8000))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\x04\x00\x00\x00abcd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		format, r, err := parseWAV(bytes.NewReader(b))
		if err != nil {
			return
		}
		data, _ := io.ReadAll(r)
		if len(data) > len(b) {
			t.Fatalf("read %d bytes of audio from a %d-byte file", len(data), len(b))
		}
		_, _ = format.encoding()
	})
}
