//go:build linux

package blockpoll

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poll waits, without a timeout, until one of fds is ready (ppoll(2) with
// no timeout and no signal mask), and reports how many are. The goroutine's
// P goes to the process's other goroutines for the length of the wait.
// EINTR is returned as an error, as unix.Poll does.
func Poll(fds []unix.PollFd) (int, error) {
	if len(fds) == 0 {
		return 0, unix.EINVAL
	}
	n, errno := ppoll(&fds[0], len(fds))
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// ppoll is the blocking system call between the runtime's
// entersyscallblock and exitsyscall. Between the two the goroutine has no
// P: nothing here may grow the stack, allocate or be instrumented
// (nosplit, norace), and only nosplit functions are called
// (syscall.RawSyscall6 and the assembly under it). fds is in the heap or
// in the caller's frame, which a goroutine in a system call keeps (stacks
// are not moved under a system call).
//
//go:nosplit
//go:norace
func ppoll(fds *unix.PollFd, n int) (uintptr, syscall.Errno) {
	entersyscallblock()
	r, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(fds)), uintptr(n), 0, 0, 0, 0)
	exitsyscall()
	return r, errno
}

// The runtime keeps both names for outside callers (go.dev/issue/67401:
// "Do not remove or change the type signature"); gVisor's netstack calls
// them around its own blocking poll for the same reason.

//go:linkname entersyscallblock runtime.entersyscallblock
func entersyscallblock()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()
