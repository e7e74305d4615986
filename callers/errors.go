package callers

import (
	"errors"
	"fmt"
	"time"
)

// ErrAssertedIdentity is New's error for an identity source that the
// caller asserts itself (metadata) together with an access policy or
// per-caller quotas, without Options.TrustAssertedIdentity.
var ErrAssertedIdentity = errors.New("callers: an identity source that any caller can assert")

// DeniedError refuses a stream the access policy does not allow. The
// service turns it into PERMISSION_DENIED.
type DeniedError struct {
	Caller, RPC, Model string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("caller %q may not use %s with model %q", e.Caller, e.RPC, e.Model)
}

// The quotas a QuotaError names.
const (
	QuotaStreams      = "concurrent_streams"
	QuotaCharacters   = "characters_per_minute"
	QuotaAudioSeconds = "audio_seconds_per_minute"
)

// QuotaError refuses a stream, or a text, beyond a caller's quota. The
// service turns it into RESOURCE_EXHAUSTED with QuotaFailure and
// RetryInfo.
type QuotaError struct {
	Caller string
	// Quota is QuotaStreams, QuotaCharacters or QuotaAudioSeconds.
	Quota string
	Limit int64
	// RetryAfter is when retrying can succeed: the end of the minute for
	// a rate, a second for concurrent streams.
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("caller %q reached its quota of %d %s", e.Caller, e.Limit, e.Quota)
}
