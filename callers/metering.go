package callers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Other is the label value of callers (or models) beyond the label cap.
const Other = "other"

// maxModelLabels bounds the model label: callers may name any valid model.
const maxModelLabels = 100

// Usage is what one stream used, in billing units.
type Usage struct {
	// Characters synthesized: the text sent upstream, in Unicode code
	// points, each text once (replays to a new session are not counted
	// again).
	Characters int64
	// SynthesizedSeconds is the audio delivered to the caller, and
	// TranscribedSeconds the audio the caller sent, for uncompressed
	// encodings (LINEAR16, MULAW, ALAW); compressed audio counts 0.
	SynthesizedSeconds, TranscribedSeconds float64
	// UpstreamSessionSeconds is the time the stream held SLNG sessions.
	UpstreamSessionSeconds float64
}

// Metrics are the usage counters by caller and model, and the refusals
// by caller and reason.
type Metrics struct {
	characters, synthesized, transcribed, streams, sessionSeconds *prometheus.CounterVec
	refused                                                       *prometheus.CounterVec
	reloads                                                       *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg; a nil reg
// leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	// usage is a counter by caller and model.
	usage := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "speech_gateway_usage_" + name, Help: help + ", by caller and model."},
			[]string{"caller", "model"})
	}
	m := &Metrics{
		characters:     usage("characters_total", "Characters synthesized (sent to SLNG once each)"),
		synthesized:    usage("synthesized_seconds_total", "Seconds of audio synthesized and delivered (uncompressed encodings)"),
		transcribed:    usage("transcribed_seconds_total", "Seconds of audio sent for transcription (uncompressed encodings)"),
		streams:        usage("streams_total", "Streams admitted, counted when they end"),
		sessionSeconds: usage("upstream_session_seconds_total", "Seconds streams held SLNG sessions"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_caller_refused_total",
			Help: "Streams and texts refused by the access policy or a caller quota, by caller and reason " +
				"(CALLER_NOT_ALLOWED, CALLER_QUOTA_EXCEEDED).",
		}, []string{"caller", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_access_policy_reloads_total",
			Help: "Access policy file reloads after a change, by result (ok, error: the previous policy stays).",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.characters, m.synthesized, m.transcribed, m.streams, m.sessionSeconds, m.refused, m.reloads)
	}
	return m
}

// labels bounds the values of the caller and model labels: the first max
// callers admitted get their own, and so do the callers a policy names;
// the rest are Other. A caller that is only ever refused takes no label of
// its own, so that made-up caller ids cannot use the labels up. Models
// likewise, up to maxModelLabels.
type labels struct {
	max int

	mu      sync.Mutex
	callers map[string]bool
	named   map[string]bool
	models  map[string]bool
}

func newLabels(max int) *labels {
	return &labels{max: max, callers: map[string]bool{}, named: map[string]bool{}, models: map[string]bool{}}
}

// setNamed adds the ids a policy names. Those of earlier policies stay:
// a caller that a reloaded policy no longer allows keeps its label, so
// that its refusals show under its name. Operators write policies, so the
// set stays small.
func (l *labels) setNamed(ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.named[id] = true
	}
}

// known is id's label if it has one already, else Other.
func (l *labels) known(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.named[id] || l.callers[id] {
		return id
	}
	return Other
}

// caller is id's label, giving it one of its own while there are some.
func (l *labels) caller(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.named[id] {
		return id
	}
	return take(l.callers, id, l.max)
}

// model is model's label, giving it one of its own while there are some.
func (l *labels) model(model string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return take(l.models, model, maxModelLabels)
}

// take is v's label among those in set: v itself if set has it or has
// room for it (fewer than limit), which adds it, else Other.
func take(set map[string]bool, v string, limit int) string {
	if set[v] {
		return v
	}
	if len(set) < limit {
		set[v] = true
		return v
	}
	return Other
}
