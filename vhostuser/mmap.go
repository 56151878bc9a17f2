package vhostuser

import (
	"fmt"
	"math/bits"
	"os"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// maxMapSize bounds one mapping (a region or the log): 128 TiB, the user
// address space of x86-64 and of arm64 with 47-bit VAs. Larger sizes are a
// frontend error, not an mmap failure.
const maxMapSize = 1 << 47

// mapShared maps size bytes of fd at offset with MAP_SHARED, read-write,
// and returns the whole mapping (for munmap) and the requested bytes.
//
// mmap needs a page-aligned offset (a huge-page-aligned one on hugetlbfs,
// whose st_blksize is the huge page size), while vhost-user's mmap_offset
// need not be: the mapping starts at the aligned-down offset. The file must
// be long enough (checked with fstat): touching a MAP_SHARED page past the
// end of its file raises SIGBUS, which would take the whole process down.
func mapShared(fd int, offset, size uint64) (full, data []byte, err error) {
	if size == 0 {
		return nil, nil, fmt.Errorf("%w: size 0", ErrBadMemory)
	}
	if size > maxMapSize {
		return nil, nil, fmt.Errorf("%w: size %#x exceeds %#x", ErrBadMemory, size, uint64(maxMapSize))
	}
	end, carry := bits.Add64(offset, size, 0)
	if carry != 0 || end > 1<<62 {
		return nil, nil, fmt.Errorf("%w: offset %#x + size %#x overflows", ErrBadMemory, offset, size)
	}
	align, err := checkMapFile(fd, end)
	if err != nil {
		return nil, nil, err
	}
	mapOff := offset &^ (align - 1)
	delta := offset - mapOff
	mapLen := (delta + size + align - 1) &^ (align - 1)
	full, err = unix.Mmap(fd, int64(mapOff), int(mapLen), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: mmap %d bytes at offset %#x: %w", ErrBadMemory, mapLen, mapOff, err)
	}
	return full, full[delta : delta+size : delta+size], nil
}

// mapAlign returns the alignment mmap needs for a file whose st_blksize is
// blksize: the page size, or the huge page size on hugetlbfs.
func mapAlign(blksize int64) uint64 {
	align := uint64(os.Getpagesize())
	if b := uint64(blksize); blksize > 0 && b > align && b <= 1<<30 && b&(b-1) == 0 {
		align = b
	}
	return align
}

// mappedRegion is one guest memory region mapped into the backend.
type mappedRegion struct {
	virtio.Region
	full []byte // the whole mapping, for munmap
	// The file and offset it maps, and how many ADD_MEM_REG messages added
	// it (QEMU 7.2 sends ADD_MEM_REG and REM_MEM_REG once per queue pair:
	// memtable.go addMemReg).
	dev, ino, offset uint64
	refs             int
	// sealed: the file carries F_SEAL_SHRINK, so the frontend cannot
	// truncate it under the mapping (mmap_linux.go shrinkSealed).
	sealed bool
	// watch reports a fault in the mapping to the session
	// (virtio.WatchFaults); stopped before the munmap.
	watch *virtio.FaultWatch
}

// fileID returns the device and inode of the file fd refers to.
func fileID(fd int) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("%w: fstat: %w", ErrBadMemory, err)
	}
	return uint64(st.Dev), uint64(st.Ino), nil
}

// mapRegion validates r and maps it from fd. The fd may be closed after: the
// mapping stays. A fault inside the mapping (the frontend truncated the
// file) is reported to onFault (virtio.WatchFaults).
func mapRegion(fd int, r memRegion, onFault func(*virtio.Fault)) (*mappedRegion, error) {
	if r.Size == 0 {
		return nil, fmt.Errorf("%w: region at guest %#x has size 0", ErrBadMemory, r.GPA)
	}
	if _, c := bits.Add64(r.GPA, r.Size-1, 0); c != 0 {
		return nil, fmt.Errorf("%w: guest range %#x+%#x overflows", ErrBadMemory, r.GPA, r.Size)
	}
	if _, c := bits.Add64(r.UVA, r.Size-1, 0); c != 0 {
		return nil, fmt.Errorf("%w: user range %#x+%#x overflows", ErrBadMemory, r.UVA, r.Size)
	}
	dev, ino, err := fileID(fd)
	if err != nil {
		return nil, fmt.Errorf("region at guest %#x: %w", r.GPA, err)
	}
	full, data, err := mapShared(fd, r.MmapOffset, r.Size)
	if err != nil {
		return nil, fmt.Errorf("region at guest %#x: %w", r.GPA, err)
	}
	return &mappedRegion{
		Region: virtio.Region{GuestPhysAddr: r.GPA, Size: r.Size, UserAddr: r.UVA, Data: data},
		full:   full,
		dev:    dev, ino: ino, offset: r.MmapOffset, refs: 1,
		sealed: shrinkSealed(fd),
		watch:  virtio.WatchFaults(data, onFault),
	}, nil
}

func (m *mappedRegion) unmap() {
	if m.full != nil {
		m.watch.Stop()
		m.watch = nil
		_ = unix.Munmap(m.full)
		m.full, m.Data = nil, nil
	}
}

// mappedLog is the dirty log area of SET_LOG_BASE.
type mappedLog struct {
	full  []byte
	log   *virtio.DirtyLog
	size  uint64
	watch *virtio.FaultWatch
}

// maxLogSize bounds the dirty log: 4 GiB of bitmap covers guest physical
// addresses up to 2^47, the whole user address space.
const maxLogSize = 1 << 32

func mapLog(fd int, a logArea, onFault func(*virtio.Fault)) (*mappedLog, error) {
	if a.Size > maxLogSize {
		return nil, fmt.Errorf("%w: log of %d bytes exceeds %d", ErrBadMemory, a.Size, uint64(maxLogSize))
	}
	full, data, err := mapShared(fd, a.Offset, a.Size)
	if err != nil {
		return nil, fmt.Errorf("log area: %w", err)
	}
	return &mappedLog{full: full, log: virtio.NewDirtyLog(data), size: a.Size, watch: virtio.WatchFaults(data, onFault)}, nil
}

// covers reports whether the log has a bit for every page of [gpa, gpa+n).
func (l *mappedLog) covers(gpa, n uint64) bool {
	if n == 0 {
		return true
	}
	last, c := bits.Add64(gpa, n-1, 0)
	if c != 0 {
		return false
	}
	return (last>>virtio.LogPageShift)/8 < l.size
}

func (l *mappedLog) unmap() {
	if l.full != nil {
		l.watch.Stop()
		l.watch = nil
		_ = unix.Munmap(l.full)
		l.full = nil
	}
}
