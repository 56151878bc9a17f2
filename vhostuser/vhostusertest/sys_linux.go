package vhostusertest

import (
	"crypto/rand"
	"encoding/hex"
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

// newShm returns a POSIX shared memory object of size bytes mapped
// MAP_SHARED, unlinked at once, the way QEMU's memory-backend-shm makes
// guest RAM (shm_open + shm_unlink; glibc's shm_open is a file in
// /dev/shm). Without /dev/shm it falls back to a memfd.
func newShm(name string, size int) (fd int, data []byte, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	path := "/dev/shm/" + name + "-" + hex.EncodeToString(rnd[:])
	fd, err = unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return newSharedMemory(name, size)
	}
	_ = unix.Unlink(path)
	return sizeAndMap(fd, size)
}
