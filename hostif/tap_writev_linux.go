//go:build linux

package hostif

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

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
	// list of the Syscall call itself, which keeps iov alive and unmoved
	// until the call returns (unsafe.Pointer rule 4). Each Iovec.Base is a
	// *byte, so the buffers it points to stay reachable through iov too.
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
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
	// (struct iovec), converted in the Syscall argument list itself
	// (unsafe.Pointer rule 4); its Base pointers keep the buffers
	// reachable.
	n, _, errno := unix.Syscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
