package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// Packed ring flags (virtio 1.2 §2.8.13) and event suppression flags
// (§2.8.14).
const (
	DescFAvail uint16 = 1 << 7  // VIRTQ_DESC_F_AVAIL
	DescFUsed  uint16 = 1 << 15 // VIRTQ_DESC_F_USED

	EventFlagsEnable  uint16 = 0 // RING_EVENT_FLAGS_ENABLE
	EventFlagsDisable uint16 = 1 // RING_EVENT_FLAGS_DISABLE
	EventFlagsDesc    uint16 = 2 // RING_EVENT_FLAGS_DESC

	// PackedWrap is the wrap counter bit of a packed ring position
	// (index | wrap<<15, the vhost-user encoding) and of desc_event.
	PackedWrap uint16 = 1 << 15
)

// PackedDesc is a raw struct pvirtq_desc (virtio 1.2 §2.8.13).
type PackedDesc struct {
	Addr  uint64
	Len   uint32
	ID    uint16
	Flags uint16
}

// packedState is the driver's side of a packed ring. Positions are
// index | wrap<<15; both wrap counters start at 1 (§2.8.1).
type packedState struct {
	avail     uint16 // where the next descriptor goes
	published uint16 // avail as of the last Publish
	used      uint16 // where the next used descriptor is read
	free      int    // ring descriptors not held by a buffer
	pending   []pendingHead

	// VIRTIO_F_IN_ORDER (§2.8.8): the ids of the buffers made available
	// and not used yet, in ring order (a circular queue of size entries:
	// at most size buffers are outstanding), and, while Used hands out
	// the buffers of one used descriptor that stood for a batch, the
	// Buffer ID and length that descriptor carried.
	order     []uint16
	orderHead int
	orderLen  int
	batch     bool
	batchID   uint16
	batchLen  uint32
}

// pendingHead is the first descriptor of a buffer added since the last
// Publish, whose flags Publish stores (making the buffer available).
type pendingHead struct {
	slot  uint32
	flags uint16
}

func (p *packedState) init(size uint16) {
	*p = packedState{avail: PackedWrap, published: PackedWrap, used: PackedWrap, free: int(size), order: make([]uint16, size)}
}

// inOrder reports whether VIRTIO_F_IN_ORDER was negotiated.
func (d *Driver) inOrder() bool { return d.features&virtio.FInOrder != 0 }

// pushOrder records buffer id as made available after the ones before it.
func (p *packedState) pushOrder(id uint16) {
	if p.orderLen == len(p.order) {
		return // more buffers than the ring holds: a test's raw writes
	}
	p.order[(p.orderHead+p.orderLen)%len(p.order)] = id
	p.orderLen++
}

// popOrder removes and returns the oldest outstanding buffer id.
func (p *packedState) popOrder() uint16 {
	id := p.order[p.orderHead]
	p.orderHead = (p.orderHead + 1) % len(p.order)
	p.orderLen--
	return id
}

// hasOrder reports whether buffer id is outstanding.
func (p *packedState) hasOrder(id uint16) bool {
	for i := range p.orderLen {
		if p.order[(p.orderHead+i)%len(p.order)] == id {
			return true
		}
	}
	return false
}

// advance moves position pos forward by k descriptors.
func (d *Driver) advance(pos, k uint16) uint16 {
	idx := uint32(pos&^PackedWrap) + uint32(k)
	w := pos & PackedWrap
	if idx >= uint32(d.size) {
		idx -= uint32(d.size)
		w ^= PackedWrap
	}
	return uint16(idx) | w
}

// distance returns how many descriptors lie from position a forward to b.
func (d *Driver) distance(a, b uint16) uint32 {
	lin := func(p uint16) int32 {
		l := int32(p &^ PackedWrap)
		if p&PackedWrap != 0 {
			l += int32(d.size)
		}
		return l
	}
	x := lin(b) - lin(a)
	if x < 0 {
		x += 2 * int32(d.size)
	}
	return uint32(x)
}

// availFlags returns the AVAIL/USED bits that make a descriptor at
// position pos available (§2.8.1): AVAIL equal to the wrap counter, USED
// its inverse.
func availFlags(pos uint16) uint16 {
	if pos&PackedWrap != 0 {
		return DescFAvail
	}
	return DescFUsed
}

// addPacked writes the descriptors of a buffer into the ring (§2.8.21.1),
// all but the first one's flags, which Publish stores.
func (d *Driver) addPacked(elems []Elem, indirect bool, slots []int32) (id uint16, err error) {
	ndesc := len(elems)
	if indirect {
		ndesc = 1
	}
	if ndesc > d.p.free || len(d.freeDesc) == 0 {
		return 0, ErrFull
	}
	var table []byte
	var tableGPA uint64
	if indirect {
		if tableGPA, table, slots, err = d.indirectTable(len(elems), slots); err != nil {
			return 0, err
		}
	}
	id = d.freeDesc[len(d.freeDesc)-1]
	d.freeDesc = d.freeDesc[:len(d.freeDesc)-1]
	h := &d.heads[id]
	h.live = true
	h.descs = append(h.descs[:0], id)
	h.n = uint16(ndesc)
	h.slots = append(h.slots[:0], slots...)
	h.in = h.in[:0]
	for _, e := range elems {
		if e.Write {
			h.in = append(h.in, e)
		}
	}
	d.p.free -= ndesc
	pos := d.p.avail
	head := pendingHead{slot: uint32(pos&^PackedWrap) * 16}
	if indirect {
		for i, e := range elems {
			f := uint16(0)
			if e.Write {
				f = DescFWrite
			}
			putPackedDesc(table[16*i:], PackedDesc{Addr: e.GPA, Len: e.Len, Flags: f})
		}
		putPackedDescBody(d.desc[head.slot:], PackedDesc{Addr: tableGPA, Len: uint32(16 * len(elems)), ID: id})
		head.flags = DescFIndirect | availFlags(pos)
	} else {
		for i, e := range elems {
			f := availFlags(pos)
			if e.Write {
				f |= DescFWrite
			}
			if i+1 < len(elems) {
				f |= DescFNext
			}
			slot := uint32(pos&^PackedWrap) * 16
			if i == 0 {
				// The flags stay as they are (the previous round's)
				// until Publish: zero flags would read as a used
				// descriptor in a round whose wrap counter is 0.
				putPackedDescBody(d.desc[slot:], PackedDesc{Addr: e.GPA, Len: e.Len, ID: id})
				head.flags = f
			} else {
				putPackedDesc(d.desc[slot:], PackedDesc{Addr: e.GPA, Len: e.Len, ID: id, Flags: f})
			}
			pos = d.advance(pos, 1)
		}
	}
	d.p.avail = d.advance(d.p.avail, uint16(ndesc))
	d.p.pending = append(d.p.pending, head)
	if d.inOrder() {
		d.p.pushOrder(id)
	}
	return id, nil
}

// publishPacked stores the flags of every pending first descriptor
// (release: the rest of each buffer first, §2.8.21.1) and reports whether
// the device wants a notification (§2.8.10, §2.8.23).
func (d *Driver) publishPacked() (kick bool) {
	for _, h := range d.p.pending {
		ring.StoreRelease16(d.desc[h.slot+14:h.slot+16], h.flags)
	}
	d.p.pending = d.p.pending[:0]
	old, cur := d.p.published, d.p.avail
	d.p.published = cur
	ring.FullFence() // our flags stores before the device's event load
	flags := ring.LoadAcquire16(d.used[2:4]) & 3
	switch flags {
	case EventFlagsDisable:
		return false
	case EventFlagsDesc:
		if d.features&virtio.FEventIdx == 0 {
			return true
		}
		ev := ring.LoadAcquire16(d.used[0:2])
		return d.distance(old, ev) < d.distance(old, cur)
	default:
		return true
	}
}

// usedPacked reads the used descriptor at the driver's position, if the
// device wrote it (§2.8.22: AVAIL and USED both equal to the wrap
// counter), and skips the descriptors of its buffer. With
// VIRTIO_F_IN_ORDER one used descriptor may stand for a batch (§2.8.8: its
// Buffer ID is the batch's last buffer's, and "the skipped buffers ... are
// assumed to have been used"): Used then returns the batch's buffers one
// call at a time, in the order they were made available, the skipped ones
// with length 0, each skipping its own descriptors.
func (d *Driver) usedPacked() (e UsedElem, ok bool) {
	pos := d.p.used
	if !d.p.batch {
		slot := uint32(pos&^PackedWrap) * 16
		f := ring.LoadAcquire16(d.desc[slot+14 : slot+16])
		w := pos >> 15
		if (f>>7)&1 != w || f>>15 != w {
			return UsedElem{}, false
		}
		id := binary.LittleEndian.Uint16(d.desc[slot+12:])
		e.Len = binary.LittleEndian.Uint32(d.desc[slot+8:])
		e.ID = uint32(id)
		if d.inOrder() && d.p.orderLen > 0 && d.p.order[d.p.orderHead] != id && d.p.hasOrder(id) {
			d.p.batch, d.p.batchID, d.p.batchLen = true, id, e.Len
		} else if d.inOrder() && d.p.orderLen > 0 && d.p.order[d.p.orderHead] == id {
			d.p.popOrder()
		}
	}
	if d.p.batch {
		id := d.p.popOrder()
		e = UsedElem{ID: uint32(id)}
		if id == d.p.batchID {
			e.Len = d.p.batchLen
			d.p.batch = false
		}
	}
	n := uint16(1)
	if e.ID < uint32(d.size) && d.heads[e.ID].live {
		n = d.heads[e.ID].n
	}
	d.p.used = d.advance(pos, n)
	if d.features&virtio.FEventIdx != 0 && !d.intrOff && !d.p.batch {
		d.setDriverEvent(d.p.used, EventFlagsDesc)
		// As for split rings (Used): the event store before the next
		// load of a used descriptor's flags.
		ring.FullFence()
	}
	if e.ID < uint32(d.size) {
		d.free(uint16(e.ID))
	}
	return e, true
}

// enableInterruptsPacked is EnableInterrupts for a packed ring.
func (d *Driver) enableInterruptsPacked() (pending bool) {
	if d.p.batch {
		return true // the rest of a used batch
	}
	if d.features&virtio.FEventIdx != 0 {
		d.setDriverEvent(d.p.used, EventFlagsDesc)
	} else {
		d.setDriverEvent(0, EventFlagsEnable)
	}
	ring.FullFence()
	slot := uint32(d.p.used&^PackedWrap) * 16
	f := ring.LoadAcquire16(d.desc[slot+14 : slot+16])
	w := d.p.used >> 15
	return (f>>7)&1 == w && f>>15 == w
}

// setDriverEvent stores the driver event suppression structure: desc
// (with RING_EVENT_FLAGS_DESC) then flags.
func (d *Driver) setDriverEvent(offWrap, flags uint16) {
	if flags == EventFlagsDesc {
		ring.StoreRelease16(d.avail[0:2], offWrap)
	}
	ring.StoreRelease16(d.avail[2:4], flags)
}

// Raw accessors of packed rings for hostile tests.

// WritePackedDesc writes descriptor i of the packed ring, its flags last
// (release): with the right AVAIL/USED bits that makes it available.
func (d *Driver) WritePackedDesc(i uint16, desc PackedDesc) {
	b := d.desc[16*uint32(i):]
	putPackedDescBody(b, desc)
	ring.StoreRelease16(b[14:16], desc.Flags)
}

// ReadPackedDesc reads descriptor i of the packed ring.
func (d *Driver) ReadPackedDesc(i uint16) PackedDesc {
	b := d.desc[16*uint32(i):]
	return PackedDesc{
		Addr:  binary.LittleEndian.Uint64(b),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		ID:    binary.LittleEndian.Uint16(b[12:]),
		Flags: ring.LoadAcquire16(b[14:16]),
	}
}

// WritePackedDescAt writes a packed descriptor at guest address gpa (an
// indirect table); it fails if gpa is not inside the driver's memory.
func (d *Driver) WritePackedDescAt(gpa uint64, desc PackedDesc) error {
	off := gpa - d.gpa
	if gpa < d.gpa || off >= uint64(len(d.mem)) || uint64(len(d.mem))-off < 16 {
		return fmt.Errorf("virtiotest: descriptor at %#x outside memory", gpa)
	}
	putPackedDesc(d.mem[off:], desc)
	return nil
}

// AvailFlags returns the AVAIL/USED bits that make the descriptor at the
// driver's next position available.
func (d *Driver) AvailFlags() uint16 { return availFlags(d.p.avail) }

// SetDriverEvent stores the driver event suppression structure raw.
func (d *Driver) SetDriverEvent(offWrap, flags uint16) {
	ring.StoreRelease16(d.avail[0:2], offWrap)
	ring.StoreRelease16(d.avail[2:4], flags)
}

// DeviceEvent returns the device event suppression structure: desc
// (offset | wrap<<15) and flags.
func (d *Driver) DeviceEvent() (offWrap, flags uint16) {
	return ring.LoadAcquire16(d.used[0:2]), ring.LoadAcquire16(d.used[2:4])
}

// Packed reports whether the driver lays out a packed ring.
func (d *Driver) Packed() bool { return d.packed }

// putPackedDescBody writes addr, len and id, not the flags.
func putPackedDescBody(b []byte, desc PackedDesc) {
	binary.LittleEndian.PutUint64(b[0:], desc.Addr)
	binary.LittleEndian.PutUint32(b[8:], desc.Len)
	binary.LittleEndian.PutUint16(b[12:], desc.ID)
}

func putPackedDesc(b []byte, desc PackedDesc) {
	binary.LittleEndian.PutUint64(b[0:], desc.Addr)
	binary.LittleEndian.PutUint32(b[8:], desc.Len)
	binary.LittleEndian.PutUint16(b[12:], desc.ID)
	binary.LittleEndian.PutUint16(b[14:], desc.Flags)
}
