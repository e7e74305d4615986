// Package filewatch re-reads a file, or a set of files read together, on
// an interval and hands the content on when it changes. It serves files
// mounted from Kubernetes Secrets and ConfigMaps (the SLNG key, the access
// policy, a TLS certificate with its key), which the kubelet updates in
// place by swapping a symlink, so that a change takes effect without
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
	"slices"
	"time"

	"github.com/speech-gateway/speech-gateway/internal/poll"
)

// Watcher re-reads its files. Check must not be called concurrently with
// itself; Start runs it on its own goroutine.
type Watcher struct {
	paths  []string
	apply  func(contents [][]byte) error
	report func(error)

	last    [][]byte // the contents last handed to apply; nil: none
	failing bool     // the last read failed
}

// New returns a Watcher of path. current is the content already in force
// (nil: none). apply receives content that differs from the last content
// it was given (or from current), failed or not, so that one bad version
// is reported once. report receives what went wrong: a read failure once
// per streak of them (a missing file during a swap, say) and each error
// apply returns. A failure leaves whatever apply last accepted in force.
func New(path string, current []byte, apply func(content []byte) error, report func(error)) *Watcher {
	var last [][]byte
	if current != nil {
		last = [][]byte{current}
	}
	return NewSet([]string{path}, last, func(c [][]byte) error { return apply(c[0]) }, report)
}

// NewSet returns a Watcher of files that belong together, such as a
// certificate and its key: every check reads them all, and apply receives
// all their contents (in the order of paths) when any of them changed.
// Files swapped one after the other are then seen half-swapped at worst,
// which apply refuses and the next check, with both swapped, puts right.
// current, the contents in force, and the rest are as for New.
func NewSet(paths []string, current [][]byte, apply func(contents [][]byte) error, report func(error)) *Watcher {
	return &Watcher{paths: paths, apply: apply, report: report, last: current}
}

// Check reads the files once and applies changed contents.
func (w *Watcher) Check() {
	contents := make([][]byte, len(w.paths))
	for i, p := range w.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			if !w.failing {
				w.failing = true
				w.report(err)
			}
			return
		}
		contents[i] = b
	}
	w.failing = false
	if w.last != nil && slices.EqualFunc(contents, w.last, bytes.Equal) {
		return
	}
	w.last = contents
	if err := w.apply(contents); err != nil {
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
