package virtio

import (
	"math"
	"sync"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// LogPageShift is log2 of the dirty log page size: one bit per 4 KiB page
// of guest physical memory (vhost-user spec "Migration": VHOST_LOG_PAGE).
const LogPageShift = 12

// DirtyLog is the vhost-user dirty page log (VHOST_USER_PROTOCOL_F_LOG_SHMFD,
// vhost-user spec "Migration"): a bitmap shared with the frontend with one
// bit per 4 KiB guest page, page p at bit p%8 of byte p/8. The device marks
// every page it writes while the frontend migrates the guest.
//
// Mark is safe for concurrent use. Bits are set with atomic 32-bit ORs, so
// neither concurrent markers nor the frontend's atomic fetch-and-clear lose
// a bit.
type DirtyLog struct {
	bitmap []byte
	words  int        // leading whole 4-byte words usable with atomic OR
	mu     sync.Mutex // serialises the byte-wise tail (see markByte)
}

// NewDirtyLog returns a log writing into bitmap, the mapped log area.
// Pages beyond the bitmap are not logged.
func NewDirtyLog(bitmap []byte) *DirtyLog {
	l := &DirtyLog{bitmap: bitmap}
	if ring.Aligned(bitmap, 4) {
		l.words = len(bitmap) / 4
	}
	return l
}

// Len returns the size of the bitmap in bytes.
func (l *DirtyLog) Len() int { return len(l.bitmap) }

// Mark sets the bit of every page touched by the guest range [gpa, gpa+n).
func (l *DirtyLog) Mark(gpa, n uint64) {
	if n == 0 {
		return
	}
	first := gpa >> LogPageShift
	last := uint64(math.MaxUint64) >> LogPageShift
	if n-1 <= math.MaxUint64-gpa {
		last = (gpa + n - 1) >> LogPageShift
	}
	pages := uint64(len(l.bitmap)) * 8
	if first >= pages {
		return
	}
	last = min(last, pages-1)
	for p := first; p <= last; {
		w := p / 32
		if w >= uint64(l.words) {
			l.markBytes(p, last)
			return
		}
		lo := p % 32
		hi := min(last-w*32, 31)
		mask := (^uint32(0) >> (31 - hi)) &^ (1<<lo - 1)
		ring.Or32(l.bitmap[w*4:w*4+4], mask)
		p = w*32 + hi + 1
	}
}

// markBytes sets the bits of pages first..last that lie past the last
// whole aligned word (or in a misaligned bitmap) with plain byte writes,
// under l.mu. Racing with the frontend's fetch-and-clear can only leave a
// page marked that it had cleared: a spurious copy, never a lost page. The
// unlock is deferred: a fault in the log's mapping (fault.go) must not
// leave l.mu held.
func (l *DirtyLog) markBytes(first, last uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := first; p <= last; p++ {
		l.bitmap[p/8] |= 1 << (p % 8)
	}
}

// contains reports whether host address addr is inside the log's bitmap.
func (l *DirtyLog) contains(addr uintptr) bool {
	return ring.Contains(l.bitmap, addr)
}
