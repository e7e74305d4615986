package slngsim

import (
	"strings"
	"time"

	"go.uber.org/zap"
)

// AudioForm is how the simulated TTS sends audio, for every model. It
// predates Profile.AudioShape, which can also choose other JSON shapes per
// model.
type AudioForm int

const (
	// AudioBinary leaves the choice to the profile (binary frames unless
	// its AudioShape says otherwise).
	AudioBinary AudioForm = iota
	// AudioJSON sends `audio_chunk` JSON messages with base64 data, the
	// documented form, on every model (AudioShapeAudioChunk).
	AudioJSON
)

// Options configure a simulator. The zero value of every field is its
// documented default.
type Options struct {
	// Addr is the listen address for Start. Default "127.0.0.1:0".
	Addr string
	// Region names the SLNG region the simulator stands for (a host
	// prefix such as "us-east"), in the refusals of models a profile
	// marks NotDeployed. Optional.
	Region string
	// APIKey is the key the simulator accepts (Bearer or ?token=). Empty
	// accepts any request, with or without a key, unless APIKeys is set.
	APIKey string
	// APIKeys are more accepted keys, for tests with several credentials.
	APIKeys []string
	// Realtime paces TTS audio at playback speed. Default: as fast as the
	// client reads.
	Realtime bool
	// AudioForm AudioJSON sends audio_chunk JSON on every model, whatever
	// the profile says.
	AudioForm AudioForm
	// ChunkDuration is the audio per TTS frame. Default 20 ms.
	ChunkDuration time.Duration
	// IdleTimeout reaps a socket whose client sent no text or binary frame
	// for this long (pings do not count): with the profile's ReapErrorFrame,
	// error idle_timeout_exceeded first; then close with its ReapCode
	// (rich: the frame, then 1008). Default 30 s; negative disables.
	IdleTimeout time.Duration
	// MaxConnectionDuration reaps any socket this old, as the idle timeout
	// does but with max_connection_duration_exceeded. Default 30 min, the
	// limit of some SLNG plans; negative disables.
	MaxConnectionDuration time.Duration
	// TTSTextTimeout and TTSTextTimeoutClose, when not 0, replace every
	// profile's TextTimeout and TextTimeoutClose; a negative TTSTextTimeout
	// disables the text timeout on every model.
	TTSTextTimeout      time.Duration
	TTSTextTimeoutClose int
	// MaxConcurrentPerKey limits open sockets per key; more are refused
	// with HTTP 429. 0 means no limit.
	MaxConcurrentPerKey int
	// ConnectLatency delays every handshake; ReadyLatency delays `ready`
	// after `init`; FirstAudioLatency delays each turn's first audio.
	ConnectLatency, ReadyLatency, FirstAudioLatency time.Duration
	// Latency is the network's one-way delay: every byte the simulator
	// receives and every byte it sends, so every frame in both directions
	// (pings, pongs and closes too) and the upgrade, is held this long,
	// plus or minus a uniform Jitter, without ever overtaking an earlier
	// one. A connection's first bytes also wait one round trip, TCP's
	// handshake. Twice Latency is the round trip a client sees. It applies
	// to the listener Start opens (not to Handler served elsewhere).
	// Default 0: loopback's own.
	Latency, Jitter time.Duration
	// CloseAfterAudioEnd, when set, decides each model's
	// Profile.CloseAfterTurn (close 1000 after each turn's end messages),
	// whatever the profile says. When it, Profile and ProfileFor are all
	// unset, models whose name contains "rime/" or "cartesia/" close after
	// each turn, as the simulator always did.
	CloseAfterAudioEnd func(model string) bool
	// Profile is the route behaviour of every model; nil means
	// ProfileRich(), the simulator's original behaviour. New copies it.
	Profile *Profile
	// ProfileFor, when set, picks each model's profile at its handshake
	// and takes precedence over Profile, e.g. Realistic. It may be called
	// concurrently.
	ProfileFor func(model string) Profile
	// Faults are injected per model; the key "*" applies to every model
	// without an entry of its own. See ParseFault.
	Faults map[string]Fault
	// Script, when set, picks the fault for each connection and takes
	// precedence over Faults; returning the zero Fault injects nothing.
	Script func(ConnInfo) Fault
	// BenchStamp writes the send time into the first 8 bytes of every TTS
	// audio payload (big-endian Unix nanoseconds), for latency benchmarks.
	// The audio is then no longer decodable.
	BenchStamp bool
	// Logger receives the simulator's logs; nil discards them. Keys are
	// never logged.
	Logger *zap.Logger
}

// profileFor resolves a model's profile: ProfileFor, else Profile, else
// the rich profile; then the older Options that still apply to every
// model, and the defaults.
func (s *Server) profileFor(model string) Profile {
	o := &s.opts
	var p Profile
	switch {
	case o.ProfileFor != nil:
		p = o.ProfileFor(model)
	case o.Profile != nil:
		p = *o.Profile
	default:
		p = ProfileRich()
		p.CloseAfterTurn = strings.Contains(model, "rime/") || strings.Contains(model, "cartesia/")
	}
	if o.CloseAfterAudioEnd != nil {
		p.CloseAfterTurn = o.CloseAfterAudioEnd(model)
	}
	if o.AudioForm == AudioJSON {
		p.AudioShape = AudioShapeAudioChunk
	}
	if o.TTSTextTimeout != 0 {
		p.TextTimeout = o.TTSTextTimeout
	}
	if o.TTSTextTimeoutClose != 0 {
		p.TextTimeoutClose = o.TTSTextTimeoutClose
	}
	return p.withDefaults()
}
