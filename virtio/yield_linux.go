package virtio

import "golang.org/x/sys/unix"

// yieldThread gives the worker's OS thread's CPU to another runnable thread
// if there is one (sched_yield(2)).
func yieldThread() { _, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
