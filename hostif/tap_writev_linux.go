//go:build linux

package hostif

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The TAP's reads and writes are system calls the Go scheduler is not told
// about (unix.RawSyscall, not unix.Syscall). A queue's fd is the process's
// own and nonblocking (openQueue): every call returns at once, with EAGAIN
// when there is nothing to read or no room, so no P waits on it for long.
// Told, the scheduler pays for each call twice (runtime.entersyscall and
// exitsyscall), and the first call after the process was idle wakes its
// monitor thread (sysmon) from its deep sleep, which then ticks every 20 us
// for the next millisecond (runtime.sysmon: syscallWake). A TCP download
// through the TAP goes idle and busy again hundreds of times a second, and
// each thread wake-up costs several microseconds of CPU on a VM (issue 14:
// sysmon was 10 % of vhost-arcnet's CPU in that download). Measured,
// TCP internet -> guest, 12 rounds each interleaved: vhost-arcnet CPU per
// Gbit/s 9.16 -> 8.75 % of a core (medians).
//
// Blocking calls on a TAP fd (none today) must go through unix.Syscall.

// writev writes the scatter list iov to fd with one writev(2) (for a TAP:
// one frame, Documentation/networking/tuntap.rst §3.2) and returns the
// number of bytes written. iov must not be empty.
//
// unix.Writev takes [][]byte and builds its iovec array anew on every call,
// on the heap once a frame has more than a few segments; the TAP keeps one
// preallocated []unix.Iovec per queue instead, which needs the raw system
// call.
func writev(fd int, iov []unix.Iovec) (int, error) {
	// SAFETY: iov is a live, non-empty Go slice of unix.Iovec, the layout of
	// struct iovec; the pointer is converted to uintptr in the argument
	// list of the RawSyscall call itself, which keeps iov alive and unmoved
	// until the call returns (unsafe.Pointer rule 4). Each Iovec.Base is a
	// *byte, so the buffers it points to stay reachable through iov too.
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// readv reads one frame from fd into the scatter list iov with one
// readv(2) and returns the number of bytes read; iov must not be empty.
// The same preallocated-array reason as writev.
func readv(fd int, iov []unix.Iovec) (int, error) {
	// SAFETY: as writev: iov is a live, non-empty Go slice of unix.Iovec
	// (struct iovec), converted in the RawSyscall argument list itself
	// (unsafe.Pointer rule 4); its Base pointers keep the buffers
	// reachable.
	n, _, errno := unix.RawSyscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// read reads one frame from fd into b (not empty) with one read(2).
func read(fd int, b []byte) (int, error) {
	// SAFETY: b is a live, non-empty Go slice; the pointer to its first
	// byte is converted in the RawSyscall argument list itself (rule 4).
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
