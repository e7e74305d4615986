package filewatch

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestWatcher: each new content is applied once, failed or not; a file
// that cannot be read is reported once per streak, and keeps what is in
// force.
func TestWatcher(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "file")
	write := func(s string) {
		// Written aside and renamed, as the kubelet swaps a mounted file.
		if err := os.WriteFile(path+".new", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	var applied, reported []string
	w := New(path, []byte("one"), func(b []byte) error {
		applied = append(applied, string(b))
		if string(b) == "bad" {
			return errors.New("bad content")
		}
		return nil
	}, func(err error) { reported = append(reported, err.Error()) })
	w.Check() // the content in force: nothing to do
	write("two")
	w.Check()
	w.Check()
	write("bad")
	w.Check()
	w.Check()
	os.Remove(path)
	w.Check()
	w.Check()
	write("bad") // the same bad content again: already reported
	w.Check()
	write("three")
	w.Check()
	if want := []string{"two", "bad", "three"}; !slices.Equal(applied, want) {
		t.Errorf("applied %q, want %q", applied, want)
	}
	if len(reported) != 2 || reported[0] != "bad content" || !strings.Contains(reported[1], "no such file") {
		t.Errorf("reported %q, want the bad content and one read failure", reported)
	}
}

// TestStart: a started watcher applies a change on its own, and stop
// waits for it.
func TestStart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	stop := New(path, []byte("old"), func(b []byte) error {
		got <- string(b)
		return nil
	}, func(err error) { t.Error(err) }).Start(time.Millisecond)
	defer stop()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case s := <-got:
		if s != "new" {
			t.Fatalf("applied %q, want new", s)
		}
	case <-timer.C:
		t.Fatal("the change was not applied")
	}
}

// TestSet: files read together are applied together when either changes;
// a half-done swap that apply refuses is put right by the next check that
// sees both files swapped.
func TestSet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	write := func(path, s string) {
		if err := os.WriteFile(path+".new", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "a1")
	write(b, "b1")
	var applied, reported []string
	w := NewSet([]string{a, b}, [][]byte{[]byte("a1"), []byte("b1")}, func(c [][]byte) error {
		pair := string(c[0]) + "+" + string(c[1])
		applied = append(applied, pair)
		if c[0][1] != c[1][1] { // a2 with b1: half swapped
			return errors.New("mismatched " + pair)
		}
		return nil
	}, func(err error) { reported = append(reported, err.Error()) })
	w.Check() // in force already
	write(a, "a2")
	w.Check() // half swapped: refused
	w.Check()
	write(b, "b2")
	w.Check() // both swapped
	write(b, "b2")
	w.Check() // the same content rewritten: nothing to do
	os.Remove(a)
	w.Check()
	write(a, "a2")
	w.Check() // back as it was: nothing to do
	if want := []string{"a2+b1", "a2+b2"}; !slices.Equal(applied, want) {
		t.Errorf("applied %q, want %q", applied, want)
	}
	if len(reported) != 2 || reported[0] != "mismatched a2+b1" || !strings.Contains(reported[1], "no such file") {
		t.Errorf("reported %q, want the mismatch and one read failure", reported)
	}
}
