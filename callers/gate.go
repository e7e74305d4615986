package callers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/fleet"
	"github.com/speech-gateway/speech-gateway/internal/filewatch"
)

// Options configure a Gate. The zero value of every field is its
// documented default.
type Options struct {
	// Identity is the order of identity sources, comma-separated: xfcc
	// (Envoy/Istio x-forwarded-client-cert URI SAN), l5d (Linkerd
	// l5d-client-id), tls (the SPIFFE id, else the first DNS SAN, of a
	// client certificate the gRPC server verified), metadata[:KEY]
	// (default key x-caller-id), peer (the caller's address);
	// xfcc:By=PATTERN takes the header only from a proxy whose identity
	// matches PATTERN. Default DefaultIdentity.
	Identity string
	// TrustAssertedIdentity accepts, with an access policy or per-caller
	// quotas, an identity source that the caller asserts itself
	// (metadata): New refuses that combination otherwise
	// (ErrAssertedIdentity), since any caller could then claim any id.
	TrustAssertedIdentity bool
	// PolicyFile is the access policy (see Policy); "" allows every
	// caller everything.
	PolicyFile string
	// PolicyReload is how often the policy file is checked for changes.
	// Default 5 s.
	PolicyReload time.Duration
	// Defaults are the quotas of callers the policy does not override;
	// 0 or a negative value is no limit.
	Defaults Limits
	// MetricLabels bounds the callers with a metric label of their own
	// (beyond the ones the policy names), given to callers as they are
	// first admitted. Default 100.
	MetricLabels int
	// Logger receives policy reloads; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// DefaultOptions are the options New uses for a zero Options: every knob
// at its documented default.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Identity == "" {
		o.Identity = DefaultIdentity
	}
	if o.PolicyReload <= 0 {
		o.PolicyReload = 5 * time.Second
	}
	if o.MetricLabels <= 0 {
		o.MetricLabels = 100
	}
	// A negative default quota is none, as 0 is.
	o.Defaults.MaxStreams = max(o.Defaults.MaxStreams, 0)
	o.Defaults.CharactersPerMinute = max(o.Defaults.CharactersPerMinute, 0)
	o.Defaults.AudioSecondsPerMinute = max(o.Defaults.AudioSecondsPerMinute, 0)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// Gate identifies the caller of each stream, applies the access policy
// and the caller's quotas when it starts, counts its text as it comes, and
// meters what it used when it ends. Quotas are shared by the replicas
// through the Fleet when the Fleet is. Close stops its policy watcher.
type Gate struct {
	f       *fleet.Fleet
	sources []source
	opts    Options
	log     *zap.Logger
	m       *Metrics
	labels  *labels

	streams *fleet.Semaphore
	chars   *fleet.Counter
	audioMS *fleet.Counter

	policy atomic.Pointer[Policy] // nil: no policy

	stop func() // stops the policy file's watcher
}

// New returns a Gate whose quotas live in f. It fails when the identity
// order or the policy file is invalid.
func New(f *fleet.Fleet, opts Options) (*Gate, error) {
	if f == nil {
		return nil, errors.New("callers: a fleet is required")
	}
	opts = opts.withDefaults()
	d := opts.Defaults
	sources, err := parseSources(opts.Identity)
	if err != nil {
		return nil, err
	}
	// Access control: a policy, or quotas that a caller could escape by
	// claiming another id.
	controlled := opts.PolicyFile != "" || d.MaxStreams > 0 || d.CharactersPerMinute > 0 || d.AudioSecondsPerMinute > 0
	for _, src := range sources {
		if src.asserted() && controlled && !opts.TrustAssertedIdentity {
			return nil, fmt.Errorf("%w: %s, with an access policy or per-caller quotas", ErrAssertedIdentity, src)
		}
	}
	g := &Gate{
		f:       f,
		sources: sources,
		opts:    opts,
		log:     opts.Logger.Named("callers"),
		m:       opts.Metrics,
		labels:  newLabels(opts.MetricLabels),
		streams: f.Semaphore("caller_streams"),
		chars:   f.Counter("characters", time.Minute),
		audioMS: f.Counter("audio_ms", time.Minute),
		stop:    func() {},
	}
	for _, src := range sources {
		log := g.log.Info
		if src.asserted() && controlled {
			log = g.log.Warn
		}
		log("caller identity source", zap.Stringer("source", src), zap.String("trusted_by", src.trust()))
	}
	if opts.PolicyFile != "" {
		b, err := os.ReadFile(opts.PolicyFile)
		if err != nil {
			return nil, fmt.Errorf("access policy: %w", err)
		}
		p, err := ParsePolicy(b)
		if err != nil {
			return nil, err
		}
		g.setPolicy(p)
		g.stop = filewatch.New(opts.PolicyFile, b, g.reloadPolicy, g.policyUnusable).Start(opts.PolicyReload)
	}
	return g, nil
}

// Close stops watching the policy file.
func (g *Gate) Close() {
	g.stop()
}

func (g *Gate) setPolicy(p *Policy) {
	g.policy.Store(p)
	g.labels.setNamed(p.named())
}

// reloadPolicy puts a changed policy file in force, if it parses.
func (g *Gate) reloadPolicy(content []byte) error {
	p, err := ParsePolicy(content)
	if err != nil {
		return err
	}
	g.setPolicy(p)
	g.m.reloads.WithLabelValues("ok").Inc()
	g.log.Info("access policy reloaded", zap.Int("entries", len(p.Callers)))
	return nil
}

// policyUnusable reports a policy file that cannot be read, or changed but
// does not parse.
func (g *Gate) policyUnusable(err error) {
	g.m.reloads.WithLabelValues("error").Inc()
	g.log.Error("access policy unreadable or invalid; the previous one stays in force", zap.Error(err))
}

// Identify returns the caller id of the stream whose context is ctx, from
// the first identity source that has one, or Unknown.
func (g *Gate) Identify(ctx context.Context) string {
	return identify(ctx, g.sources)
}

// Limits returns the quotas of caller under the policy in force.
func (g *Gate) Limits(caller string) Limits {
	if p := g.policy.Load(); p != nil {
		return p.limits(caller, g.opts.Defaults)
	}
	return g.opts.Defaults
}

// Admit lets a stream of caller start, for rpc, or says why not:
// *DeniedError when the policy lets the caller use rpc with no model at
// all, *QuotaError when the caller is at its concurrent streams or has used
// up a rate for this minute. It runs when the stream starts, before its
// config names a model (see Stream.AllowModel). It waits for at most the
// fleet's Redis calls. The caller must End the stream it returns.
func (g *Gate) Admit(ctx context.Context, caller, rpc string) (*Stream, error) {
	if p := g.policy.Load(); p != nil && !p.AllowsRPC(caller, rpc) {
		g.m.refused.WithLabelValues(g.labels.known(caller), "CALLER_NOT_ALLOWED").Inc()
		return nil, &DeniedError{Caller: caller, RPC: rpc}
	}
	lim := g.Limits(caller)
	if lim.CharactersPerMinute > 0 && rpc != "Transcribe" {
		if used, left := g.chars.Value(ctx, caller); used >= lim.CharactersPerMinute {
			return nil, g.overQuota(caller, QuotaCharacters, lim.CharactersPerMinute, left)
		}
	}
	if lim.AudioSecondsPerMinute > 0 {
		if used, left := g.audioMS.Value(ctx, caller); used >= lim.AudioSecondsPerMinute*1000 {
			return nil, g.overQuota(caller, QuotaAudioSeconds, lim.AudioSecondsPerMinute, left)
		}
	}
	lease, err := g.streams.Acquire(ctx, caller, lim.MaxStreams, 0)
	switch {
	case errors.Is(err, fleet.ErrFull):
		return nil, g.overQuota(caller, QuotaStreams, int64(lim.MaxStreams), time.Second)
	case err != nil:
		return nil, err
	}
	return &Stream{g: g, caller: caller, rpc: rpc, label: g.labels.caller(caller), model: noModel, lim: lim, lease: lease}, nil
}

// Allows reports whether the access policy in force lets caller use rpc
// with model (always, without a policy). It counts nothing and does not
// wait: it answers what a caller may ask for, as the gateway's model
// catalog lists it.
func (g *Gate) Allows(caller, rpc, model string) bool {
	p := g.policy.Load()
	return p == nil || p.Allows(caller, rpc, model)
}

// noModel is the model label of a stream that never named a valid model.
const noModel = "none"

// AllowModel checks the model the stream's config names against the
// access policy: *DeniedError when the policy does not let the caller use
// it with the stream's RPC. It does not wait.
func (s *Stream) AllowModel(model string) error {
	g := s.g
	if p := g.policy.Load(); p != nil && !p.Allows(s.caller, s.rpc, model) {
		g.m.refused.WithLabelValues(g.labels.known(s.caller), "CALLER_NOT_ALLOWED").Inc()
		return &DeniedError{Caller: s.caller, RPC: s.rpc, Model: model}
	}
	s.model = g.labels.model(model)
	return nil
}

func (g *Gate) overQuota(caller, quota string, limit int64, retry time.Duration) error {
	g.m.refused.WithLabelValues(g.labels.known(caller), "CALLER_QUOTA_EXCEEDED").Inc()
	return &QuotaError{Caller: caller, Quota: quota, Limit: limit, RetryAfter: retry}
}

// Stream is one admitted stream of a caller.
type Stream struct {
	g           *Gate
	caller, rpc string
	// label and model are the metric labels of the caller and the model
	// (set by AllowModel; "" until then).
	label, model string
	lim          Limits
	lease        *fleet.Lease
	ended        atomic.Bool
}

// Charge counts characters of text about to be synthesized against the
// caller's characters per minute, or refuses the text with *QuotaError
// when they would go beyond it. It blocks for at most one Redis round trip,
// and only when the caller has such a quota.
func (s *Stream) Charge(ctx context.Context, characters int64) error {
	limit := s.lim.CharactersPerMinute
	if limit <= 0 {
		return nil
	}
	if used, left := s.g.chars.Value(ctx, s.caller); used+characters > limit {
		return s.g.overQuota(s.caller, QuotaCharacters, limit, left)
	}
	s.g.chars.Add(s.caller, characters)
	return nil
}

// End releases the stream's place among the caller's concurrent streams,
// counts its audio against the caller's audio seconds per minute, and
// meters u. Only the first call counts.
func (s *Stream) End(u Usage) {
	if !s.ended.CompareAndSwap(false, true) {
		return
	}
	s.lease.Release()
	g := s.g
	if s.lim.AudioSecondsPerMinute > 0 {
		g.audioMS.Add(s.caller, int64((u.SynthesizedSeconds+u.TranscribedSeconds)*1000))
	}
	caller, model := s.label, s.model
	g.m.streams.WithLabelValues(caller, model).Inc()
	if u.Characters > 0 {
		g.m.characters.WithLabelValues(caller, model).Add(float64(u.Characters))
	}
	if u.SynthesizedSeconds > 0 {
		g.m.synthesized.WithLabelValues(caller, model).Add(u.SynthesizedSeconds)
	}
	if u.TranscribedSeconds > 0 {
		g.m.transcribed.WithLabelValues(caller, model).Add(u.TranscribedSeconds)
	}
	if u.UpstreamSessionSeconds > 0 {
		g.m.sessionSeconds.WithLabelValues(caller, model).Add(u.UpstreamSessionSeconds)
	}
}
