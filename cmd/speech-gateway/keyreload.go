package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// keyWatcher re-reads the file that holds the SLNG key (SLNG_API_KEY_FILE,
// a mounted Secret, which Kubernetes updates in place by swapping a
// symlink) and hands a changed key to onChange, so that a rotated key takes
// effect without restarting every replica. A file that is missing, empty or
// unreadable for a moment (as during the swap) keeps the key in force. The
// key is never logged.
type keyWatcher struct {
	path     string
	interval time.Duration
	current  string
	onChange func(key string)
	log      *zap.Logger
	reloads  *prom.CounterVec
	failing  bool // the last read failed; logged once per streak
}

func newKeyWatcher(path string, interval time.Duration, current string, onChange func(string), log *zap.Logger, reg prom.Registerer) *keyWatcher {
	w := &keyWatcher{path: path, interval: interval, current: current, onChange: onChange, log: log,
		reloads: prom.NewCounterVec(prom.CounterOpts{
			Name: "speech_gateway_key_reloads_total",
			Help: "Reads of SLNG_API_KEY_FILE that found a changed key (changed) or could not use the file (error).",
		}, []string{"result"})}
	w.reloads.WithLabelValues("changed")
	w.reloads.WithLabelValues("error")
	reg.MustRegister(w.reloads)
	return w
}

// run checks the file every interval until ctx ends.
func (w *keyWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check()
		}
	}
}

// errBadKeyFile is why a key file is not used; it never holds the key.
var errBadKeyFile = errors.New("the key file is empty or its key contains whitespace")

// check reads the file once and applies a changed key.
func (w *keyWatcher) check() {
	b, err := os.ReadFile(w.path)
	key := strings.TrimSpace(string(b))
	if err == nil && (key == "" || strings.ContainsAny(key, " \t\r\n")) {
		err = errBadKeyFile
	}
	if err != nil {
		w.reloads.WithLabelValues("error").Inc()
		if !w.failing {
			w.failing = true
			w.log.Warn("cannot read the SLNG key file; keeping the key in use", zap.String("path", w.path), zap.Error(err))
		}
		return
	}
	w.failing = false
	if key == w.current {
		return
	}
	w.current = key
	w.onChange(key)
	w.reloads.WithLabelValues("changed").Inc()
	w.log.Info("SLNG key changed: new sessions use the new key; standby sessions with the old one are retired; streams in flight keep their sessions",
		zap.String("path", w.path))
}
