package virtio

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// peekPlainPacked is PeekPlain on a packed ring (virtio 1.2 §2.8): the
// buffers at the device's position, in ring order, up to the first that
// writePlainPacked would not take (same conditions, packed_rx.go): the
// descriptor available in the round of its position's wrap counter
// (§2.8.1; its flags read with acquire, §2.8.21.1, the other fields once,
// after them), one device-writable descriptor (no NEXT, no INDIRECT), a
// Buffer ID below the queue size, a non-zero length in the region of the
// last lookup and not over the descriptor ring or the device event
// suppression structure, on a queue that is not
// broken, has no dirty log and whose device event flags are already
// RING_EVENT_FLAGS_DESC when it has VIRTIO_F_EVENT_IDX. Where
// writePlainPacked checks the frame's bytes against the ring and the
// buffer, PeekPlain checks the whole buffer against the ring and
// PlainFrame the frame against the buffer: a buffer PeekPlain refuses
// goes to WritePlain, which decides as before.
//
// At most 64 buffers a call (popAhead), as on split rings, whose header
// and first frame lines are prefetched as PeekPlain does there.
//
// The batch is capped so that no used descriptor CommitPlain writes lands
// on a ring slot PeekPlain read for a later buffer of the batch (possible
// only with buffers outstanding a whole ring apart), and refused when the
// used position is where Push finds no consumed descriptor: one
// writePlainPacked call after another would read what the previous one
// wrote there.
func (r *NetRX) peekPlainPacked(bufs []PlainBuf) int {
	q := r.q
	if q.err != nil || q.log.Load() != nil || q.eventIdx && !q.notifyOff && q.devFlags != eventFlagsDesc {
		return 0
	}
	pos := q.lastAvail
	// Descriptors consumed and not used; 2*size-1 when the used position
	// is one past the avail one (writePlainPacked's used == next).
	out := q.distance(q.usedIdx, pos)
	if out >= uint32(q.size) {
		return 0
	}
	k := min(len(bufs), int(uint32(q.size)-out), popAhead)
	rg := &q.regions[q.hint]
	ringLo, ringHi := q.descGPA, q.descGPA+uint64(q.size)*descSize
	// The device event suppression structure, by host address (one
	// piece of memory may be mapped at two guest addresses):
	// commitPlainPacked stores the event position after the caller wrote
	// the frames, writePlainPacked and Pop before; a buffer over it would
	// end up different (FuzzPackedPlainBatch found one).
	evLo := ring.Addr(q.devEvent, 0)
	evHi := evLo + eventSuppressSize
	// Each buffer's header line for reading and the frame's first line
	// for writing, as the split PeekPlain does (the descriptors are in
	// ring order here: no pass for them).
	var lines [2 * popAhead]uintptr
	i := 0
	for ; i < k; i++ {
		idx := uint32(pos & packedIdxMask)
		d := q.desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
		flags := ring.LoadAcquireHi16(d[12:16])
		if !isAvail(flags, pos) || flags&(descFNext|descFIndirect|descFWrite) != descFWrite {
			break
		}
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := uint64(binary.LittleEndian.Uint32(d[8:12]))
		id := binary.LittleEndian.Uint16(d[12:14])
		off := addr - rg.gpa
		if id >= q.size || length == 0 || off >= rg.size || length > rg.size-off ||
			addr < ringHi && ringLo < addr+length {
			break
		}
		lo := ring.Addr(rg.data, int(off))
		if lo < evHi && evLo < lo+uintptr(length) {
			break
		}
		bufs[i] = PlainBuf{b: rg.data[off : off+length : off+length], gpa: addr, head: id, flags: flags}
		lines[i] = lo
		lines[popAhead+i] = lo + uintptr(min(length, readAheadLen)) - 1
		pos = q.advance(pos, 1)
	}
	ring.Prefetch(lines[:i])
	ring.PrefetchW(lines[popAhead : popAhead+i])
	return i
}

// commitPlainPacked is CommitPlain on a packed ring: for each buffer,
// writePlainPacked's bookkeeping (Pop's shadow and descriptor count, Push's
// used descriptor at the used position, its flags waiting for Publish when
// it is the first since the last one, §2.8.21.3), then the positions and,
// with VIRTIO_F_EVENT_IDX, the device event position once for the batch
// (the flags are DESC already: peekPlainPacked checked).
func (r *NetRX) commitPlainPacked(bufs []PlainBuf) {
	q := r.q
	pos, used := q.lastAvail, q.usedIdx
	for i := range bufs {
		b := &bufs[i]
		q.keepShadow(uint32(pos&packedIdxMask), shadowWord(uint32(len(b.b)), b.head, b.flags, pos))
		if q.pcount[b.head] != 1 {
			q.pcount[b.head] = 1
		}
		slot := uint32(used&packedIdxMask) * descSize
		f := (descFAvail|descFUsed)*(used>>15) | descFWrite // usedFlags(used, b.n > 0)
		if used != q.published {
			binary.LittleEndian.PutUint64(q.desc[slot+8:slot+16:slot+16], descWord(b.n, b.head, f))
		} else {
			binary.LittleEndian.PutUint32(q.desc[slot+8:slot+12:slot+12], b.n)
			binary.LittleEndian.PutUint16(q.desc[slot+12:slot+14:slot+14], b.head)
			q.firstFlags = f
		}
		pos, used = q.advance(pos, 1), q.advance(used, 1)
	}
	q.lastAvail, q.usedIdx = pos, used
	if q.eventIdx && !q.notifyOff {
		ring.StoreRelease16(q.devEvent[0:2], pos)
	}
}
