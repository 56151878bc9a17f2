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

// shrinkSealed reports whether the file fd refers to carries F_SEAL_SHRINK
// (memfd_create(2), fcntl(2) "File Sealing"): then it cannot become
// shorter than the mapping, and no access to it can fault. QEMU seals its
// memfds so (memory-backend-memfd seal=on, the default); files that cannot
// be sealed (hugetlbfs, /dev/shm, memfds made without MFD_ALLOW_SEALING)
// report false, and a fault in them is contained (virtio/fault.go).
func shrinkSealed(fd int) bool {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	return err == nil && seals&unix.F_SEAL_SHRINK != 0
}
