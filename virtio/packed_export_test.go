package virtio

import "encoding/binary"

// FirstChain is the NetRX's first scratch chain, which the general receive
// path pops into and the packed fast path leaves alone: tests see which
// one wrote a frame.
func (r *NetRX) FirstChain() *Chain { return &r.chains[0] }

// PackedBook returns copies of a packed queue's per-descriptor shadow (what
// Rewind writes back) and per-buffer descriptor counts (what Push skips).
func (q *Queue) PackedBook() (shadow []uint64, pcount []uint16) {
	return append([]uint64(nil), q.shadow...), append([]uint16(nil), q.pcount...)
}

// WalkPacked is Pop's general path (walkPacked) on the buffer at the
// device's position, if available, without consuming it or breaking the
// queue: tests compare Pop's one-descriptor path with it.
func (q *Queue) WalkPacked(c *Chain) (ok bool, err error) {
	pos := q.lastAvail
	idx := uint32(pos & packedIdxMask)
	flags := binary.LittleEndian.Uint16(q.desc[idx*descSize+14 : idx*descSize+16])
	if !isAvail(flags, pos) {
		return false, nil
	}
	id, _, err := q.walkPacked(c, pos, flags)
	c.Head = id
	return err == nil, err
}

// PopPackedN is PopN's packed fast path (popPackedN) alone, on a queue
// that is not broken: tests count the chains it takes.
func (q *Queue) PopPackedN(cs []Chain) int {
	if q.err != nil || !q.packed {
		return 0
	}
	return q.popPackedN(cs)
}
