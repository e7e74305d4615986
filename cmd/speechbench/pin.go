package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// With --pin the relay under test (a gateway or the floor) runs alone on
// relayCPU, and this process (the load generator) and everything else it
// starts (the simulator, Redis) on every other CPU it may use (CPU 1 on a
// 2-CPU machine), so that a relay's capacity is its own and not shared
// with its neighbours.
const relayCPU = 0

// pinSelf moves every thread of this process off relayCPU, onto the other
// CPUs it may use, and returns how many those are. Threads started later
// inherit the mask of the thread that starts them, so once every thread is
// moved the process stays there; the loop catches threads started while it
// ran. GOMAXPROCS follows the new mask.
func pinSelf() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("--pin: read CPU affinity: %w", err)
	}
	if n := set.Count(); n < 2 || !set.IsSet(relayCPU) {
		return 0, fmt.Errorf("--pin needs at least 2 CPUs including CPU %d, one for the relay under test and the rest for the load generator and simulator; this process may use %d CPU(s)", relayCPU, n)
	}
	set.Clear(relayCPU)
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return 0, fmt.Errorf("--pin: %w", err)
		}
		moved := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			// A thread may have exited since the listing.
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return 0, fmt.Errorf("--pin: set CPU affinity of thread %d: %w", tid, err)
			}
			done[tid] = true
			moved++
		}
		if moved == 0 {
			break
		}
	}
	runtime.GOMAXPROCS(set.Count())
	return set.Count(), nil
}

// onCPU runs start, which starts a child process, from a thread allowed
// only cpu: a child inherits the affinity of the thread that forks it, and
// its Go runtime sizes GOMAXPROCS by it. The thread's mask is restored
// before it is unlocked.
func onCPU(cpu int, start func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return err
	}
	err := start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// cpusAllowed is the CPU list a process may run on, from /proc.
func cpusAllowed(pid int) string {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
