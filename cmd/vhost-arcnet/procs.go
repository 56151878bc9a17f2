package main

import (
	"os"
	"runtime"
)

// minProcs is the fewest Ps (GOMAXPROCS) the backend runs with when the
// GOMAXPROCS environment variable does not set them.
//
// Go gives a process confined to one CPU (taskset, a cgroup quota of one
// CPU) one P. A queue worker that goes to sleep takes it into a blocking
// poll(2) on its kick fd (vhostuser/notify.go), and Go's sysmon takes a P
// back from a system call after one or two of its 20 us ticks unless
// another P is idle, which with one P is never: every sleep of a worker
// longer than that had its P handed to another thread (runtime.handoffp,
// which wakes a thread to look for work on the same CPU), the worker's
// thread took an idle P back when the kick came (waking sysmon out of its
// deep sleep), and sysmon went back to its 20 us tick for at least a
// millisecond after each (runtime/proc.go sysmon and retake, Go 1.26).
// bench/runtime-cost.sh measured it with the backend on one CPU (issue
// 14): about one hand-off per worker sleep (80-95 a second), sysmon awake
// 1300-1500 times a second and 9-10 % of the backend's CPU. With a second
// P, idle while a worker sleeps, sysmon leaves the P of a worker in poll(2)
// alone for 10 ms: a kick finds the worker's thread still holding its P,
// and sysmon slows down to its 10 ms tick. A worker asleep for longer than
// that still has its P taken, once, so an idle backend still sleeps
// entirely (no P running: sysmon sleeps until a timer or a wake-up).
//
// The second P lets a second thread run Go code on the same CPU (the
// kernel shares the CPU between them); with more CPUs Go's default is
// kept. Setting runtime.GOMAXPROCS turns off the runtime's own updates of
// it (a CPU limit that changes later is not followed).
const minProcs = 2

// procsFor returns the GOMAXPROCS the process runs with: cur (the
// runtime's default, or the environment's GOMAXPROCS when env is set) if
// env is set or cur is at least minProcs, minProcs otherwise.
func procsFor(env string, cur int) int {
	if env != "" || cur >= minProcs {
		return cur
	}
	return minProcs
}

// raiseProcs sets GOMAXPROCS to procsFor's answer. It returns the value
// before and after.
func raiseProcs() (before, after int) {
	before = runtime.GOMAXPROCS(0)
	after = procsFor(os.Getenv("GOMAXPROCS"), before)
	if after != before {
		runtime.GOMAXPROCS(after)
	}
	return before, after
}
