package virtio

// Receiving in place: an uplink that reads frames from a file (a TAP) can
// have the kernel copy each frame straight into the guest's receive
// buffers, instead of into backend memory and from there into the guest
// (one copy of every payload byte less; vhost-net does the same for its
// tap). NetRX.Reserve takes the chains that can hold the largest frame and
// hands out their buffers; the caller reads into them, copies the frame's
// first bytes into its own memory to decide on (they are the guest's to
// change meanwhile), and either CommitReserved writes the header and those
// first bytes and pushes the chains the frame used, or CancelReserved gives
// them all back. While chains are reserved nothing else is written into
// the queue: they are the last popped, which Unpop needs.

// Reserve pops the chains that hold a frame of up to room bytes after the
// virtio-net header: with VIRTIO_NET_F_MRG_RXBUF as many as it takes (each
// at least as large as the header, virtio 1.2 §5.1.6.3.1), else one.
// It returns the device-writable buffers where the frame's bytes go, in
// order (the header's bytes left out of the first), appended to bufs[:0];
// the NetRX keeps that slice until CommitReserved or CancelReserved, and
// the caller must not change it.
// ok=false, err=nil: the queue has not that much room now, or dirty
// logging is on (a migration: the caller copies as before, and Write
// logs); nothing is consumed. A guest error breaks the queue and is
// returned. One reservation at a time; the Queue's goroutine rule holds.
func (r *NetRX) Reserve(room int, bufs [][]byte) (out [][]byte, ok bool, err error) {
	q := r.q
	out = bufs[:0]
	if r.nres != 0 {
		panic("virtio: Reserve with chains reserved")
	}
	if q.log.Load() != nil {
		return out, false, nil
	}
	total := uint64(r.hdrLen) + uint64(room)
	n := 0
	var have uint64
	for have < total {
		if n > 0 && !r.mergeable {
			break
		}
		if n == len(r.chains) {
			r.chains = append(r.chains, Chain{})
		}
		c := &r.chains[n]
		got, err := q.Pop(c)
		if err != nil {
			return out, false, err
		}
		if !got {
			break
		}
		n++
		if err := r.check(c); err != nil {
			return out, false, err
		}
		if n == 1 && c.InLen < uint32(r.hdrLen) && r.mergeable {
			// virtio 1.2 §5.1.6.3.1, as in Write.
			return out, false, q.brk(errShortRxHeader(c, r.hdrLen))
		}
		if n == 1 && (len(c.In) == 0 || len(c.In[0].Buf) < r.hdrLen) {
			// The header split over descriptors (legacy drivers may):
			// CommitReserved stores it in one place; Write copies.
			have = 0
			break
		}
		have += uint64(c.InLen)
	}
	if have < total {
		q.Unpop(uint16(n))
		return out, false, nil
	}
	skip := r.hdrLen
	for i := range n {
		for _, s := range r.chains[i].In {
			b := s.Buf
			if skip > 0 {
				k := min(skip, len(b))
				b, skip = b[k:], skip-k
			}
			if len(b) > 0 {
				out = append(out, b)
			}
		}
	}
	r.nres, r.resv = n, out
	return out, true, nil
}

// Reserved reports whether chains are reserved.
func (r *NetRX) Reserved() bool { return r.nres != 0 }

// CancelReserved gives every reserved chain back: the next Pop returns
// them again.
func (r *NetRX) CancelReserved() {
	if r.nres != 0 {
		r.q.Unpop(uint16(r.nres))
		r.nres, r.resv = 0, nil
	}
}

// CommitReserved makes the reserved chains hold a frame: the virtio-net
// header hdr (nil: zeros) with num_buffers set, then the frame segs,
// whose leading segments (the bytes the caller decided on, in its own
// memory) are copied in and whose other segments must already be where
// the frame puts them in the reserved buffers (the same address, from the
// read that filled them). It pushes the chains the frame used, gives the
// rest back, and ends the reservation; the caller Publishes. It returns
// false, having written and consumed nothing, when segs is not such a
// frame; the chains stay reserved.
func (r *NetRX) CommitReserved(hdr *NetHdr, segs [][]byte) bool {
	if r.nres == 0 {
		return false
	}
	// First pass, nothing written: the leading segments (not in place)
	// and then every byte after them where the frame puts it.
	c := resCursor{bufs: r.resv}
	inPlace, lead := len(segs), 0
	for i, s := range segs {
		if len(s) > 0 && c.at(lead) && &c.buf()[0] == &s[0] {
			inPlace = i
			break
		}
		lead += len(s)
	}
	if inPlace == len(segs) {
		return false // no byte in place: another frame than the one read
	}
	for _, s := range segs[inPlace:] {
		for len(s) > 0 {
			b := c.buf()
			if b == nil || &b[0] != &s[0] {
				return false
			}
			k := min(len(s), len(b))
			s = s[k:]
			c.skip(k)
		}
	}
	end := uint64(r.hdrLen) + uint64(c.off)
	// Second pass: the leading bytes, the header, the used elements.
	c = resCursor{bufs: r.resv}
	for _, s := range segs[:inPlace] {
		for len(s) > 0 {
			k := copy(c.buf(), s) // lead bytes fit: in-place ones follow
			s = s[k:]
			c.skip(k)
		}
	}
	used := 0
	for seen := uint64(0); used < r.nres && seen < end; used++ {
		seen += uint64(r.chains[used].InLen)
	}
	r.header(r.chains[0].In[0].Buf, hdr, used) // Reserve checked it holds the header
	log := r.q.log.Load()                      // logging may have started since Reserve
	left := end
	for i := range used {
		ch := &r.chains[i]
		w := min(left, uint64(ch.InLen))
		if log != nil {
			markIn(log, ch.In, w)
		}
		_ = r.q.Push(ch.Head, uint32(w)) // head < size: it was popped
		left -= w
	}
	if rest := r.nres - used; rest > 0 {
		r.q.Unpop(uint16(rest))
	}
	r.nres, r.resv, r.committed = 0, nil, used
	return true
}

// Committed returns how many chains the last successful CommitReserved
// pushed.
func (r *NetRX) Committed() int { return r.committed }

// markIn marks the first n bytes of segs in the dirty log.
func markIn(log *DirtyLog, segs []Segment, n uint64) {
	for _, s := range segs {
		if n == 0 {
			return
		}
		k := min(n, uint64(len(s.Buf)))
		log.Mark(s.GPA, k)
		n -= k
	}
}

// resCursor walks the reserved buffers (Reserve's result, the header's
// bytes left out) by frame offset.
type resCursor struct {
	bufs [][]byte
	i, o int // buffer, offset in it
	off  int // frame offset
}

// at moves c forward to frame offset off (not before its own) and reports
// whether the reservation reaches it.
func (c *resCursor) at(off int) bool {
	if off > c.off {
		c.skip(off - c.off)
	}
	return c.buf() != nil
}

// skip moves c forward by n bytes, over buffer ends (no buffer is empty).
func (c *resCursor) skip(n int) {
	c.off += n
	c.o += n
	for c.i < len(c.bufs) && c.o >= len(c.bufs[c.i]) {
		c.o -= len(c.bufs[c.i])
		c.i++
	}
}

// buf returns the reserved bytes from c to the end of their buffer, or
// nil past the reservation's end.
func (c *resCursor) buf() []byte {
	if c.i >= len(c.bufs) {
		return nil
	}
	return c.bufs[c.i][c.o:]
}
