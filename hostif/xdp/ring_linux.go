package xdp

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ring is one of an AF_XDP socket's four single-producer single-consumer
// rings (include/uapi/linux/if_xdp.h): fill and completion carry UMEM
// addresses (__u64), RX and TX carry struct xdp_desc {__u64 addr; __u32
// len; __u32 options}. One side is the kernel; the other is us, and each
// ring is used by one goroutine at a time (the caller's lock).
type ring struct {
	mem   []byte // the whole mapping
	prod  *atomic.Uint32
	cons  *atomic.Uint32
	flags *atomic.Uint32
	descs []byte
	mask  uint32
	size  uint32
	esz   int // entry size: 8 or 16

	// Our side's index, and the last value of the kernel's we read: the
	// kernel's index is loaded again only when the cached one does not
	// suffice (one shared cache line touched per batch, not per entry).
	local, cached uint32
}

const (
	addrSize = 8  // a fill or completion ring entry
	descSize = 16 // an RX or TX ring entry
)

// mapRing maps the ring of entries entries at page offset pgoff of fd.
func mapRing(fd int, off unix.XDPRingOffset, pgoff int64, entries uint32, esz int) (*ring, error) {
	size := off.Desc + uint64(entries)*uint64(esz)
	mem, err := unix.Mmap(fd, pgoff, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	for _, o := range []uint64{off.Producer, off.Consumer, off.Flags} {
		if o%4 != 0 || o+4 > off.Desc {
			unix.Munmap(mem)
			return nil, fmt.Errorf("ring offsets %+v: not inside the ring header", off)
		}
	}
	return &ring{
		mem: mem, prod: indexAt(mem, off.Producer), cons: indexAt(mem, off.Consumer),
		flags: indexAt(mem, off.Flags), descs: mem[off.Desc:],
		mask: entries - 1, size: entries, esz: esz,
	}, nil
}

func (r *ring) unmap() {
	if r != nil && r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

// Producer side (fill, TX): local is our producer index, cached the
// kernel's consumer index.

// free returns how many entries can be produced now (at most want).
func (r *ring) free(want uint32) uint32 {
	n := r.size - (r.local - r.cached)
	if n < want {
		r.cached = r.cons.Load()
		n = r.size - (r.local - r.cached)
	}
	return min(n, want)
}

// putAddr writes a fill entry at producer position i (relative to local).
func (r *ring) putAddr(i uint32, addr uint64) {
	binary.NativeEndian.PutUint64(r.descs[int((r.local+i)&r.mask)*addrSize:], addr)
}

// putDesc writes a TX entry at producer position i (relative to local).
func (r *ring) putDesc(i uint32, addr uint64, n uint32) {
	d := r.descs[int((r.local+i)&r.mask)*descSize:]
	binary.NativeEndian.PutUint64(d, addr)
	binary.NativeEndian.PutUint32(d[8:], n)
	binary.NativeEndian.PutUint32(d[12:], 0)
}

// submit publishes n produced entries.
func (r *ring) submit(n uint32) {
	r.local += n
	r.prod.Store(r.local)
}

// Consumer side (RX, completion): local is our consumer index, cached the
// kernel's producer index.

// avail returns how many entries can be consumed now (at most want).
func (r *ring) avail(want uint32) uint32 {
	n := r.cached - r.local
	if n < want {
		r.cached = r.prod.Load()
		n = r.cached - r.local
	}
	return min(n, want)
}

// addr reads the completion entry at consumer position i.
func (r *ring) addr(i uint32) uint64 {
	return binary.NativeEndian.Uint64(r.descs[int((r.local+i)&r.mask)*addrSize:])
}

// desc reads the RX entry at consumer position i.
func (r *ring) desc(i uint32) (addr uint64, n uint32) {
	d := r.descs[int((r.local+i)&r.mask)*descSize:]
	return binary.NativeEndian.Uint64(d), binary.NativeEndian.Uint32(d[8:])
}

// release returns n consumed entries to the kernel.
func (r *ring) release(n uint32) {
	r.local += n
	r.cons.Store(r.local)
}

// needWakeup reports whether the kernel asks to be woken (XDP_RING_NEED_WAKEUP,
// set only with XDP_USE_NEED_WAKEUP).
func (r *ring) needWakeup() bool { return r.flags.Load()&unix.XDP_RING_NEED_WAKEUP != 0 }
