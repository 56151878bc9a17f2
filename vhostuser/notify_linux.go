package vhostuser

import (
	"fmt"

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
