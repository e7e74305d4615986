package pcmconv

import (
	"bytes"
	"testing"
)

func le(samples ...int16) []byte { return appendLinear16(nil, samples) }

func TestDownmix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		channels int
		in, want []byte
	}{
		{"the same signal in both", 2, le(1000, 1000, -5, -5), le(1000, -5)},
		{"the mean", 2, le(100, 300, -100, -300, 32767, 32767, -32768, -32768), le(200, -200, 32767, -32768)},
		{"halves round away from zero", 2, le(1, 2, -1, -2, 0, 1), le(2, -2, 1)},
		{"opposite phases cancel", 2, le(20000, -20000), le(0)},
		{"three channels", 3, le(3, 3, 4, -30, 0, 0), le(3, -10)},
		{"mono is a copy", 1, le(7, -7), le(7, -7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Whole, and cut at every byte.
			for _, step := range []int{len(tt.in), 1, 3} {
				d, err := NewDownmixer(tt.channels)
				if err != nil {
					t.Fatal(err)
				}
				var got []byte
				for off := 0; off < len(tt.in); off += step {
					got = d.Downmix(got, tt.in[off:min(off+step, len(tt.in))])
				}
				if !bytes.Equal(got, tt.want) || d.Pending() != 0 {
					t.Errorf("in chunks of %d: Downmix = %v (pending %d), want %v", step, got, d.Pending(), tt.want)
				}
			}
		})
	}
	d, err := NewDownmixer(2)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Downmix(nil, le(10, 20, 30)); !bytes.Equal(got, le(15)) || d.Pending() != 2 {
		t.Errorf("a frame and a half: %v, pending %d", got, d.Pending())
	}
	// Reset drops the half frame: the next stream starts on a frame.
	d.Reset()
	if got := d.Downmix(nil, le(40, 60)); !bytes.Equal(got, le(50)) || d.Pending() != 0 {
		t.Errorf("after Reset: %v, pending %d", got, d.Pending())
	}
	for _, n := range []int{0, MaxChannels + 1} {
		if _, err := NewDownmixer(n); err == nil {
			t.Errorf("NewDownmixer(%d) succeeded", n)
		}
	}
}
