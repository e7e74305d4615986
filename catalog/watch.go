package catalog

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/filewatch"
)

// Metrics are the catalog file's metrics.
type Metrics struct {
	reloads *prometheus.CounterVec
	models  prometheus.Gauge
}

// NewMetrics registers the catalog's metrics with reg; nil registers
// nothing (for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speech_gateway_catalog_reloads_total",
			Help: "Catalog file reloads after a change, by result (ok, error: the previous catalog stays).",
		}, []string{"result"}),
		models: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "speech_gateway_catalog_models",
			Help: "Models in the catalog in force.",
		}),
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.models)
	}
	return m
}

// Options configure Watch and Static. The zero value of every field is its
// documented default.
type Options struct {
	// Reload is how often the file is checked for changes. Default 5 s;
	// negative never re-reads it.
	Reload time.Duration
	// Logger receives reloads; nil discards them.
	Logger *zap.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Check, if set, must accept a catalog before it is in force: Watch
	// fails on the file as it is, and a changed file it refuses leaves
	// the previous catalog, as one that does not parse does. It says what
	// else the catalog must agree with (the gateway's default voice).
	Check func(*Catalog) error
}

// DefaultOptions are the options Watch and Static use for a zero Options:
// every knob at its documented default.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Reload == 0 {
		o.Reload = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// Live is the catalog in force: a file re-read when it changes (Watch), or
// a fixed catalog (Static). Close stops the file's watcher.
type Live struct {
	cur   atomic.Pointer[Catalog]
	m     *Metrics
	log   *zap.Logger
	check func(*Catalog) error // nil: none
	stop  func()
}

// Watch reads the catalog file at path and checks it every opts.Reload: a
// changed file that parses and that opts.Check accepts is in force at
// once; any other leaves the previous catalog in force, counted and
// logged. It fails when the file cannot be read, parsed or accepted now.
// The caller must Close the result.
func Watch(path string, opts Options) (*Live, error) {
	opts = opts.withDefaults()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	l := &Live{m: opts.Metrics, log: opts.Logger.Named("catalog"), check: opts.Check}
	c, err := l.parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.set(c)
	l.log.Info("catalog", zap.String("file", path), zap.Int("models", c.Len()))
	l.stop = func() {}
	if opts.Reload > 0 {
		l.stop = filewatch.New(path, b, l.reload, l.unusable).Start(opts.Reload)
	}
	return l, nil
}

// Static returns c as the catalog in force, for good.
func Static(c *Catalog, opts Options) *Live {
	opts = opts.withDefaults()
	l := &Live{m: opts.Metrics, log: opts.Logger.Named("catalog"), stop: func() {}}
	l.set(c)
	return l
}

// Current returns the catalog in force. It does not block.
func (l *Live) Current() *Catalog { return l.cur.Load() }

// Close stops watching the file; Current keeps answering.
func (l *Live) Close() { l.stop() }

func (l *Live) set(c *Catalog) {
	l.cur.Store(c)
	l.m.models.Set(float64(c.Len()))
}

// parse parses a file's content and has the catalog checked.
func (l *Live) parse(content []byte) (*Catalog, error) {
	c, err := Parse(content)
	if err == nil && l.check != nil {
		err = l.check(c)
	}
	return c, err
}

// reload puts a changed file in force, if it parses and is accepted.
func (l *Live) reload(content []byte) error {
	c, err := l.parse(content)
	if err != nil {
		return err
	}
	l.set(c)
	l.m.reloads.WithLabelValues("ok").Inc()
	l.log.Info("catalog reloaded", zap.Int("models", c.Len()))
	return nil
}

// unusable reports a file that cannot be read, or changed but does not
// parse or is not accepted.
func (l *Live) unusable(err error) {
	l.m.reloads.WithLabelValues("error").Inc()
	l.log.Error("catalog file unreadable or invalid; the previous catalog stays in force", zap.Error(err))
}
