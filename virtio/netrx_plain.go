package virtio

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// readAheadLen is how much of each receive buffer NetRX.PeekPlain
// prefetches: a virtio-net header (for reading) and the Ethernet header
// after it (for writing) wherever the buffer starts in a cache line
// (virtio_user puts the header at the end of one, before the frame).
const readAheadLen = 64

// PlainBuf is a receive buffer found by NetRX.PeekPlain: the one
// device-writable buffer of an available chain, and, once
// NetRX.PlainFrame filled it, how many bytes were written into it.
type PlainBuf struct {
	b     []byte // the buffer, in guest memory
	gpa   uint64 // its guest physical address
	head  uint16 // the chain's head descriptor (packed: its Buffer ID)
	flags uint16 // packed: the descriptor's flags, for Rewind's shadow
	n     uint32 // bytes written (header and frame), set by PlainFrame
}

// PeekPlain is WritePlain's one-buffer path for a batch of frames, in
// three steps: PeekPlain looks at up to len(bufs) available chains and
// stores, in ring order, those that are one device-writable descriptor (no
// NEXT, no INDIRECT, non-zero length) whose buffer lies in the region of
// the last lookup, up to the first that is not; PlainFrame writes a
// frame's header into one of them and returns where its bytes go; and
// CommitPlain consumes the first k chains and pushes their used elements,
// as k WritePlain calls that took the one-buffer path would have. Nothing
// is consumed before CommitPlain: a chain PeekPlain stopped at, or that
// the caller did not fill, is left to WritePlain/Write, which read and
// validate it again.
//
// The batch is the point: the receive path is bound by its stores into
// guest memory, whose cache misses commit in order. With every descriptor
// read first (loads, whose misses overlap) and the frames then written in
// one loop with no call but the copy, fewer stores of the backend's own
// (spilled registers, return addresses) sit between two frames' guest
// stores in the store buffer, and more frames' misses are in flight at
// once (perf, loop-64).
//
// PeekPlain returns how many entries of bufs it filled, at most 64: 0 when the queue
// is broken, when no chain is available, or when the next one is anything
// else (then WritePlain or Write decides, with every check of Pop). On a
// packed ring it takes what writePlainPacked takes (peekPlainPacked,
// netrx_plain_packed.go). One goroutine at a time, as for the Queue.
func (r *NetRX) PeekPlain(bufs []PlainBuf) int {
	q := r.q
	if q.packed {
		return r.peekPlainPacked(bufs)
	}
	if q.err != nil {
		return 0
	}
	if q.lastAvail == q.availCache {
		// As Pop: acquire, so that the ring entries and descriptors are
		// read after avail->idx (virtio 1.2 §2.7.13.2). An index that
		// moved by more than the queue size is left to Pop, which breaks
		// the queue.
		idx := ring.LoadAcquire16(q.availIdx)
		if idx-q.lastAvail > q.size {
			return 0
		}
		q.availCache = idx
	}
	k := min(len(bufs), int(q.availCache-q.lastAvail), popAhead)
	// Two passes, as popReadable: the heads (copied once) with their
	// descriptors prefetched, then the descriptors with the first
	// readAheadLen bytes of each buffer prefetched (the header and a
	// small frame's bytes: the receive path is bound by its stores into
	// these lines, which the driver last held, perf loop-64).
	var heads [popAhead]uint16
	var lines [2 * popAhead]uintptr
	m := 0
	for ; m < k; m++ {
		slot := uint32((q.lastAvail+uint16(m))&q.mask) * 2
		head := binary.LittleEndian.Uint16(q.availRing[slot : slot+2])
		if head >= q.size {
			break
		}
		heads[m] = head
		lines[m] = ring.Addr(q.desc, int(head)*descSize)
	}
	ring.Prefetch(lines[:m])
	rg := &q.regions[q.hint]
	// A buffer over the rings themselves (the driver's own memory, so
	// only a hostile or broken driver's) is left to WritePlain: it reads
	// each chain after the previous frame was written and stores each
	// used element right after its frame, the batch reads every chain
	// first and stores the used elements after every frame, so such a
	// frame would end up different (the split twin of what
	// FuzzPackedPlainBatch found on packed rings). Compared by host
	// address: one piece of memory may be mapped at two guest addresses.
	rings := q.ringSpans()
	i := 0
	for ; i < m; i++ {
		head := heads[i]
		// Each descriptor is read once, into locals; only they are used.
		d := q.desc[uint32(head)*descSize : uint32(head)*descSize+descSize : uint32(head)*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := uint64(binary.LittleEndian.Uint32(d[8:12]))
		if binary.LittleEndian.Uint16(d[12:14]) != descFWrite || length == 0 {
			break
		}
		off := addr - rg.gpa
		if off >= rg.size || length > rg.size-off {
			break
		}
		b := rg.data[off : off+length : off+length]
		if rings.overlap(ring.Addr(b, 0), uintptr(length)) {
			break
		}
		bufs[i] = PlainBuf{b: b, gpa: addr, head: head}
		lines[i] = ring.Addr(b, 0)
		lines[popAhead+i] = ring.Addr(b, int(min(length, readAheadLen))-1)
	}
	// The header's line for reading (plainHeader stores into it only
	// what differs: most often nothing, and the line stays shared with
	// the driver), the frame's first line for writing. Where they are
	// one line (a buffer that starts one), the write prefetch takes it.
	ring.Prefetch(lines[:i])
	ring.PrefetchW(lines[popAhead : popAhead+i])
	return i
}

// PlainFrame writes into b the header of a frame of n bytes without
// offload metadata (zeros but num_buffers 1, as WritePlain) and returns
// the n bytes after it, where the caller copies the frame; ok=false, and
// nothing written, when header and frame do not fit b (WritePlain would
// take another path: leave the frame to it). It is small enough to be
// inlined.
func (r *NetRX) PlainFrame(b *PlainBuf, n int) (frame []byte, ok bool) {
	end := uint64(r.hdrLen) + uint64(n)
	if end > uint64(len(b.b)) {
		return nil, false
	}
	plainHeader(b.b, r.hdrLen, 1) // len(b.b) >= end >= r.hdrLen
	b.n = uint32(end)
	return b.b[r.hdrLen:end:end], true
}

// PlainFrameHdr is PlainFrame for a frame with offload metadata that
// goes to the guest as it is (a partial checksum to a guest with
// VIRTIO_NET_F_GUEST_CSUM, virtio 1.2 §5.1.6.4.1): it writes hdr, with
// num_buffers 1, where PlainFrame writes zeros. hdr is not changed.
func (r *NetRX) PlainFrameHdr(b *PlainBuf, hdr *NetHdr, n int) (frame []byte, ok bool) {
	end := uint64(r.hdrLen) + uint64(n)
	if end > uint64(len(b.b)) {
		return nil, false
	}
	h := b.b[:r.hdrLen:r.hdrLen] // len(b.b) >= end >= r.hdrLen
	hdr.encodeLegacy(h)
	if r.hdrLen == NetHdrSize {
		binary.LittleEndian.PutUint16(h[NetHdrSizeLegacy:], 1)
	}
	b.n = uint32(end)
	return b.b[r.hdrLen:end:end], true
}

// MergeFrame writes one frame across the leading buffers of bufs (as
// PeekPlain returned them, in ring order) as Write does with
// VIRTIO_NET_F_MRG_RXBUF (virtio 1.2 §5.1.6.4: the header, its num_buffers
// the number of buffers used, at the start of the first buffer, the
// frame's bytes after it, each buffer filled before the next) and returns
// how many buffers it used, each with the bytes written in it recorded for
// CommitPlain. hdr nil writes zeros but num_buffers (WritePlain's header);
// otherwise hdr's NumBuffers is set. It writes nothing and returns 0
// without VIRTIO_NET_F_MRG_RXBUF, when the first buffer is shorter than
// the header (Write breaks the queue: §5.1.6.3.1) or when bufs cannot hold
// header and frame: Write decides then, on the same chains.
//
// Many frames in a row, each over several buffers, then take one PeekPlain
// and one CommitPlain, where Write pops, walks and pushes chain by chain
// (issue 14: a 64 KiB GSO frame in 4 KiB buffers is 17 chains).
func (r *NetRX) MergeFrame(bufs []PlainBuf, hdr *NetHdr, payload [][]byte) int {
	if !r.mergeable || len(bufs) == 0 || len(bufs[0].b) < r.hdrLen {
		return 0
	}
	total := uint64(r.hdrLen)
	for _, p := range payload {
		total += uint64(len(p))
	}
	m := 0
	for room := uint64(0); room < total; m++ {
		if m == len(bufs) {
			return 0
		}
		room += uint64(len(bufs[m].b))
	}
	r.header(bufs[0].b, hdr, m)
	i, off := 0, r.hdrLen
	b := bufs[0].b
	for _, p := range payload {
		for len(p) > 0 {
			if off == len(b) {
				bufs[i].n = uint32(off)
				i++
				b, off = bufs[i].b, 0
			}
			k := copy(b[off:], p)
			off += k
			p = p[k:]
		}
	}
	bufs[i].n = uint32(off)
	return m
}

// CommitPlain consumes the chains of bufs, the first len(bufs) that the
// last PeekPlain returned (with no other call on the queue since), each
// filled by PlainFrame, and pushes one used element per chain with the
// bytes PlainFrame wrote (the caller Publishes, once per batch).
func (r *NetRX) CommitPlain(bufs []PlainBuf) {
	q := r.q
	if q.packed {
		r.commitPlainPacked(bufs)
		return
	}
	l := q.log.Load()
	for i := range bufs {
		b := &bufs[i]
		// Push, in line: a split queue, not broken, head < size (checked
		// by PeekPlain).
		slot := q.putUsed(b.head, b.n)
		if l != nil {
			l.Mark(b.gpa, uint64(b.n))
			l.markUsed(q, slot)
		}
	}
	q.lastAvail += uint16(len(bufs))
	if q.eventIdx && !q.notifyOff {
		q.setAvailEvent(q.lastAvail)
	}
}

// ringSpans are the host address ranges of a split queue's descriptor
// table, available ring and used ring.
type ringSpans [3]struct{ lo, hi uintptr }

// ringSpans returns q's (split).
func (q *Queue) ringSpans() ringSpans {
	var s ringSpans
	for i, p := range [3]struct {
		first []byte
		last  []byte
	}{{q.desc, q.desc}, {q.availFlags, q.availRing}, {q.usedFlags, q.usedRing}} {
		s[i].lo = ring.Addr(p.first, 0)
		s[i].hi = ring.Addr(p.last, len(p.last))
	}
	if q.eventIdx {
		// used_event after the avail ring, avail_event after the used one.
		s[1].hi += 2
		s[2].hi += 2
	}
	return s
}

// overlap reports whether the n bytes at host address lo overlap one of s.
func (s *ringSpans) overlap(lo, n uintptr) bool {
	hi := lo + n
	for i := range s {
		if lo < s[i].hi && s[i].lo < hi {
			return true
		}
	}
	return false
}
