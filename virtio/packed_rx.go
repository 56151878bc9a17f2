package virtio

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// writePlainPacked is NetRX.WritePlain on a packed ring. Its common case
// goes without a Chain: the buffer at the device's position is one
// available device-writable descriptor (no NEXT, no INDIRECT) of at least
// the frame's bytes, in the region of the last lookup, whose Buffer ID is
// below the queue size, on a queue without a dirty log. It pops it, pushes
// its used descriptor, writes the header of zeros but num_buffers 1 and
// the payload into it, and reports ok: what Pop, NetRX.fill and Push do
// for that buffer (TestPackedWritePlainFast and FuzzPackedWritePlain
// compare the ring, the guest memory, the positions and the bookkeeping
// with theirs). Anything else goes to the general path, which reads and
// validates the descriptor again and decides; so does a queue with a
// dirty log (live migration), whose marks must follow the writes they
// mark. The descriptor is read once (its flags with acquire, §2.8.21.1)
// and only the copy is used.
//
// At 64 bytes the path is bound by stores into guest memory that miss and
// commit in order, so any store waits for those before it (perf
// b2f-64-packed: NetRX.write's spills of its arguments at entry were 77%
// of it): hence a path of its own from WritePlain, the ring bookkeeping
// done before the copies (nothing then lives across them: no spills), and
// the used descriptor written before the buffer, which the driver reads
// only after Publish's release store anyway (the used descriptors after
// the first are read in ring order after its flags). A buffer over the
// descriptor ring itself (a driver's own bug) goes to the general path,
// so that the ring ends up as it leaves it. (A frontend could still map
// one piece of memory at two guest addresses, the ring at one and a
// buffer at the other; then the ring's bytes where the two overlap, which
// are garbage for the driver either way, can differ from the general
// path's.)
//
// It keeps no position for Unpop: the buffer is pushed before it returns,
// and Unpop gives back popped buffers only, which never reach back past a
// pushed one.
func (r *NetRX) writePlainPacked(payload [][]byte) (ok bool, err error) {
	q := r.q
	hdrLen := r.hdrLen
	total := uint64(hdrLen)
	for _, p := range payload {
		total += uint64(len(p))
	}
	if q.err != nil || q.log.Load() != nil {
		return r.write(nil, payload)
	}
	pos := q.lastAvail
	idx := uint32(pos & packedIdxMask)
	d := q.desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
	flags := ring.LoadAcquireHi16(d[12:16])
	if !isAvail(flags, pos) {
		// Nothing more of the descriptor is read before its flags say
		// it is the driver's (as Pop, PopN and PeekPlain do): the
		// driver may be writing it (a data race under -race with the
		// test drivers, whose values this path would discard anyway).
		return r.write(nil, payload)
	}
	addr := binary.LittleEndian.Uint64(d[0:8])
	length := binary.LittleEndian.Uint32(d[8:12])
	id := binary.LittleEndian.Uint16(d[12:14])
	reg := &q.regions[q.hint]
	off := addr - reg.gpa
	next := q.advance(pos, 1)
	used := q.usedIdx
	if flags&(descFNext|descFIndirect|descFWrite) != descFWrite ||
		id >= q.size || uint64(length) < total || off >= reg.size || uint64(length) > reg.size-off ||
		// Push would find no consumed descriptor to write over (the
		// positions are a whole ring apart): the general path checks.
		used == next ||
		// The frame would overwrite the descriptor ring: the used
		// descriptor, which the general path writes after the frame,
		// must end up the same.
		addr < q.descGPA+uint64(q.size)*descSize && q.descGPA < addr+total ||
		// The device event flags are not yet RING_EVENT_FLAGS_DESC:
		// setDeviceEvent stores them once, and its call here would spill.
		q.eventIdx && !q.notifyOff && q.devFlags != eventFlagsDesc {
		return r.write(nil, payload)
	}
	// Pop's bookkeeping, stores only where something changes.
	q.keepShadow(idx, shadowWord(length, id, flags, pos))
	if q.pcount[id] != 1 {
		q.pcount[id] = 1
	}
	q.lastAvail = next
	if q.eventIdx && !q.notifyOff {
		// setDeviceEvent(eventFlagsDesc, next) in line: the flags are
		// DESC already (checked above) and there is no dirty log.
		ring.StoreRelease16(q.devEvent[0:2], next)
	}
	// Push's (pushPacked's store, without the log): total > 0 bytes written.
	slot := uint32(used&packedIdxMask) * descSize
	f := (descFAvail|descFUsed)*(used>>15) | descFWrite
	if used != q.published {
		binary.LittleEndian.PutUint64(q.desc[slot+8:slot+16:slot+16], descWord(uint32(total), id, f))
	} else {
		binary.LittleEndian.PutUint32(q.desc[slot+8:slot+12:slot+12], uint32(total))
		binary.LittleEndian.PutUint16(q.desc[slot+12:slot+14:slot+14], id)
		q.firstFlags = f
	}
	q.usedIdx = q.advance(used, 1)
	// The frame, exactly total bytes.
	b := reg.data[off : off+total : off+total]
	plainHeader(b, hdrLen, 1)
	if len(payload) == 1 {
		copy(b[hdrLen:], payload[0])
		return true, nil
	}
	n := hdrLen
	for _, p := range payload {
		n += copy(b[n:], p)
	}
	return true, nil
}
