package slngpool

import (
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/speech-gateway/speech-gateway/internal/clock"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// Options configure a Pool. The zero value of every field is its documented
// default.
type Options struct {
	// DisableWarm turns off standby sessions and reuse: every acquire
	// dials and every release closes. Caps, retries and breakers remain.
	DisableWarm bool
	// MaxSessions caps upstream sessions, in use, idle and being dialled,
	// since SLNG limits concurrent connections per key. Default 256.
	MaxSessions int
	// MaxIdle caps standby sessions across all configurations (default 32)
	// and MaxIdlePerKey per configuration (default 2).
	MaxIdle, MaxIdlePerKey int
	// MaxIdleAge retires a standby session idle this long. It stays below
	// SLNG's idle timeout (not published; about 30 s is assumed), so that a
	// standby is never one SLNG is about to reap, even for a model that
	// ignores keepalives. Default 25 s. A configuration whose standbys SLNG
	// ends sooner gets a shorter age of its own (see the package doc).
	MaxIdleAge time.Duration
	// MaxSessionAge: a session older than this is not handed out, since
	// SLNG ends connections at a maximum duration (30 minutes on some
	// plans), even mid-reply. Default 20 min.
	MaxSessionAge time.Duration
	// RecentTTL keeps one standby session for each configuration used in
	// the last RecentTTL. Default 2 min; negative disables it (only
	// Prewarm profiles are kept warm).
	RecentTTL time.Duration
	// MaxRecent bounds the configurations remembered. Default 64.
	MaxRecent int
	// Prewarm lists configurations kept warm from the start.
	Prewarm []Profile
	// CheckoutPingTimeout bounds the proof of life of a standby lent
	// without SLNG heard from on it within HeardWithin: its first message
	// goes out at once, a ping right after it, and unless the pong or any
	// frame comes within this long, the session ends with a retryable
	// error (a stream then replays its turn on another session). Nothing
	// waits for the ping. Default 500 ms; negative lends standbys
	// unproven.
	CheckoutPingTimeout time.Duration
	// HeardWithin: a standby that SLNG was heard from on (any frame or
	// pong) this recently is lent with no proof of life. Default 1 s;
	// negative proves every standby.
	HeardWithin time.Duration
	// AcquireTimeout bounds the wait for capacity when MaxSessions are in
	// use, and for a DialRate token. Default 2 s.
	AcquireTimeout time.Duration
	// DialAttempts bounds dials per acquire for retryable failures
	// (default 3), waiting BackoffBase, doubling up to BackoffMax, with
	// jitter, between them (defaults 100 ms and 2 s). Retries stay within
	// the caller's deadline.
	DialAttempts            int
	BackoffBase, BackoffMax time.Duration
	// DialRate bounds SLNG dials per second, of every purpose, for the
	// whole pool, with a burst of twice as many: the last guard against
	// hammering SLNG, generous enough that callers do not meet it. A
	// caller waits for a token at most AcquireTimeout, within its
	// deadline, and otherwise gets ErrDialRate. Default 100; negative
	// means no limit.
	DialRate float64
	// BackgroundDialRate bounds the dials no caller waits for (standbys and
	// prewarm) per second, with a burst of twice as many. They also take
	// a DialRate token only while that bucket is at least half full, so
	// that callers come first. Default 5; negative means no limit.
	BackgroundDialRate float64
	// StandbyBackoffBase and StandbyBackoffMax space the background dials
	// of a configuration that fails: the wait doubles from the base to the
	// max, with jitter (defaults 1 s and 60 s). The same backoff pauses
	// background dials for an SLNG key that SLNG rate-limits without a
	// Retry-After.
	StandbyBackoffBase, StandbyBackoffMax time.Duration
	// StandbyFailures consecutive failures of a configuration (failed
	// dials, sessions that ended right after ready, standbys that died
	// unused) stop its background dials until a caller uses it again.
	// Default 3.
	StandbyFailures int
	// BreakerFailures consecutive failures that say SLNG is unwell open the
	// breaker of a model and region (default 5); it stays open for
	// BreakerOpenTimeout (default 10 s), then lets one probe through.
	BreakerFailures    int
	BreakerOpenTimeout time.Duration
	// EarlyDeath: a session that ends with an upstream error within this
	// long of ready counts against its breaker even when the error alone
	// would not. Default 5 s.
	EarlyDeath time.Duration
	// MaxBreakers bounds the breakers kept. Default 1024.
	MaxBreakers int
	// Budget, when set, bounds sessions per credential beyond this pool
	// (budget.go): a caller waits for it as for MaxSessions, and standbys
	// take only what callers would not miss.
	Budget Budget
	// Logger receives state changes; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Clock is the pool's time: its back-offs, pauses, ages, learned
	// lifetimes and the waits for capacity and dial tokens. Default the
	// real clock; tests move a fake one. Dial durations, deadlines of the
	// callers' contexts and the breakers' open timeout (gobreaker's own)
	// are real time whatever it is.
	Clock clock.Clock
}

// DefaultOptions are the options New uses for a zero Options: every knob
// at its documented default.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defRate := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxSessions, 256)
	def(&o.MaxIdle, 32)
	def(&o.MaxIdlePerKey, 2)
	def(&o.MaxRecent, 64)
	def(&o.DialAttempts, 3)
	def(&o.StandbyFailures, 3)
	def(&o.BreakerFailures, 5)
	def(&o.MaxBreakers, 1024)
	defDur(&o.MaxIdleAge, 25*time.Second)
	defDur(&o.MaxSessionAge, 20*time.Minute)
	defDur(&o.RecentTTL, 2*time.Minute)
	defDur(&o.CheckoutPingTimeout, 500*time.Millisecond)
	defDur(&o.HeardWithin, time.Second)
	defDur(&o.AcquireTimeout, 2*time.Second)
	defDur(&o.BackoffBase, 100*time.Millisecond)
	defDur(&o.BackoffMax, 2*time.Second)
	defDur(&o.StandbyBackoffBase, time.Second)
	defDur(&o.StandbyBackoffMax, time.Minute)
	o.StandbyBackoffMax = max(o.StandbyBackoffMax, o.StandbyBackoffBase)
	defDur(&o.BreakerOpenTimeout, 10*time.Second)
	defDur(&o.EarlyDeath, 5*time.Second)
	defRate(&o.DialRate, 100)
	defRate(&o.BackgroundDialRate, 5)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	return o
}

// newLimiter is a token bucket of r tokens a second with a burst of 2r
// (at least 1), or nil for no limit (r < 0).
func newLimiter(r float64) *rate.Limiter {
	if r < 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(r), max(1, int(math.Ceil(2*r))))
}

// Profile is a configuration to keep warm. Exactly one of TTS and STT is
// set.
type Profile struct {
	Endpoint slngclient.Endpoint
	TTS      *slngclient.TTSConfig
	STT      *slngclient.STTConfig
	// Count is the number of standby sessions, default 1 (at most
	// MaxIdlePerKey).
	Count int
}
