//go:build !linux

package virtio

// yieldThread: no thread yield where sched_yield(2) is not at hand; the
// spin yields to the process's other goroutines only.
func yieldThread() {}
