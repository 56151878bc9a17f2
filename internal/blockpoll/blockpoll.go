// Package blockpoll waits on file descriptors in poll(2) without holding
// up the process's other goroutines.
//
// A goroutine that enters a system call through the syscall or unix
// packages keeps its P (Go's right to run Go code) for the length of the
// call: the runtime assumes most calls return at once. Another goroutine
// that is runnable then waits until the runtime's monitor thread (sysmon)
// notices the call has gone on and hands the P to another thread. sysmon
// checks every 20 us while it finds work and backs off to every 10 ms when
// it does not, and it hands a P over only the second time it sees the same
// call. In a backend confined to one CPU (GOMAXPROCS 1) every worker that
// went to sleep on its kick fd held the one P that way: the transmit worker
// spinning on a busy ring stood still for up to 20 ms, while the frontend
// filled the ring and dropped what it could not add (issue 14: virtio_user
// txonly dropped 7-9 % of its frames into vhost-arcnet, 1.3 % into DPDK's
// net_vhost, whose lcore never sleeps).
//
// Poll tells the runtime first that the call will block, as the runtime's
// own blocking waits do (runtime.entersyscallblock, which hands the P to
// another thread, or frees it, before the call), so the other goroutines
// go on at once.
package blockpoll
