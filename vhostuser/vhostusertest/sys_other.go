//go:build !linux

package vhostusertest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// newSharedMemory returns an unlinked temporary file of size bytes mapped
// MAP_SHARED: memfd is Linux-only.
func newSharedMemory(name string, size int) (fd int, data []byte, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	path := filepath.Join(os.TempDir(), name+"-"+hex.EncodeToString(rnd[:]))
	fd, err = unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, nil, fmt.Errorf("shared memory file: %w", err)
	}
	_ = unix.Unlink(path)
	return sizeAndMap(fd, size)
}

// newEventFD returns a pipe where eventfd is missing, as QEMU does.
func newEventFD() (r, w int, err error) { return newPipe() }

// newShm stands for a POSIX shared memory object (QEMU's
// memory-backend-shm, shm_open + shm_unlink): an unlinked temporary file,
// which the backend maps the same way.
func newShm(name string, size int) (fd int, data []byte, err error) {
	return newSharedMemory(name, size)
}
