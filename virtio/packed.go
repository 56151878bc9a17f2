package virtio

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// Packed virtqueues (virtio 1.2 §2.8).
//
// A packed ring is one descriptor ring the driver and the device share:
// the driver writes available descriptors into it, the device overwrites
// them with used descriptors, each side going round the ring with its own
// position and wrap counter (§2.8.1). A Queue made with VIRTIO_F_RING_PACKED
// works one behind the same methods as a split queue: Pop, Push, Publish,
// NeedNotify, EnableNotify, DisableNotify, Unpop, Mark and Rewind branch once
// per call on q.packed (a predictable branch, no per-descriptor cost; see
// BenchmarkPopPush in bench_test.go).
//
// Positions (lastAvail, usedIdx, published, signalled) are kept as
// index | wrap<<15, the encoding of the vhost-user spec ("Vring descriptor
// indices for packed virtqueues": bits 0-14 the index, bit 15 the wrap
// counter), so LastAvail and UsedIdx are what GET_VRING_BASE reports.
//
// Push writes each used descriptor in place, except the flags of the first
// one after the last Publish, which Publish stores last with release
// semantics (§2.8.21.3 "the device can batch used descriptors by writing the
// flags of the first one last"): the driver reads used descriptors in ring
// order, so it sees none of the batch before Publish. A used descriptor goes
// where the device consumed available ones, never past them, so the
// descriptors of chains popped and not pushed are still there for Unpop to
// give back. Rewind gives back pushed chains too: Pop keeps a shadow of the
// ring bytes a used descriptor can overwrite (bytes 8..15 of every
// descriptor it consumes, from the values it read anyway: one store into
// backend memory), which Rewind writes back over the used descriptors
// pushed since the Mark. (Staging used descriptors in backend memory until
// Publish, as this file first did, cost a second pass over them:
// BenchmarkPopPush. Recording at Push what it overwrote, as it did next,
// read the ring again and went through a stack copy whose reload failed
// store forwarding: it waited for every store before it, the frame's
// copies into guest memory included, to commit; perf b2f-64-packed: 93% of
// pushPacked at that reload.)
//
// Deviation: the spec does not bound the Buffer ID. Like the drivers we
// know (Linux virtio_ring, DPDK's virtio PMD, our virtiotest), we require
// it below the Queue Size, so the number of descriptors of each buffer in
// flight (the device skips that many when it writes the used descriptor,
// §2.8.6) is an array indexed by it; a larger id breaks the queue.

// Packed descriptor flags (virtio 1.2 §2.8.13) and event suppression
// flags (§2.8.14).
const (
	descFAvail = 1 << 7  // VIRTQ_DESC_F_AVAIL
	descFUsed  = 1 << 15 // VIRTQ_DESC_F_USED

	eventFlagsEnable  = 0 // RING_EVENT_FLAGS_ENABLE
	eventFlagsDisable = 1 // RING_EVENT_FLAGS_DISABLE
	eventFlagsDesc    = 2 // RING_EVENT_FLAGS_DESC (VIRTIO_F_EVENT_IDX only)

	packedWrap    = 1 << 15 // wrap counter bit of a position / desc_event_wrap
	packedIdxMask = packedWrap - 1

	eventSuppressSize = 4 // struct pvirtq_event_suppress
)

// newPackedQueue is NewQueue for VIRTIO_F_RING_PACKED. DescGPA is the
// descriptor ring, AvailGPA the driver event suppression structure ("driver
// area"), UsedGPA the device event suppression structure ("device area"),
// virtio 1.2 §2.8.10.
func newPackedQueue(mem *Memory, cfg QueueConfig) (*Queue, error) {
	n := uint64(cfg.Size)
	// §2.8.10.1: "Queue Size ... The maximum Queue Size value is 32768";
	// it need not be a power of two for packed rings.
	if n == 0 || n > MaxQueueSize {
		return nil, fmt.Errorf("packed queue size %d: not in 1..32768: %w", n, ErrBadRing)
	}
	for _, p := range []struct {
		name string
		pos  uint16
	}{{"available", cfg.LastAvail}, {"used", cfg.LastUsed}} {
		if uint64(p.pos&packedIdxMask) >= n {
			return nil, fmt.Errorf("packed queue: %s position %d beyond queue size %d: %w", p.name, p.pos&packedIdxMask, n, ErrBadRing)
		}
	}
	// §2.8.10.1 table "Packed Virtqueue Part Alignment": descriptor ring
	// 16, device and driver event suppression 4.
	b, err := mapRingParts(mem, [3]ringPart{
		{"descriptor ring", cfg.DescGPA, descSize * n, 16},
		{"driver event suppression", cfg.AvailGPA, eventSuppressSize, 4},
		{"device event suppression", cfg.UsedGPA, eventSuppressSize, 4},
	})
	if err != nil {
		return nil, err
	}
	hist := uint16(1)
	for uint64(hist) < n && hist < 1<<15 {
		hist <<= 1
	}
	q := &Queue{
		packed:    true,
		desc:      b[0],
		drvEvent:  b[1],
		devEvent:  b[2],
		regions:   mem.regions,
		mem:       mem,
		size:      cfg.Size,
		features:  cfg.Features,
		indirect:  cfg.Features&FIndirectDesc != 0,
		eventIdx:  cfg.Features&FEventIdx != 0,
		lastAvail: cfg.LastAvail,
		usedIdx:   cfg.LastUsed,
		published: cfg.LastUsed,
		signalled: cfg.LastUsed,
		usedLog:   cfg.UsedLogGPA,
		descGPA:   cfg.DescGPA,
		pcount:    make([]uint16, n),
		phist:     make([]uint16, hist),
		phmask:    hist - 1,
		shadow:    make([]uint64, n),
		devFlags:  0xffff, // unknown: the first setDeviceEvent stores its flags
	}
	if q.usedLog == 0 {
		q.usedLog = cfg.UsedGPA
	}
	if q.usedLog > math.MaxUint64-eventSuppressSize {
		return nil, fmt.Errorf("device area log address %#x wraps: %w", q.usedLog, ErrBadRing)
	}
	return q, nil
}

// advance returns position pos moved forward by k descriptors (k <= size),
// flipping the wrap counter when it passes the end of the ring (§2.8.1).
func (q *Queue) advance(pos, k uint16) uint16 {
	idx := uint32(pos&packedIdxMask) + uint32(k)
	w := pos & packedWrap
	if idx >= uint32(q.size) {
		idx -= uint32(q.size)
		w ^= packedWrap
	}
	return uint16(idx) | w
}

// linear maps a position to 0..2*size-1: the ring counted twice, once per
// wrap counter value, so that distances between positions are plain
// subtraction modulo 2*size.
func (q *Queue) linear(pos uint16) uint32 {
	l := uint32(pos & packedIdxMask)
	if pos&packedWrap != 0 {
		l += uint32(q.size)
	}
	return l
}

// distance returns how many descriptors lie from position a forward to b.
func (q *Queue) distance(a, b uint16) uint32 {
	d := int32(q.linear(b)) - int32(q.linear(a))
	if d < 0 {
		d += 2 * int32(q.size)
	}
	return uint32(d)
}

// isAvail reports whether descriptor flags f mark a descriptor available
// in the round of wrap counter w (§2.8.1: "VIRTQ_DESC_F_AVAIL ... matches
// the Driver Ring Wrap Counter and VIRTQ_DESC_F_USED does not").
func isAvail(f, pos uint16) bool {
	w := pos >> 15
	return (f>>7)&1 == w && f>>15 != w
}

// popPacked is Pop for a packed ring (§2.8.20, §2.8.21: the device reads
// the descriptor at its position, available when its flags say so, and
// the chain continues in the following ring slots while
// VIRTQ_DESC_F_NEXT is set, §2.8.6).
func (q *Queue) popPacked(c *Chain) (ok bool, err error) {
	pos := q.lastAvail
	idx := uint32(pos & packedIdxMask)
	d := q.desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
	// Acquire: the descriptor (and those after it in the chain) are read
	// after its flags. §2.8.21.1: the driver writes the flags of the first
	// descriptor of a buffer last, after a write barrier. (The flags are
	// the upper half of the descriptor's last 4-byte word.)
	flags := ring.LoadAcquireHi16(d[12:16])
	if !isAvail(flags, pos) {
		return false, nil
	}
	var id, k uint16
	if flags&(descFNext|descFIndirect) == 0 {
		// A buffer of one descriptor, the common case: walkPacked
		// unrolled (it reads the same fields once).
		id, k = binary.LittleEndian.Uint16(d[12:14]), 1
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		q.keepShadow(idx, shadowWord(length, id, flags, pos))
		if r := &q.regions[q.hint]; length > 0 && addr-r.gpa < r.size && uint64(length) <= r.size-(addr-r.gpa) {
			// singlePacked in line for a buffer in the region of the
			// last lookup (its call spilled on the transmit path).
			off := addr - r.gpa
			end := off + uint64(length)
			seg := Segment{Buf: r.data[off:end:end], GPA: addr}
			if flags&descFWrite != 0 {
				c.In = append(c.In[:0], seg)
				c.Out = c.Out[:0]
				c.OutLen, c.InLen = 0, length
			} else {
				c.Out = append(c.Out[:0], seg)
				c.In = c.In[:0]
				c.OutLen, c.InLen = length, 0
			}
		} else {
			err = q.singlePacked(c, addr, length, flags)
		}
	} else {
		id, k, err = q.walkPacked(c, pos, flags)
	}
	if err != nil {
		return false, q.brk(fmt.Errorf("chain at ring position %d: %w", idx, err))
	}
	if id >= q.size {
		return false, q.brk(fmt.Errorf("chain at ring position %d: buffer id %d not below queue size %d: %w", idx, id, q.size, ErrBadChain))
	}
	c.Head = id
	if q.pcount[id] != k {
		q.pcount[id] = k // a store less in the steady state
	}
	q.phist[q.nhist&q.phmask] = pos
	q.nhist++
	q.lastAvail = q.advance(pos, k)
	if q.eventIdx && !q.notifyOff {
		q.setDeviceEvent(eventFlagsDesc, q.lastAvail)
	}
	return true, nil
}

// walkPacked reads the buffer whose first descriptor is at position pos
// (flags already loaded) into c and returns its Buffer ID and the number of
// ring descriptors it takes. Each descriptor is read once; the walk is
// bounded by the queue size (§2.8.17: "A driver MUST NOT create a
// descriptor list longer than allowed by the device"), so a driver marking
// every descriptor with NEXT ends with an error.
func (q *Queue) walkPacked(c *Chain, pos uint16, flags uint16) (id, k uint16, err error) {
	idx, wrap := uint32(pos&packedIdxMask), pos&packedWrap
	c.Out = c.Out[:0]
	c.In = c.In[:0]
	var outLen, inLen uint64
	writable := false
	size := uint32(q.size)
	for n := uint32(0); ; n++ {
		if n >= size {
			return 0, 0, fmt.Errorf("more than %d descriptors (every one with VIRTQ_DESC_F_NEXT): %w", size, ErrBadChain)
		}
		d := q.desc[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		id = binary.LittleEndian.Uint16(d[12:14])
		if n > 0 {
			// Not the first: ordered after the first one's flags by the
			// acquire above (the driver wrote them before it).
			flags = binary.LittleEndian.Uint16(d[14:16])
		}
		q.keepShadow(idx, shadowWord(length, id, flags, uint16(idx)|wrap))
		if flags&descFIndirect != 0 {
			// §2.8.19: "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT
			// and VIRTQ_DESC_F_NEXT in flags" and MUST NOT put an
			// indirect descriptor in a list linked by NEXT.
			if n > 0 || flags&descFNext != 0 {
				return 0, 0, fmt.Errorf("indirect descriptor inside a descriptor list: %w", ErrBadChain)
			}
			if err := q.walkIndirectPacked(c, addr, length, flags, &outLen, &inLen); err != nil {
				return 0, 0, err
			}
			return id, 1, nil
		}
		if err := q.addSegment(c, addr, length, flags, &writable, &outLen, &inLen); err != nil {
			return 0, 0, err
		}
		if flags&descFNext == 0 {
			// §2.8.6: "Buffer ID is included in the last descriptor in
			// the list."
			if outLen > math.MaxUint32 || inLen > math.MaxUint32 {
				return 0, 0, fmt.Errorf("chain of %d+%d bytes exceeds 4 GiB: %w", outLen, inLen, ErrBadChain)
			}
			c.OutLen, c.InLen = uint32(outLen), uint32(inLen)
			return id, uint16(n + 1), nil
		}
		idx++
		if idx == size {
			idx, wrap = 0, wrap^packedWrap
		}
	}
}

// singlePacked reads a buffer of one direct descriptor into c: walkPacked's
// first step, with nothing before it to check it against.
func (q *Queue) singlePacked(c *Chain, addr uint64, length uint32, flags uint16) error {
	c.Out = c.Out[:0]
	c.In = c.In[:0]
	c.OutLen, c.InLen = 0, 0
	segs := &c.Out
	if flags&descFWrite != 0 {
		segs = &c.In
		c.InLen = length
	} else {
		c.OutLen = length
	}
	if length == 0 {
		return nil
	}
	if r := &q.regions[q.hint]; addr-r.gpa < r.size && uint64(length) <= r.size-(addr-r.gpa) {
		off := addr - r.gpa
		end := off + uint64(length)
		*segs = append(*segs, Segment{Buf: r.data[off:end:end], GPA: addr})
		return nil
	}
	var err error
	*segs, err = q.mem.appendSegments(*segs, addr, length, &q.hint)
	return err
}

// walkIndirectPacked reads an indirect table of packed descriptors
// (§2.8.7): len/16 entries used in order; their Buffer ID and
// VIRTQ_DESC_F_NEXT are reserved and ignored by the device.
func (q *Queue) walkIndirectPacked(c *Chain, addr uint64, length uint32, flags uint16, outLen, inLen *uint64) error {
	t, err := q.indirectTable(addr, length, flags&^descFNext, false)
	if err != nil {
		return err
	}
	prefetchTable(t)
	writable := false
	for off := 0; off+descSize <= len(t); off += descSize {
		d := t[off : off+descSize : off+descSize]
		f := binary.LittleEndian.Uint16(d[14:16])
		if f&descFIndirect != 0 {
			// §2.8.19: "The driver MUST NOT set the
			// VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor."
			return fmt.Errorf("nested indirect descriptor: %w", ErrBadChain)
		}
		if err := q.addSegment(c, binary.LittleEndian.Uint64(d[0:8]), binary.LittleEndian.Uint32(d[8:12]), f, &writable, outLen, inLen); err != nil {
			return err
		}
	}
	if *outLen > math.MaxUint32 || *inLen > math.MaxUint32 {
		return fmt.Errorf("chain of %d+%d bytes exceeds 4 GiB: %w", *outLen, *inLen, ErrBadChain)
	}
	c.OutLen, c.InLen = uint32(*outLen), uint32(*inLen)
	return nil
}

// addSegment appends the buffer of one descriptor (copied fields) to c.
func (q *Queue) addSegment(c *Chain, addr uint64, length uint32, flags uint16, writable *bool, outLen, inLen *uint64) error {
	if flags&descFWrite == 0 && *writable {
		// §2.8.17 (as §2.7.4.2): "The driver MUST place any
		// device-writable descriptor elements after any device-readable
		// descriptor elements."
		return fmt.Errorf("device-readable descriptor after a device-writable one: %w", ErrBadChain)
	}
	if length == 0 {
		*writable = *writable || flags&descFWrite != 0
		return nil
	}
	segs := &c.Out
	if flags&descFWrite != 0 {
		*writable = true
		segs = &c.In
		*inLen += uint64(length)
	} else {
		*outLen += uint64(length)
	}
	if r := &q.regions[q.hint]; addr-r.gpa < r.size && uint64(length) <= r.size-(addr-r.gpa) {
		off := addr - r.gpa
		end := off + uint64(length)
		*segs = append(*segs, Segment{Buf: r.data[off:end:end], GPA: addr})
		return nil
	}
	var err error
	*segs, err = q.mem.appendSegments(*segs, addr, length, &q.hint)
	return err
}

// unpopPacked gives back the last n popped buffers.
func (q *Queue) unpopPacked(n uint16) {
	if n == 0 {
		return
	}
	q.nhist -= n
	q.lastAvail = q.phist[q.nhist&q.phmask]
}

// pushPacked writes the used descriptor of buffer id at the device's used
// position (§2.8.22: "the device writes the Buffer ID and length, then flags
// with VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED equal to its Used Ring Wrap
// Counter", then skips the descriptors of the buffer), in place, and marks
// it in the dirty log. The flags of the first used descriptor since the
// last Publish wait in q.firstFlags for Publish's release store; any other
// one is written whole with one 8-byte store (len, id, flags: the driver
// reads used descriptors in ring order, so it reads this one only after the
// first one's flags, whose release store orders this).
//
// The checks that fail go to pushPackedErr, which builds the error: with no
// call on the way but the dirty log's, last, nothing lives across a call
// and nothing is spilled (a spill is a store, which at 64 B waits for the
// frame's stores into guest memory before it to commit: perf
// loop-64-packed).
func (q *Queue) pushPacked(id uint16, written uint32) error {
	if id >= q.size || int(id) >= len(q.pcount) {
		return q.pushPackedErr(id)
	}
	k := q.pcount[id]
	pos := q.usedIdx
	// Used descriptors overwrite consumed available ones only: past
	// lastAvail are the driver's. (k == 0: never popped.)
	if k == 0 || q.distance(pos, q.lastAvail) < uint32(k) {
		return q.pushPackedErr(id)
	}
	slot := uint32(pos&packedIdxMask) * descSize
	d := q.desc[slot+8 : slot+16 : slot+16]
	f := usedFlags(pos, written)
	if pos != q.published {
		binary.LittleEndian.PutUint64(d, descWord(written, id, f))
	} else {
		binary.LittleEndian.PutUint32(d[0:4], written)
		binary.LittleEndian.PutUint16(d[4:6], id)
		q.firstFlags = f
	}
	q.usedIdx = q.advance(pos, k)
	if l := q.log.Load(); l != nil {
		l.Mark(q.descGPA+uint64(slot)+8, 8)
	}
	return nil
}

// pushPackedErr is the error of a pushPacked of buffer id whose checks
// failed.
//
//go:noinline
func (q *Queue) pushPackedErr(id uint16) error {
	if id >= q.size {
		return fmt.Errorf("push buffer id %d out of range (queue size %d): %w", id, q.size, ErrBadChain)
	}
	k := q.pcount[id]
	if k == 0 {
		return fmt.Errorf("push of buffer id %d: never popped: %w", id, ErrBadChain)
	}
	return fmt.Errorf("push of buffer id %d: %d ring descriptors, %d consumed and not used (more pushes than pops?): %w",
		id, k, q.distance(q.usedIdx, q.lastAvail), ErrBadChain)
}

// publishPacked stores the flags of the first used descriptor pushed since
// the last Publish: one release store makes the whole batch visible.
func (q *Queue) publishPacked() {
	slot := uint32(q.published&packedIdxMask) * descSize
	// Release: the buffers written, the used descriptors after it and its
	// own id/len are visible before its flags (§2.8.21.3).
	ring.StoreRelease16(q.desc[slot+14:slot+16], q.firstFlags)
	if l := q.log.Load(); l != nil {
		l.Mark(q.descGPA+uint64(slot)+14, 2)
	}
	q.published = q.usedIdx
}

// rewindPacked writes back, as Pop read them, the ring descriptors the
// used descriptors pushed from position from to q.usedIdx overwrote. Each
// of them went over descriptors consumed (Push checks it), whose bytes
// 8..15 Pop kept in q.shadow (shadowWord); the used ones are all after the last Publish
// (Rewind's contract), so the driver saw none of them.
func (q *Queue) rewindPacked(from uint16) {
	l := q.log.Load()
	for n := q.distance(from, q.usedIdx); n > 0; n-- {
		idx := uint32(from & packedIdxMask)
		slot := idx * descSize
		binary.LittleEndian.PutUint64(q.desc[slot+8:slot+16:slot+16], q.shadow[idx]^uint64(availFlags(from))<<48)
		if l != nil {
			l.Mark(q.descGPA+uint64(slot)+8, 8)
		}
		from = q.advance(from, 1)
	}
}

// needNotifyPacked is NeedNotify for a packed ring (§2.8.10, §2.8.14): the
// driver event suppression structure says enable, disable, or (with
// VIRTIO_F_EVENT_IDX) "notify when the used position passes desc_event".
func (q *Queue) needNotifyPacked() bool {
	newPos := q.published
	if newPos == q.signalled {
		return false
	}
	old := q.signalled
	q.signalled = newPos
	// Full fence: the used descriptors' flags stores are visible before we
	// read the driver's event suppression (store->load order; see
	// NeedNotify).
	ring.FullFence()
	flags := ring.LoadAcquire16(q.drvEvent[2:4]) & 3
	switch {
	case flags == eventFlagsEnable:
		return true
	case flags == eventFlagsDisable:
		return false
	case flags == eventFlagsDesc && q.eventIdx:
		ev := ring.LoadAcquire16(q.drvEvent[0:2])
		if uint32(ev&packedIdxMask) >= uint32(q.size) {
			return true // a bogus event position: notify rather than stall
		}
		// Notify if the event position lies in [old, newPos): the
		// descriptors just used include it.
		return q.distance(old, ev) < q.distance(old, newPos)
	default:
		// RING_EVENT_FLAGS_DESC without VIRTIO_F_EVENT_IDX, or the
		// reserved value 3: the driver broke §2.8.14; notifying is the
		// safe answer.
		return true
	}
}

// setDeviceEvent stores the device event suppression structure (§2.8.14):
// desc (position, with EVENT_IDX), then flags, and logs it.
func (q *Queue) setDeviceEvent(flags, pos uint16) {
	if flags == eventFlagsDesc {
		ring.StoreRelease16(q.devEvent[0:2], pos)
	}
	if flags != q.devFlags {
		// Only the device writes this structure: a shadow of the flags
		// saves a store per Pop with EVENT_IDX (desc moves, flags not).
		ring.StoreRelease16(q.devEvent[2:4], flags)
		q.devFlags = flags
	}
	if l := q.log.Load(); l != nil {
		l.Mark(q.usedLog, eventSuppressSize)
	}
}

// availPending reports whether the descriptor at the device's position is
// available.
func (q *Queue) availPending() bool {
	idx := uint32(q.lastAvail & packedIdxMask)
	return isAvail(ring.LoadAcquire16(q.desc[idx*descSize+14:idx*descSize+16]), q.lastAvail)
}
