// Package pcmconv converts streams of 16-bit PCM audio, chunk by chunk:
// the sample rate (Resampler, a band-limited polyphase resampler for any
// ratio of two rates from 8000 to 48000 Hz) and the number of channels
// (Downmixer, interleaved stereo or more to mono).
//
// Both keep what a chunk leaves over (a filter's history, half a sample,
// part of a frame) for the next, so that a stream cut into chunks of any
// size, 20 ms ones or single bytes, converts to exactly what the whole
// stream converts to at once: nothing clicks at a chunk's edge. Neither
// allocates once its buffers have grown to the chunk size.
//
// It does not encode or decode: samples are signed 16-bit integers, or
// their little-endian bytes (LINEAR16). A converter is owned by one
// goroutine; its methods must not be called concurrently.
package pcmconv
