package main

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOnCPUPinsOnlyTheChild: a process started by onCPU may run only on
// that CPU, and one started afterwards from this process is not pinned.
func TestOnCPUPinsOnlyTheChild(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Fatalf("the benchmark's pinning needs 2 CPUs; this test runs on %d", all.Count())
	}
	start := func(pin bool) string {
		cmd := exec.Command("sleep", "30")
		var err error
		if pin {
			err = onCPU(relayCPU, cmd.Start)
		} else {
			err = cmd.Start()
		}
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}()
		return cpusAllowed(cmd.Process.Pid)
	}
	if got := start(true); got != "0" {
		t.Errorf("pinned child may run on CPUs %q, want \"0\"", got)
	}
	for range 20 { // on whichever threads the runtime picks
		if got := start(false); got == "0" {
			t.Fatalf("a child started after onCPU is pinned too (CPUs %q): the thread's mask was not restored", got)
		}
	}
}
