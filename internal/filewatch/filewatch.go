// Package filewatch re-reads a file on an interval and hands its content
// on when it changes. It serves files mounted from Kubernetes Secrets and
// ConfigMaps (the SLNG key, the access policy), which the kubelet updates
// in place by swapping a symlink, so that a change takes effect without
// restarting every replica.
//
// It polls rather than using inotify: a symlink swap in a parent directory
// is what changes, and a read every few seconds costs nothing. It does not
// interpret the content; what is wrong with it is the apply func's to say.
package filewatch

import (
	"bytes"
	"context"
	"os"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/poll"
)

// Watcher re-reads one file. Check must not be called concurrently with
// itself; Start runs it on its own goroutine.
type Watcher struct {
	path   string
	apply  func(content []byte) error
	report func(error)

	last    []byte // the content last handed to apply
	failing bool   // the last read failed
}

// New returns a Watcher of path. current is the content already in force
// (nil: none). apply receives content that differs from the last content
// it was given (or from current), failed or not, so that one bad version
// is reported once. report receives what went wrong: a read failure once
// per streak of them (a missing file during a swap, say) and each error
// apply returns. A failure leaves whatever apply last accepted in force.
func New(path string, current []byte, apply func(content []byte) error, report func(error)) *Watcher {
	return &Watcher{path: path, apply: apply, report: report, last: current}
}

// Check reads the file once and applies a changed content.
func (w *Watcher) Check() {
	b, err := os.ReadFile(w.path)
	if err != nil {
		if !w.failing {
			w.failing = true
			w.report(err)
		}
		return
	}
	w.failing = false
	if w.last != nil && bytes.Equal(b, w.last) {
		return
	}
	w.last = b
	if err := w.apply(b); err != nil {
		w.report(err)
	}
}

// Start checks the file every interval on a goroutine of its own, until
// the returned stop is called; stop waits for the goroutine to exit.
func (w *Watcher) Start(interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		poll.Every(ctx, interval, func() bool {
			w.Check()
			return false
		})
	}()
	return func() { cancel(); <-done }
}
