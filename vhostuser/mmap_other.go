//go:build !linux

package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkMapFile checks that fd can back guest memory at least end bytes long
// and returns the alignment mmap needs for it. macOS frontends share guest
// memory through POSIX shm objects, which fstat may not report as regular
// files; their size is checked when fstat reports one.
func checkMapFile(fd int, end uint64) (align uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("%w: fstat: %w", ErrBadMemory, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Size < 0 || uint64(st.Size) < end {
			return 0, fmt.Errorf("%w: file of %d bytes is shorter than the %d the frontend maps", ErrBadMemory, st.Size, end)
		}
	case unix.S_IFDIR, unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFLNK:
		return 0, fmt.Errorf("%w: fd cannot back guest memory (mode %#o)", ErrBadMemory, st.Mode)
	default:
		if st.Size > 0 && uint64(st.Size) < end {
			return 0, fmt.Errorf("%w: object of %d bytes is shorter than the %d the frontend maps", ErrBadMemory, st.Size, end)
		}
	}
	return mapAlign(int64(st.Blksize)), nil
}

// shrinkSealed reports whether fd's file cannot shrink: file seals are
// Linux's alone, so never here (faults are contained: virtio/fault.go).
func shrinkSealed(int) bool { return false }
