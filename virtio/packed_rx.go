package virtio

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// writePlainPacked is NetRX.WritePlain's common case on a packed ring
// without a Chain: the buffer at the device's position is one available
// device-writable descriptor (no NEXT, no INDIRECT) of at least total
// bytes, in the region of the last lookup, whose Buffer ID is below the
// queue size. It pops it, writes the header of zeros but num_buffers 1
// (hdrLen bytes) and the payload into it, pushes its used descriptor
// (putUsedPacked) and reports true: what Pop, NetRX.fill and Push do for
// that buffer (the test TestPackedWritePlainFast and FuzzPackedWritePlain
// compare the ring, the guest memory, the positions and the dirty log
// with theirs). For anything else it consumes nothing and reports false:
// the general path reads and validates the descriptor again and decides.
// The descriptor is read once (its flags with acquire, §2.8.21.1) and only
// the copy is used.
//
// It keeps no position for Unpop: the buffer is pushed before it returns,
// and Unpop gives back popped buffers only, which never reach back past a
// pushed one.
func (q *Queue) writePlainPacked(hdrLen int, total uint64, payload [][]byte) bool {
	if q.err != nil {
		return false
	}
	pos := q.lastAvail
	idx := uint32(pos & packedIdxMask)
	d := q.desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
	flags := ring.LoadAcquireHi16(d[12:16])
	if !isAvail(flags, pos) || flags&(descFNext|descFIndirect|descFWrite) != descFWrite {
		return false
	}
	addr := binary.LittleEndian.Uint64(d[0:8])
	length := binary.LittleEndian.Uint32(d[8:12])
	id := binary.LittleEndian.Uint16(d[12:14])
	if id >= q.size || uint64(length) < total {
		return false
	}
	r := &q.regions[q.hint]
	off := addr - r.gpa
	if off >= r.size || uint64(length) > r.size-off {
		return false
	}
	next := q.advance(pos, 1)
	used := q.usedIdx
	if used == next {
		// Push would find no consumed descriptor to write over (the
		// positions are off by a whole ring): the general path, which
		// checks, decides.
		return false
	}
	// Pop's bookkeeping.
	q.shadow[idx] = descWord(length, id, flags)
	q.pcount[id] = 1
	q.lastAvail = next
	if q.eventIdx && !q.notifyOff {
		q.setDeviceEvent(eventFlagsDesc, next)
	}
	b := r.data[off : off+uint64(length) : off+uint64(length)]
	plainHeader(b, hdrLen, 1) // len(b) >= total >= hdrLen
	n := hdrLen
	for _, p := range payload {
		n += copy(b[n:], p)
	}
	if l := q.log.Load(); l != nil {
		l.Mark(addr, uint64(n))
	}
	q.putUsedPacked(used, id, uint32(n))
	q.usedIdx = q.advance(used, 1)
	return true
}
