package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// wavFormat is what speechctl needs from a WAV header.
type wavFormat struct {
	format     uint16 // 1 PCM, 6 A-law, 7 mu-law
	channels   uint16
	sampleRate uint32
	bits       uint16
}

// maxChunk bounds the RIFF chunks parseWAV reads into memory, other than
// the audio itself.
const maxChunk = 1 << 20

// parseWAV reads a RIFF/WAVE header and returns the format and a reader
// positioned at the audio data, bounded by the data chunk's size.
func parseWAV(r io.Reader) (wavFormat, io.Reader, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return wavFormat{}, nil, fmt.Errorf("not a WAV file: %w", err)
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return wavFormat{}, nil, errors.New("not a WAV file: no RIFF/WAVE header")
	}
	var f wavFormat
	haveFmt := false
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return wavFormat{}, nil, fmt.Errorf("WAV file without a data chunk: %w", err)
		}
		id, size := string(ch[0:4]), binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > maxChunk {
				return wavFormat{}, nil, fmt.Errorf("WAV fmt chunk of %d bytes", size)
			}
			b := make([]byte, size+size%2)
			if _, err := io.ReadFull(r, b); err != nil {
				return wavFormat{}, nil, fmt.Errorf("WAV fmt chunk: %w", err)
			}
			f = wavFormat{
				format:     binary.LittleEndian.Uint16(b[0:2]),
				channels:   binary.LittleEndian.Uint16(b[2:4]),
				sampleRate: binary.LittleEndian.Uint32(b[4:8]),
				bits:       binary.LittleEndian.Uint16(b[14:16]),
			}
			if f.format == 0xFFFE && size >= 26 { // WAVE_FORMAT_EXTENSIBLE: the subformat says
				f.format = binary.LittleEndian.Uint16(b[24:26])
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return wavFormat{}, nil, errors.New("WAV data chunk before its fmt chunk")
			}
			return f, io.LimitReader(r, int64(size)), nil
		default:
			// LIST, fact and the like: skip, word-aligned.
			if _, err := io.CopyN(io.Discard, r, int64(size)+int64(size%2)); err != nil {
				return wavFormat{}, nil, fmt.Errorf("WAV %q chunk: %w", id, err)
			}
		}
	}
}

// maxChannels is the most channels the gateway mixes to mono.
const maxChannels = 8

// encoding maps a WAV format to the gateway's audio encoding name, or
// explains why speechctl cannot send it. The gateway mixes the channels
// of a file of several to mono.
func (f wavFormat) encoding() (string, error) {
	if f.channels < 1 || f.channels > maxChannels {
		return "", fmt.Errorf("the WAV file has %d channels; the gateway takes 1 to %d", f.channels, maxChannels)
	}
	switch {
	case f.format == 1 && f.bits == 16:
		return "AUDIO_ENCODING_LINEAR16", nil
	case f.format == 7 && f.bits == 8:
		return "AUDIO_ENCODING_MULAW", nil
	case f.format == 6 && f.bits == 8:
		return "AUDIO_ENCODING_ALAW", nil
	}
	return "", fmt.Errorf("WAV format %d with %d bits per sample is not supported; use 16-bit PCM, mu-law or A-law", f.format, f.bits)
}

// writeWAVHeader writes a 44-byte header for 16-bit mono PCM of dataLen
// bytes.
func writeWAVHeader(w io.Writer, sampleRate, dataLen uint32) error {
	var h [44]byte
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+dataLen)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], 1)
	binary.LittleEndian.PutUint32(h[24:], sampleRate)
	binary.LittleEndian.PutUint32(h[28:], sampleRate*2)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], dataLen)
	_, err := w.Write(h[:])
	return err
}
