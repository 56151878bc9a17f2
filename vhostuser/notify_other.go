//go:build !linux

package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkNotifyFD accepts an fd a kick, call or err notification can use: a
// pipe (QEMU's fallback where eventfd is missing) or a socket. A regular
// file or a device would turn Wait into a busy loop (always readable) or
// Notify into disk writes.
func checkNotifyFD(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%w: fstat: %w", ErrBadFDs, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK:
		return nil
	}
	return fmt.Errorf("%w: not a pipe (mode %#o)", ErrBadFDs, st.Mode)
}

// newWakeFD returns the read and write ends of a doorbell's wake fd: a
// nonblocking pipe where eventfd is missing.
func newWakeFD() (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, -1, err
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			_ = unix.Close(p[0])
			_ = unix.Close(p[1])
			return -1, -1, err
		}
	}
	return p[0], p[1], nil
}

func closeWakeFD(r, w int) {
	_ = unix.Close(r)
	_ = unix.Close(w)
}

// kickReader reads a kick fd with read(2): outside Linux there is no
// per-call "do not wait" (preadv2 RWF_NOWAIT), so it relies on the fd's
// O_NONBLOCK, which the frontend shares and could clear.
type kickReader struct{}

func (k *kickReader) init([]byte) {}

func (k *kickReader) read(fd int, buf []byte) (int, error) { return unix.Read(fd, buf) }
