package virtio

// Segment is one contiguous piece of a descriptor chain's buffers: a buffer
// that crosses a guest memory region boundary becomes several Segments.
type Segment struct {
	Buf []byte // guest memory, a sub-slice of a Region.Data (capacity capped at its length)
	GPA uint64 // guest physical address of Buf[0] (for dirty logging)
}

// Chain is one popped descriptor chain (virtio 1.2 §2.7.5), read once into
// backend memory: Out and In are validated views of guest memory, and
// nothing of the descriptors is read again. The guest may still change the
// bytes of the buffers themselves at any time (copy what you parse).
//
// A Chain is reused between Pops: its slices keep their capacity, so a
// steady-state Pop allocates nothing.
type Chain struct {
	Head   uint16    // descriptor index of the chain head; Push it back
	Out    []Segment // device-readable part, in order (buffers crossing a region boundary are split)
	In     []Segment // device-writable part, in order
	OutLen uint32    // total bytes of Out
	InLen  uint32    // total bytes of In
}

// ReadOut copies the device-readable bytes of c starting at off into p and
// returns how many it copied (fewer than len(p) at the end of Out).
func (c *Chain) ReadOut(off uint32, p []byte) (n int) {
	o := uint64(off)
	for i := range c.Out {
		b := c.Out[i].Buf
		if o >= uint64(len(b)) {
			o -= uint64(len(b))
			continue
		}
		k := copy(p[n:], b[o:])
		n += k
		o = 0
		if n == len(p) {
			break
		}
	}
	return n
}

// cursor is a position inside a list of Segments.
type cursor struct {
	seg int // index of the current segment
	off int // offset inside it
}

// seek moves cur to byte offset off of segs; false if off is past the end.
func (cur *cursor) seek(segs []Segment, off uint64) bool {
	for i := range segs {
		l := uint64(len(segs[i].Buf))
		if off < l {
			cur.seg, cur.off = i, int(off)
			return true
		}
		off -= l
	}
	cur.seg, cur.off = len(segs), 0
	return off == 0
}

// copyIn copies p into segs at cur, advancing it, marks what it wrote in
// log (if not nil) and returns the number of bytes copied.
func copyIn(segs []Segment, cur *cursor, p []byte, log *DirtyLog) (n int) {
	for len(p) > 0 && cur.seg < len(segs) {
		s := &segs[cur.seg]
		k := copy(s.Buf[cur.off:], p)
		if log != nil && k > 0 {
			log.Mark(s.GPA+uint64(cur.off), uint64(k))
		}
		n += k
		p = p[k:]
		cur.off += k
		if cur.off >= len(s.Buf) {
			cur.seg++
			cur.off = 0
		}
	}
	return n
}
