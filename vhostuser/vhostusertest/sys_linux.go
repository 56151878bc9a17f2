package vhostusertest

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// newSharedMemory returns a memfd of size bytes mapped MAP_SHARED, the way
// QEMU's memory-backend-memfd shares guest RAM.
func newSharedMemory(name string, size int) (fd int, data []byte, err error) {
	fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return -1, nil, fmt.Errorf("memfd_create: %w", err)
	}
	return sizeAndMap(fd, size)
}

// newEventFD returns an eventfd, both the read and the write end of a
// notification.
func newEventFD() (r, w int, err error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return -1, -1, fmt.Errorf("eventfd: %w", err)
	}
	return fd, fd, nil
}
