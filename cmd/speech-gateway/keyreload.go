package main

import (
	"errors"
	"strings"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/filewatch"
)

// keyWatcher takes a changed SLNG key from the file that holds it
// (SLNG_API_KEY_FILE, a mounted Secret) and hands it to onChange, so that
// a rotated key takes effect without restarting every replica. A file
// that is missing, empty or malformed for a moment (as during the swap)
// keeps the key in force. The key is never logged.
type keyWatcher struct {
	path     string
	current  string
	onChange func(key string)
	log      *zap.Logger
	reloads  *prom.CounterVec
	file     *filewatch.Watcher
}

// startKeyWatcher checks path every interval, from a key of current on,
// until the returned stop is called.
func startKeyWatcher(path string, interval time.Duration, current string, onChange func(string), log *zap.Logger, reg prom.Registerer) (stop func()) {
	return newKeyWatcher(path, current, onChange, log, reg).file.Start(interval)
}

// newKeyWatcher is the watcher of startKeyWatcher, not started.
func newKeyWatcher(path, current string, onChange func(string), log *zap.Logger, reg prom.Registerer) *keyWatcher {
	w := &keyWatcher{path: path, current: current, onChange: onChange, log: log,
		reloads: prom.NewCounterVec(prom.CounterOpts{
			Name: "speech_gateway_key_reloads_total",
			Help: "Reads of SLNG_API_KEY_FILE that found a changed key (changed) or could not use the file (error).",
		}, []string{"result"})}
	w.reloads.WithLabelValues("changed")
	w.reloads.WithLabelValues("error")
	reg.MustRegister(w.reloads)
	w.file = filewatch.New(path, nil, w.apply, w.report)
	return w
}

// errBadKeyFile is why a key file is not used; it never holds the key.
var errBadKeyFile = errors.New("the key file is empty or its key contains whitespace")

// apply takes a changed file's key, if it is one.
func (w *keyWatcher) apply(content []byte) error {
	key := strings.TrimSpace(string(content))
	if key == "" || strings.ContainsAny(key, " \t\r\n") {
		return errBadKeyFile
	}
	if key == w.current {
		return nil
	}
	w.current = key
	w.onChange(key)
	w.reloads.WithLabelValues("changed").Inc()
	w.log.Info("SLNG key changed: new sessions use the new key; standby sessions with the old one are retired; streams in flight keep their sessions",
		zap.String("path", w.path))
	return nil
}

// report counts and logs a file that cannot be used.
func (w *keyWatcher) report(err error) {
	w.reloads.WithLabelValues("error").Inc()
	w.log.Warn("cannot read the SLNG key file; keeping the key in use", zap.String("path", w.path), zap.Error(err))
}
