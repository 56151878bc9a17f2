// Package mmsg is batched datagram I/O on Linux: recvmmsg(2) and
// sendmmsg(2) move several datagrams per system call. golang.org/x/sys/unix
// has no wrapper for them, so this package lays out struct mmsghdr itself
// (linux include/linux/socket.h: a struct msghdr followed by an unsigned
// int, padded to the alignment of the msghdr) and passes it to the raw
// system call. Package datapath's datagram frame sockets and the
// vs-gvproxy bench tool both use it.
package mmsg

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Msg is struct mmsghdr: the message header and, after the call, how many
// bytes of it moved.
type Msg struct {
	Hdr unix.Msghdr
	Len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// Call runs the system call trap (unix.SYS_RECVMMSG or unix.SYS_SENDMMSG)
// on fd for msgs with flags, and returns how many messages moved and the
// error number (0: none). It neither blocks nor retries: callers pass
// unix.MSG_DONTWAIT and wait for the socket through the netpoller
// (syscall.RawConn). msgs and everything its headers point to must stay
// alive for the call, which holds for memory the caller keeps a reference
// to.
func Call(trap, fd uintptr, msgs []Msg, flags int) (int, unix.Errno) {
	if len(msgs) == 0 {
		return 0, 0
	}
	// SAFETY: msgs is a Go slice the caller keeps alive for the call; the
	// kernel reads and writes at most len(msgs) entries of it.
	n, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}
