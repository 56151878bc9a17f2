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
// read popAhead at a time (popReadable): their descriptors and the first
// 64 bytes of their buffers are prefetched, so that the cache misses on
// them overlap instead of coming one chain at a time, with one avail_event
// store for them all; a chain of any other shape goes to Pop, which
// validates it and may break the queue, and the chains after it to
// popReadable again. On a packed ring the same, one-descriptor
// device-readable buffers (popPackedN).
func (q *Queue) PopN(cs []Chain) (n int, err error) {
	if q.err == nil && q.packed {
		n = q.popPackedN(cs)
	}
	for n < len(cs) {
		if q.err == nil && !q.packed {
			if k := q.popReadable(cs[n:]); k > 0 {
				n += k
				continue
			}
		}
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

// popAhead is how many chains popReadable reads ahead at a time: a
// transmit batch (datapath.MaxBatch).
const popAhead = 64

// popReadable is PopN's fast path on a split ring that is not broken: it
// pops the leading available chains that are one device-readable
// descriptor (flags 0, non-zero length) in the region of the last lookup
// (oneReadable's chain), up to len(cs) and popAhead, and returns how many.
// It stops, consuming nothing of it, at the first chain of any other
// shape, a head out of range included, and at a bad avail index: Pop then
// reads it all again and decides. Each ring entry and descriptor is read
// once and only the copy is used.
//
// It works in two passes: the first copies the heads out of the avail
// ring and prefetches their descriptors (ring.Prefetch: a prefetch
// retires at once and never faults, so every descriptor line of the batch
// is in flight together; the loads of one loop doing all the work per
// chain had a few at a time, perf f2b-copy-64), the second reads and
// checks the descriptors. It does not prefetch the buffers: with the
// frames' first lines of a whole batch requested at once (up to 128
// lines the driver had just written) the frontend sent fewer frames when
// its CPU and the backend's were far apart (issue 14: a cache line round
// trip of 420-560 ns between them; f2b-copy-64 0.93-0.97x DPDK's
// net_vhost with the prefetch, 0.96-0.98x without, loop-64 0.91-0.93x
// and 1.06-1.07x), and nothing measurable was gained when they were
// close. The caller touches the frames first itself while it is behind
// the driver (GuestPort.transmit): without that loop-64 lost when the
// CPUs were close.
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
	k := min(int(q.availCache-q.lastAvail), len(cs), popAhead)
	desc, availRing := q.desc, q.availRing
	pos, mask, size := q.lastAvail, q.mask, q.size
	var heads [popAhead]uint16
	var lines [popAhead]uintptr
	m := 0
	for ; m < k; m++ {
		slot := uint32((pos+uint16(m))&mask) * 2
		head := binary.LittleEndian.Uint16(availRing[slot : slot+2 : slot+2])
		if head >= size {
			break
		}
		heads[m] = head
		lines[m] = ring.Addr(desc, int(head)*descSize)
	}
	ring.Prefetch(lines[:m])
	r := q.regions[q.hint]
	i := 0
	for ; i < m; i++ {
		head := heads[i]
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
		buf := r.data[off:end:end]
		c := &cs[i]
		c.Head = head
		c.Out = append(c.Out[:0], Segment{Buf: buf, GPA: addr})
		c.In = c.In[:0]
		c.OutLen, c.InLen = length, 0
	}
	if i > 0 {
		q.lastAvail = pos + uint16(i)
		if q.eventIdx && !q.notifyOff {
			q.setAvailEvent(q.lastAvail)
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
