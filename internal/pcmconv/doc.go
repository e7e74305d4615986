// Package pcmconv converts streams of 16-bit PCM audio, chunk by chunk:
// the sample rate (Resampler, a band-limited polyphase resampler for any
// ratio of two rates from 8000 to 48000 Hz), the number of channels
// (Downmixer, interleaved stereo or more to mono), and the encoding (Law,
// G.711 μ-law and A-law to and from 16-bit samples, as ITU-T G.711 and
// its reference implementation in G.191 define them).
//
// The Resampler and the Downmixer keep what a chunk leaves over (a filter's history, half a sample,
// part of a frame) for the next, so that a stream cut into chunks of any
// size, 20 ms ones or single bytes, converts to exactly what the whole
// stream converts to at once: nothing clicks at a chunk's edge. None
// allocates once its buffers have grown to the chunk size.
//
// Samples are signed 16-bit integers, or their little-endian bytes
// (LINEAR16). A Resampler or Downmixer is owned by one goroutine; its
// methods must not be called concurrently. A Law keeps no state.
package pcmconv
