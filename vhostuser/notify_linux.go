package vhostuser

import (
	"fmt"
	"math/bits"
	"unsafe"

	"golang.org/x/sys/unix"
)

// checkNotifyFD accepts an fd a kick, call or err notification can use: an
// eventfd (an anonymous inode, whose fstat mode has no file type bits), a
// pipe or a socket. A regular file or a device would turn Wait into a busy
// loop (always readable) or Notify into disk writes.
func checkNotifyFD(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%w: fstat: %w", ErrBadFDs, err)
	}
	switch st.Mode & unix.S_IFMT {
	case 0, unix.S_IFIFO, unix.S_IFSOCK:
		return nil
	}
	return fmt.Errorf("%w: not an eventfd or pipe (mode %#o)", ErrBadFDs, st.Mode)
}

// newWakeFD returns the read and write ends of a doorbell's wake fd: one
// nonblocking eventfd on Linux.
func newWakeFD() (r, w int, err error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	return fd, fd, err
}

func closeWakeFD(r, _ int) { _ = unix.Close(r) }

// kickReader reads a kick fd without waiting whether or not its open file
// description is nonblocking. That description is shared with the
// frontend (the fd came over the socket, SCM_RIGHTS), which can clear
// O_NONBLOCK on it at any moment (fcntl F_SETFL on its own copy): a plain
// read(2) of an empty kick fd then blocks, and a worker with it, and the
// session's end, which waits for the worker. preadv2(2) with RWF_NOWAIT
// (Linux 4.14; "RWF_NOWAIT ... If the operation would block, return
// EAGAIN") asks for that one call not to wait: eventfds take it since
// Linux 5.12 (their read became read_iter), pipes and sockets before that.
// Where the fd does not (EOPNOTSUPP: an older kernel; ENOSYS: no
// preadv2 before Linux 4.6, or an emulator without it, such as
// qemu-aarch64-static 7.2) it reads with read(2) from then on,
// nonblocking as long as the frontend leaves the flag alone.
type kickReader struct {
	iov      unix.Iovec // over the doorbell's buffer
	fallback bool       // RWF_NOWAIT refused once: read(2)
}

func (k *kickReader) init(buf []byte) {
	k.iov.Base = &buf[0]
	k.iov.SetLen(len(buf))
}

// read reads once into buf, the buffer init was given. Offset -1 is the
// file's current position (preadv2: "If offset is -1, then the current
// file offset is used and updated"), which an eventfd or a pipe ignores.
func (k *kickReader) read(fd int, buf []byte) (int, error) {
	if !k.fallback {
		n, refused, err := noWait(unix.SYS_PREADV2, fd, &k.iov)
		if !refused {
			return n, err
		}
		k.fallback = true
	}
	return unix.Read(fd, buf)
}

// noWait is preadv2(2) or pwritev2(2) (trap) of the one iovec iov at the
// file's current position (offset -1, split into the low and high words as
// x/sys does, offs2lohi) with RWF_NOWAIT. refused reports that the kernel
// does not take the call or the flag for fd (EOPNOTSUPP: an older kernel
// or an eventfd's write; ENOSYS: no such call before Linux 4.6, or an
// emulator without it, such as qemu-aarch64-static 7.2): the caller falls
// back to read(2) or write(2).
func noWait(trap uintptr, fd int, iov *unix.Iovec) (n int, refused bool, err error) {
	off := int64(-1)
	r, _, e := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(iov)), 1,
		uintptr(off), uintptr(uint64(off)>>(bits.UintSize-1)>>1), unix.RWF_NOWAIT)
	switch e {
	case 0:
		return int(r), false, nil
	case unix.EOPNOTSUPP, unix.ENOSYS:
		return 0, true, nil
	}
	return 0, false, e
}
