package virtio

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// popPackedN is PopN's fast path on a packed ring that is not broken
// (virtio 1.2 §2.8): popPacked's one-descriptor path in one loop. It pops
// the leading available buffers that are one device-readable descriptor
// (no VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_INDIRECT or VIRTQ_DESC_F_WRITE), with
// a Buffer ID below the queue size and a non-zero length in the region of
// the last lookup, up to len(cs), and returns how many. It stops,
// consuming nothing of it, at the first descriptor that is not available
// in the round of its position's wrap counter (§2.8.1) or is of any other
// shape: Pop then reads it again and decides (and may break the queue).
//
// Each descriptor's flags are loaded with acquire and its other fields
// read once after them (§2.8.21.1: the driver writes the flags of a
// buffer's first descriptor last); only the copy is used. Per buffer it
// keeps what popPacked keeps: the shadow of descriptor bytes 8..15
// (Rewind), the descriptor count of the Buffer ID (Push skips it, §2.8.6)
// and the position before it (Unpop); the device event position, with
// VIRTIO_F_EVENT_IDX, is stored once for the batch.
func (q *Queue) popPackedN(cs []Chain) int {
	pos := q.lastAvail
	r := q.regions[q.hint]
	desc, size := q.desc, q.size
	pcount, shadow, phist := q.pcount, q.shadow, q.phist
	nhist, phmask := q.nhist, q.phmask
	i := 0
	for ; i < len(cs); i++ {
		idx := uint32(pos & packedIdxMask)
		d := desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
		flags := ring.LoadAcquireHi16(d[12:16])
		if !isAvail(flags, pos) || flags&(descFNext|descFIndirect|descFWrite) != 0 {
			break
		}
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		id := binary.LittleEndian.Uint16(d[12:14])
		off := addr - r.gpa
		if id >= size || int(id) >= len(pcount) || length == 0 || off >= r.size || uint64(length) > r.size-off {
			break
		}
		if w := shadowWord(length, id, flags, pos); shadow[idx] != w {
			shadow[idx] = w // keepShadow: a store only when it changed
		}
		if pcount[id] != 1 {
			pcount[id] = 1
		}
		phist[nhist&phmask] = pos
		nhist++
		end := off + uint64(length)
		c := &cs[i]
		c.Head = id
		c.Out = append(c.Out[:0], Segment{Buf: r.data[off:end:end], GPA: addr})
		c.In = c.In[:0]
		c.OutLen, c.InLen = length, 0
		pos = q.advance(pos, 1)
	}
	if i > 0 {
		q.lastAvail, q.nhist = pos, nhist
		if q.eventIdx && !q.notifyOff {
			q.setDeviceEvent(eventFlagsDesc, pos)
		}
	}
	return i
}

// pushPackedN is PushN on a packed ring that is not broken: pushPacked
// over cs (§2.8.22: each used descriptor at the device's used position,
// Buffer ID and length, then flags equal to the Used Ring Wrap Counter,
// the descriptors of the buffer skipped), the flags of the first one since
// the last Publish left in q.firstFlags for Publish's release store
// (§2.8.21.3), each one marked in the dirty log. It stops at the first
// buffer pushPacked would refuse, with pushPacked's error, the ones before
// it pushed.
func (q *Queue) pushPackedN(cs []Chain, written uint32) error {
	if len(cs) > 1 && written == 0 && q.features&FInOrder != 0 && q.putUsedPackedBatch(cs) {
		return nil
	}
	from := q.usedIdx
	n := q.putUsedPackedN(cs, written)
	if l := q.log.Load(); l != nil && n > 0 {
		q.logUsedPacked(l, from, cs[:n])
	}
	if n < len(cs) {
		return q.pushPackedErr(cs[n].Head)
	}
	return nil
}

// putUsedPackedBatch is pushPackedN with VIRTIO_F_IN_ORDER for buffers
// the device read only (written 0, the transmit queue's): one used
// descriptor for the whole batch (virtio 1.2 §2.8.8: "devices [may]
// notify the use of a batch of buffers to the driver by only writing out
// a single used descriptor with the Buffer ID corresponding to the last
// descriptor in the batch. The device then skips forward in the ring
// according to the size of the batch"; "the skipped buffers ... are
// assumed to have been used (read or written) by the device
// completely"), at the used position, over the first consumed
// descriptor, its flags left for Publish when it is the first since the
// last one, as pushPacked leaves them. A device that negotiated IN_ORDER
// pushes buffers in the order it popped them (vhostuser.Device), so the
// chains of cs are the next consumed ones. It reports false, writing
// nothing, when a chain is one pushPacked would refuse (or the batch would
// take more than the ring): pushPackedN then pushes them one by one and
// returns pushPacked's error.
//
// Rewind still works: it writes back every descriptor from the Mark's used
// position on, the skipped ones included, with the bytes Pop read there,
// which for those are still in place. One descriptor written instead of
// one per buffer: at 64 B the device's stores into the ring, and the
// driver's reads of them, are a fair part of a frame's cost (perf
// f2b-copy-64-packed).
func (q *Queue) putUsedPackedBatch(cs []Chain) bool {
	pos := q.usedIdx
	free := q.distance(pos, q.lastAvail)
	if free > uint32(q.size) {
		return false // the used position is ahead: never a batch
	}
	pcount, size := q.pcount, q.size
	total := uint32(0)
	for i := range cs {
		id := cs[i].Head
		if id >= size || int(id) >= len(pcount) || pcount[id] == 0 {
			return false
		}
		total += uint32(pcount[id])
	}
	if total > free {
		return false
	}
	id := cs[len(cs)-1].Head
	slot := uint32(pos&packedIdxMask) * descSize
	d := q.desc[slot+8 : slot+16 : slot+16]
	f := usedFlags(pos, 0)
	if pos != q.published {
		binary.LittleEndian.PutUint64(d, descWord(0, id, f))
	} else {
		binary.LittleEndian.PutUint32(d[0:4], 0)
		binary.LittleEndian.PutUint16(d[4:6], id)
		q.firstFlags = f
	}
	q.usedIdx = q.advance(pos, uint16(total))
	if l := q.log.Load(); l != nil {
		l.Mark(q.descGPA+uint64(slot)+8, 8)
	}
	return true
}

// putUsedPackedN writes the used descriptors of the leading chains of cs
// that pushPacked would take, moves the used position past them and
// returns how many. No call in the loop: nothing is spilled (a spill is a
// store, which at 64 B waits for the stores of the frames' copies before
// it to commit; see pushPacked).
func (q *Queue) putUsedPackedN(cs []Chain, written uint32) int {
	pos := q.usedIdx
	// Descriptors consumed and not used: used descriptors go over these
	// only (past lastAvail are the driver's).
	free := q.distance(pos, q.lastAvail)
	desc, pcount, size, published := q.desc, q.pcount, q.size, q.published
	i := 0
	for ; i < len(cs); i++ {
		id := cs[i].Head
		if id >= size || int(id) >= len(pcount) {
			break
		}
		k := pcount[id]
		if k == 0 || free < uint32(k) {
			break
		}
		free -= uint32(k)
		slot := uint32(pos&packedIdxMask) * descSize
		d := desc[slot+8 : slot+16 : slot+16]
		f := usedFlags(pos, written)
		if pos != published {
			binary.LittleEndian.PutUint64(d, descWord(written, id, f))
		} else {
			binary.LittleEndian.PutUint32(d[0:4], written)
			binary.LittleEndian.PutUint16(d[4:6], id)
			q.firstFlags = f
		}
		pos = q.advance(pos, k)
	}
	q.usedIdx = pos
	return i
}

// logUsedPacked marks in l the used descriptors putUsedPackedN wrote for
// cs from position pos on.
func (q *Queue) logUsedPacked(l *DirtyLog, pos uint16, cs []Chain) {
	for i := range cs {
		l.Mark(q.descGPA+uint64(pos&packedIdxMask)*descSize+8, 8)
		pos = q.advance(pos, q.pcount[cs[i].Head])
	}
}
