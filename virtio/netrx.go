package virtio

import (
	"encoding/binary"
	"fmt"
)

// NetRX writes received frames into a virtio-net receive queue (virtio 1.2
// §5.1.6.4): one chain per frame, or with VIRTIO_NET_F_MRG_RXBUF as many
// chains as the frame needs, with num_buffers saying how many. It is the
// per-queue scratch state of that path and allocates nothing once warm.
// Like its Queue, a NetRX is used by one goroutine at a time.
type NetRX struct {
	q         *Queue
	mergeable bool
	hdrLen    int
	short     bool
	chains    []Chain
	hdr       [NetHdrSize]byte
	nres      int      // chains reserved (netrx_reserve.go), the first of chains
	resv      [][]byte // their buffers, the header's bytes left out
	committed int      // chains the last CommitReserved pushed
}

// NewNetRX returns the receive writer of q; it merges buffers iff
// VIRTIO_NET_F_MRG_RXBUF is among q's features.
func NewNetRX(q *Queue) *NetRX {
	return &NetRX{
		q:         q,
		mergeable: q.features&NetFMrgRxbuf != 0,
		hdrLen:    NetHdrLen(q.features),
		chains:    make([]Chain, 1, 4),
	}
}

// Mergeable reports whether the writer merges receive buffers.
func (r *NetRX) Mergeable() bool { return r.mergeable }

// TooBig reports whether the last Write that returned ok=false did so
// because the frame can not fit rather than because the queue has too few
// buffers right now: without VIRTIO_NET_F_MRG_RXBUF the first available
// chain is too small, with it a whole queue of buffers is too small.
// Retrying does not help; the caller should drop (and count) the frame.
func (r *NetRX) TooBig() bool { return r.short }

// Write copies one frame, the virtio-net header hdr followed by the
// concatenation of payload, into the receive queue and pushes the chains
// it used (the caller Publishes, once per batch). num_buffers is set by
// Write: 1 without VIRTIO_NET_F_MRG_RXBUF (virtio 1.2 §5.1.6.4.1: "the
// device MUST set num_buffers to 1"), else the number of chains used.
//
// ok=false, err=nil: not enough buffers; nothing was consumed (the chains
// it looked at are un-popped). A guest error breaks the queue and is
// returned.
func (r *NetRX) Write(hdr NetHdr, payload [][]byte) (ok bool, err error) {
	return r.write(&hdr, payload)
}

// WritePlain is Write with a header of zeros but num_buffers: a frame
// without checksum or segmentation metadata, the common case. It stores
// that header as two constants and reads no NetHdr.
func (r *NetRX) WritePlain(payload [][]byte) (ok bool, err error) {
	if r.q.packed {
		return r.writePlainPacked(payload) // packed_rx.go
	}
	return r.write(nil, payload)
}

// write is Write, or WritePlain when hdr is nil. hdr's NumBuffers is set.
func (r *NetRX) write(hdr *NetHdr, payload [][]byte) (ok bool, err error) {
	q := r.q
	r.short = false
	total := uint64(r.hdrLen)
	for _, p := range payload {
		total += uint64(len(p))
	}
	if hdr == nil {
		// The common case without a Chain: a chain of one writable
		// buffer that holds the frame. At 64 bytes the path is bound by
		// the stores into guest memory, which miss and commit in order:
		// every store less per frame (Chain fields, spilled arguments)
		// lets more frames' misses be in flight (perf, b2f-64).
		if b, gpa, head, ok := q.peekWritable(); ok && uint64(len(b)) >= total {
			q.take()
			plainHeader(b, r.hdrLen, 1) // len(b) >= total >= r.hdrLen
			off := r.hdrLen
			for _, p := range payload {
				off += copy(b[off:], p)
			}
			// Push, in line: a split queue, not broken, head < size
			// (checked by peekWritable).
			slot := q.putUsed(head, uint32(off))
			if l := q.log.Load(); l != nil {
				l.Mark(gpa, uint64(off))
				l.markUsed(q, slot)
			}
			return true, nil
		}
	}
	if !r.mergeable {
		c := &r.chains[0]
		if ok, err := q.Pop(c); !ok {
			return false, err
		}
		if err := r.check(c); err != nil {
			return false, err
		}
		if uint64(c.InLen) < total {
			q.Unpop(1)
			r.short = true
			return false, nil
		}
		r.fill(1, hdr, payload)
		return true, nil
	}
	n := 0
	var room uint64
	for room < total {
		if n == len(r.chains) {
			r.chains = append(r.chains, Chain{})
		}
		c := &r.chains[n]
		ok, err := q.Pop(c)
		if err != nil {
			return false, err
		}
		if !ok {
			q.Unpop(uint16(n))
			// Every descriptor of the queue is in the chains looked at:
			// the frame can never fit.
			r.short = n == int(q.size)
			return false, nil
		}
		n++
		if err := r.check(c); err != nil {
			return false, err
		}
		if n == 1 && c.InLen < uint32(r.hdrLen) {
			// virtio 1.2 §5.1.6.3.1: with MRG_RXBUF "the driver MUST
			// ... make each buffer at least the size of the struct
			// virtio_net_hdr".
			return false, q.brk(errShortRxHeader(c, r.hdrLen))
		}
		room += uint64(c.InLen)
	}
	r.fill(n, hdr, payload)
	return true, nil
}

// errShortRxHeader is the error of a mergeable receive chain shorter than
// the header.
func errShortRxHeader(c *Chain, hdrLen int) error {
	return fmt.Errorf("receive buffer at head %d: %d bytes, shorter than the %d-byte header: %w", c.Head, c.InLen, hdrLen, ErrBadChain)
}

// check rejects a receive chain with device-readable buffers (virtio 1.2
// §5.1.6.3: receive buffers are device-writable).
func (r *NetRX) check(c *Chain) error {
	if len(c.Out) != 0 {
		return r.q.brk(fmt.Errorf("receive chain at head %d has device-readable buffers: %w", c.Head, ErrBadChain))
	}
	return nil
}

// fill writes the header (hdr with num_buffers n, or zeros but num_buffers
// when hdr is nil) and payload across the first n chains of r.chains (room
// for all of it was checked) and pushes them.
func (r *NetRX) fill(n int, hdr *NetHdr, payload [][]byte) {
	if c := &r.chains[0]; n == 1 && len(c.In) == 1 {
		// Fast path: the whole frame goes into one contiguous buffer
		// (Write checked it is large enough).
		b := c.In[0].Buf
		// Straight into guest memory: encoding into r.hdr and copying
		// from there would load wide what was just stored narrow (see
		// NetHdr.Encode).
		r.header(b, hdr, 1)
		off := r.hdrLen
		for _, p := range payload {
			off += copy(b[off:], p)
		}
		if l := r.q.log.Load(); l != nil {
			l.Mark(c.In[0].GPA, uint64(off))
		}
		_ = r.q.Push(c.Head, uint32(off)) // head < size: it was popped
		return
	}
	w := rxWriter{r: r, n: n, c: &r.chains[0], log: r.q.log.Load()}
	if in := w.c.In; len(in) > 0 && len(in[0].Buf) >= r.hdrLen {
		// The header fits the first buffer (as good as always): encode
		// it in place, as the fast path does.
		r.header(in[0].Buf, hdr, n)
		if w.log != nil {
			w.log.Mark(in[0].GPA, uint64(r.hdrLen))
		}
		w.written = uint32(r.hdrLen)
		if w.cur.off = r.hdrLen; w.cur.off == len(in[0].Buf) {
			w.cur = cursor{seg: 1}
		}
	} else {
		r.header(r.hdr[:], hdr, n)
		w.write(r.hdr[:r.hdrLen])
	}
	for _, p := range payload {
		w.write(p)
	}
	// Push the chain being filled and any left: every popped chain goes
	// back to the driver (a zero-length one with 0 bytes written).
	for ; w.ci < n; w.ci++ {
		_ = r.q.Push(r.chains[w.ci].Head, w.written) // head < size: it was popped
		w.written = 0
	}
}

// header writes the r.hdrLen-byte header of a frame in n chains into b:
// hdr with num_buffers n, or with hdr nil zeros and num_buffers n, stored
// as constants (two stores). num_buffers: virtio 1.2 §5.1.6.4.1, 1 without
// VIRTIO_NET_F_MRG_RXBUF; absent from the legacy 10-byte header.
func (r *NetRX) header(b []byte, hdr *NetHdr, n int) {
	if hdr != nil {
		hdr.NumBuffers = uint16(n)
		hdr.encodeLen(b, r.hdrLen)
		return
	}
	plainHeader(b, r.hdrLen, n)
}

// plainHeader writes the hdrLen-byte header of zeros but num_buffers n into
// b, each of its two words stored only when b holds something else there.
// It is small enough to be inlined: the one-buffer path of write is bound
// by its stores into guest memory, and a call spilled its arguments (perf,
// b2f-64).
//
// Why not store the same bytes again: a driver that recycles its receive
// buffers finds the header it read last time in place (DPDK's virtio_user
// puts it in the headroom of an mbuf, which its transmit path leaves as it
// is when the values match), so the header's cache line can stay shared
// between the backend and the driver. A store, even of equal bytes, takes
// the line away from the driver's CPU, and its next read of num_buffers
// waits for it to come back: a perf of virtio_user (loopback, 64 B,
// packed rings, the two vCPUs far apart; issue 14) had 18 % of its time
// on that one load behind vhost-arcnet and none behind DPDK's net_vhost,
// which compares before it stores (ASSIGN_UNLESS_EQUAL). Measured in one
// run, the build flipped every 3 s: loop-64 +24 %, loop-64-packed +8 %,
// b2f-64 +12 %, b2f-64-packed +5 %. The price: a header that differs
// (a buffer used for something else since) costs a read of the line and
// then a request for ownership, where the store alone took one request.
func plainHeader(b []byte, hdrLen, n int) {
	_ = b[NetHdrSizeLegacy-1]
	if binary.LittleEndian.Uint64(b[0:8]) != 0 {
		binary.LittleEndian.PutUint64(b[0:8], 0)
	}
	if hdrLen == NetHdrSize {
		if v := uint32(n) << 16; binary.LittleEndian.Uint32(b[8:12]) != v {
			binary.LittleEndian.PutUint32(b[8:12], v)
		}
	} else if binary.LittleEndian.Uint16(b[8:10]) != 0 {
		binary.LittleEndian.PutUint16(b[8:10], 0)
	}
}

// rxWriter copies bytes sequentially across the popped receive chains.
type rxWriter struct {
	r       *NetRX
	n       int    // chains available
	ci      int    // index of the chain being filled
	c       *Chain // r.chains[ci]
	cur     cursor // position in c.In
	written uint32 // bytes written into c
	log     *DirtyLog
}

// write copies p, pushing each chain as it becomes full.
func (w *rxWriter) write(p []byte) {
	for len(p) > 0 {
		if w.cur.seg >= len(w.c.In) {
			if w.ci+1 >= w.n {
				return // cannot happen: Write checked the room
			}
			_ = w.r.q.Push(w.c.Head, w.written)
			w.ci++
			w.c = &w.r.chains[w.ci]
			w.cur, w.written = cursor{}, 0
			continue
		}
		k := copyIn(w.c.In, &w.cur, p, w.log)
		w.written += uint32(k)
		p = p[k:]
	}
}
