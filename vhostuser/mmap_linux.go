package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkMapFile checks that fd is a regular file (memfd, /dev/shm, hugetlbfs
// and file-backed guest memory all are) at least end bytes long, and
// returns the alignment mmap needs for it. Devices, pipes and sockets are
// refused: mapping them is either meaningless or unsafe.
func checkMapFile(fd int, end uint64) (align uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("%w: fstat: %w", ErrBadMemory, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("%w: fd is not a regular file or memfd (mode %#o)", ErrBadMemory, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < end {
		return 0, fmt.Errorf("%w: file of %d bytes is shorter than the %d the frontend maps", ErrBadMemory, st.Size, end)
	}
	return mapAlign(int64(st.Blksize)), nil
}
