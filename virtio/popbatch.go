package virtio

import (
	"encoding/binary"
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// PopN pops up to len(cs) available chains into cs[0..n) and returns n: it
// leaves the queue, cs and guest memory as a loop of Pop over cs that
// stops at the first ok=false or error would (the same chains, last avail
// index, avail_event, dirty log marks and, on bad input, the same broken
// queue and error). On a split ring the common transmit chains, one
// device-readable descriptor each in the region of the last lookup, are
// read in one loop, so that the cache misses on their descriptors overlap
// instead of coming one Pop call at a time, with one avail_event store for
// them all; the first chain of any other shape, and every chain after it,
// goes to Pop, which validates it and may break the queue. On a packed
// ring the same, one-descriptor device-readable buffers (popPackedN).
func (q *Queue) PopN(cs []Chain) (n int, err error) {
	if q.err == nil {
		if q.packed {
			n = q.popPackedN(cs)
		} else {
			n = q.popReadable(cs)
		}
	}
	for n < len(cs) {
		ok, err := q.Pop(&cs[n])
		if err != nil {
			return n, err
		}
		if !ok {
			break
		}
		n++
	}
	return n, nil
}

// popReadable is PopN's fast path on a split ring that is not broken: it
// pops the leading available chains that are one device-readable
// descriptor (flags 0, non-zero length) in the region of the last lookup
// (oneReadable's chain), up to len(cs), and returns how many. It stops,
// consuming nothing of it, at the first chain of any other shape, a head
// out of range included, and at a bad avail index: Pop then reads it all
// again and decides. Each ring entry and descriptor is read once and only
// the copy is used.
func (q *Queue) popReadable(cs []Chain) int {
	if q.lastAvail == q.availCache {
		// Acquire, as in Pop: the ring entries and descriptors are read
		// after avail->idx (virtio 1.2 §2.7.13.2).
		idx := ring.LoadAcquire16(q.availIdx)
		if idx-q.lastAvail > q.size {
			return 0 // Pop reads it again and breaks the queue
		}
		q.availCache = idx
	}
	k := int(q.availCache - q.lastAvail)
	if k > len(cs) {
		k = len(cs)
	}
	r := q.regions[q.hint]
	desc, availRing := q.desc, q.availRing
	pos, mask, size := q.lastAvail, q.mask, q.size
	i := 0
	for ; i < k; i++ {
		slot := uint32(pos&mask) * 2
		head := binary.LittleEndian.Uint16(availRing[slot : slot+2 : slot+2])
		if head >= size {
			break
		}
		d := desc[uint32(head)*descSize : uint32(head)*descSize+descSize : uint32(head)*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		if binary.LittleEndian.Uint16(d[12:14]) != 0 || length == 0 {
			break
		}
		off := addr - r.gpa
		if off >= r.size || uint64(length) > r.size-off {
			break
		}
		end := off + uint64(length)
		c := &cs[i]
		c.Head = head
		c.Out = append(c.Out[:0], Segment{Buf: r.data[off:end:end], GPA: addr})
		c.In = c.In[:0]
		c.OutLen, c.InLen = length, 0
		pos++
	}
	if i > 0 {
		q.lastAvail = pos
		if q.eventIdx && !q.notifyOff {
			q.setAvailEvent(pos)
		}
	}
	return i
}

// PushN pushes the chains cs as used, in order, each with written bytes
// written (0 for transmitted chains): it leaves the queue and guest memory
// as a loop of Push(cs[i].Head, written) that stops at the first error
// would. The driver does not see them before Publish.
func (q *Queue) PushN(cs []Chain, written uint32) error {
	if q.err != nil {
		return q.err
	}
	if q.packed {
		return q.pushPackedN(cs, written)
	}
	l := q.log.Load()
	for i := range cs {
		head := cs[i].Head
		if head >= q.size {
			return fmt.Errorf("push head %d out of range (queue size %d): %w", head, q.size, ErrBadChain)
		}
		slot := q.putUsed(head, written)
		if l != nil {
			l.markUsed(q, slot)
		}
	}
	return nil
}
