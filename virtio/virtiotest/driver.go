package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// Descriptor flags (virtio 1.2 §2.7.5).
const (
	DescFNext     uint16 = 1 // VIRTQ_DESC_F_NEXT
	DescFWrite    uint16 = 2 // VIRTQ_DESC_F_WRITE
	DescFIndirect uint16 = 4 // VIRTQ_DESC_F_INDIRECT
)

// Ring flags (virtio 1.2 §2.7.6, §2.7.8).
const (
	AvailFNoInterrupt uint16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	UsedFNoNotify     uint16 = 1 // VIRTQ_USED_F_NO_NOTIFY
)

// ErrFull means the driver has no free descriptor or buffer slot left.
var ErrFull = errors.New("virtiotest: queue full")

// Desc is a raw struct virtq_desc (virtio 1.2 §2.7.5).
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Elem is one buffer of a chain added with AddElems.
type Elem struct {
	GPA   uint64 // guest physical address of the buffer
	Len   uint32
	Write bool // device-writable
}

// UsedElem is one struct virtq_used_elem read back from the used ring.
type UsedElem struct {
	ID  uint32 // head of the chain the device used
	Len uint32 // bytes the device wrote
}

// DriverOptions tunes NewDriver; the zero value is fine.
type DriverOptions struct {
	// SlotSize is the size of each buffer slot of the buffer area; every
	// buffer of AddOut/AddIn/AddChain, and every indirect table, takes one
	// slot. Default 2048.
	SlotSize uint32
	// UsedAlign aligns the used ring: 4 (default, virtio 1.x) or 4096 for
	// the legacy layout. Ignored for packed rings.
	UsedAlign uint64
	// Packed lays out a packed virtqueue (virtio 1.2 §2.8): descriptor
	// ring, driver and device event suppression structures; the driver
	// then behaves as a packed one (packed.go). Config's features must
	// include virtio.FRingPacked.
	Packed bool
	// KeepIn makes AddChain leave device-writable buffers as they are
	// instead of zeroing them first. A real driver does not clear its
	// receive buffers; tests that compare what the device wrote keep the
	// zeroing (stale bytes from an earlier use could hide a short write),
	// benchmarks skip it (a 64 KiB frame's receive buffers cost a 64 KiB
	// clear in the driver).
	KeepIn bool
}

// Driver is the driver side of one split virtqueue in mem, or of a packed
// one (DriverOptions.Packed).
type Driver struct {
	mem      []byte
	gpa      uint64
	size     uint16
	features uint64

	desc, avail, used []byte // the three parts, views of mem
	availRing         []byte
	usedRing          []byte
	usedEvent         []byte // avail->used_event
	availEvent        []byte // used->avail_event

	usedOff  uint64
	slotOff  uint64
	slotSize uint32
	nslots   int

	availIdx  uint16 // shadow, including unpublished entries
	published uint16
	lastUsed  uint16
	intrOff   bool

	freeDesc  []uint16 // split: free descriptors; packed: free buffer ids
	freeSlots []int32
	heads     []headState // per head descriptor (packed: per buffer id)

	packed bool
	p      packedState
	keepIn bool
}

// headState is what the driver remembers about an added chain.
type headState struct {
	live  bool
	descs []uint16 // descriptor table entries the chain holds (packed: its buffer id)
	n     uint16   // packed: ring descriptors the buffer takes
	slots []int32  // buffer slots it holds
	in    []Elem   // its device-writable buffers, for ReadIn
}

// NewDriver lays out a queue of size descriptors in mem, which the device
// sees at guest physical address memGPA: descriptor table at mem[0], then
// the available ring, the used ring and the buffer area. memGPA must be
// 16-byte aligned and mem must start at a host address aligned the same.
func NewDriver(mem []byte, memGPA uint64, size uint16, opt DriverOptions) (*Driver, error) {
	q := uint64(size)
	if q == 0 || q > virtio.MaxQueueSize || q&(q-1) != 0 && !opt.Packed {
		return nil, fmt.Errorf("virtiotest: queue size %d not a power of two (split) or not in 1..32768", size)
	}
	if memGPA%16 != 0 || !ring.Aligned(mem, 16) {
		return nil, fmt.Errorf("virtiotest: memory at %#x not 16-byte aligned", memGPA)
	}
	if uint64(len(mem)) > math.MaxUint64-memGPA {
		return nil, fmt.Errorf("virtiotest: memory at %#x+%#x wraps", memGPA, len(mem))
	}
	if opt.SlotSize == 0 {
		opt.SlotSize = 2048
	}
	if opt.UsedAlign == 0 {
		opt.UsedAlign = 4
	}
	if opt.UsedAlign&(opt.UsedAlign-1) != 0 || opt.UsedAlign < 4 {
		return nil, fmt.Errorf("virtiotest: used ring alignment %d", opt.UsedAlign)
	}
	availOff := 16 * q
	usedOff := alignUp(availOff+6+2*q, opt.UsedAlign)
	usedEnd := usedOff + 6 + 8*q
	if opt.Packed {
		// Descriptor ring, then the driver and the device event
		// suppression structures (4 bytes each, 4-byte aligned).
		usedOff = availOff + 4
		usedEnd = usedOff + 4
	}
	slotOff := alignUp(usedEnd, 64)
	if slotOff > uint64(len(mem)) {
		return nil, fmt.Errorf("virtiotest: %d bytes of memory hold no queue of size %d (%d needed)", len(mem), size, slotOff)
	}
	d := &Driver{
		mem:       mem,
		gpa:       memGPA,
		size:      size,
		desc:      mem[0:availOff:availOff],
		avail:     mem[availOff : availOff+6+2*q : availOff+6+2*q],
		used:      mem[usedOff:usedEnd:usedEnd],
		usedOff:   usedOff,
		slotOff:   slotOff,
		slotSize:  opt.SlotSize,
		nslots:    int((uint64(len(mem)) - slotOff) / uint64(opt.SlotSize)),
		freeDesc:  make([]uint16, 0, size),
		heads:     make([]headState, size),
		freeSlots: nil,
	}
	d.keepIn = opt.KeepIn
	if opt.Packed {
		d.packed = true
		d.avail = mem[availOff : availOff+4 : availOff+4]
		d.p.init(size)
	} else {
		d.availRing = d.avail[4 : 4+2*q]
		d.usedEvent = d.avail[4+2*q : 6+2*q]
		d.usedRing = d.used[4 : 4+8*q]
		d.availEvent = d.used[4+8*q : 6+8*q]
	}
	clear(mem[:slotOff])
	for i := int(size) - 1; i >= 0; i-- {
		d.freeDesc = append(d.freeDesc, uint16(i))
	}
	d.freeSlots = make([]int32, 0, d.nslots)
	for i := d.nslots - 1; i >= 0; i-- {
		d.freeSlots = append(d.freeSlots, int32(i))
	}
	return d, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Config returns the queue configuration a device needs, with features as
// the negotiated features; the driver behaves by them from now on
// (VIRTIO_F_EVENT_IDX: used_event/avail_event instead of the flags).
func (d *Driver) Config(features uint64) virtio.QueueConfig {
	d.features = features
	c := virtio.QueueConfig{
		Size:      d.size,
		DescGPA:   d.DescGPA(),
		AvailGPA:  d.AvailGPA(),
		UsedGPA:   d.UsedGPA(),
		Features:  features,
		LastAvail: d.published,
	}
	if d.packed {
		c.LastAvail, c.LastUsed = d.p.published, d.p.used
	}
	return c
}

// Region returns the guest memory region of the driver's memory, with the
// user address equal to the guest physical address.
func (d *Driver) Region() virtio.Region {
	return virtio.Region{GuestPhysAddr: d.gpa, Size: uint64(len(d.mem)), UserAddr: d.gpa, Data: d.mem}
}

// Size returns the queue size.
func (d *Driver) Size() uint16 { return d.size }

// Mem returns the driver's memory; Mem()[0] is at guest address MemGPA().
func (d *Driver) Mem() []byte { return d.mem }

// MemGPA returns the guest physical address of Mem()[0].
func (d *Driver) MemGPA() uint64 { return d.gpa }

// DescGPA returns the guest physical address of the descriptor table.
func (d *Driver) DescGPA() uint64 { return d.gpa }

// AvailGPA returns the guest physical address of the available ring
// (packed: of the driver event suppression structure).
func (d *Driver) AvailGPA() uint64 { return d.gpa + uint64(16*int(d.size)) }

// UsedGPA returns the guest physical address of the used ring (packed: of
// the device event suppression structure).
func (d *Driver) UsedGPA() uint64 { return d.gpa + d.usedOff }

// Slots returns the number of buffer slots and their size.
func (d *Driver) Slots() (n int, size uint32) { return d.nslots, d.slotSize }

// Slot returns the guest address and the bytes of buffer slot i, for raw
// use by hostile tests (AddOut/AddIn may use the same slot).
func (d *Driver) Slot(i int) (gpa uint64, b []byte) {
	off := d.slotOff + uint64(i)*uint64(d.slotSize)
	return d.gpa + off, d.mem[off : off+uint64(d.slotSize) : off+uint64(d.slotSize)]
}

// FreeDescs returns the number of free descriptors.
func (d *Driver) FreeDescs() int {
	if d.packed {
		return d.p.free
	}
	return len(d.freeDesc)
}

// AddOut adds a direct chain of device-readable buffers, one descriptor per
// element of bufs, copied into buffer slots. It returns the head.
func (d *Driver) AddOut(bufs ...[]byte) (head uint16, err error) { return d.AddChain(bufs, nil, false) }

// AddIn adds a direct chain of device-writable buffers of the given
// lengths, one descriptor each.
func (d *Driver) AddIn(lens ...uint32) (head uint16, err error) { return d.AddChain(nil, lens, false) }

// AddChain adds a chain of device-readable buffers holding out followed by
// device-writable buffers of the lengths in, one descriptor per buffer, as
// a direct chain or through one indirect table. The entry goes into the
// avail ring; the device sees it after Publish.
func (d *Driver) AddChain(out [][]byte, in []uint32, indirect bool) (head uint16, err error) {
	k := len(out) + len(in)
	need := k
	if indirect {
		need++
	}
	if k == 0 {
		return 0, fmt.Errorf("virtiotest: empty chain")
	}
	if need > len(d.freeSlots) {
		return 0, ErrFull
	}
	var elems [64]Elem
	es := elems[:0]
	var slots [65]int32
	ss := slots[:0]
	for _, b := range out {
		if uint64(len(b)) > uint64(d.slotSize) {
			return 0, fmt.Errorf("virtiotest: buffer of %d bytes exceeds slot size %d", len(b), d.slotSize)
		}
	}
	for _, l := range in {
		if l > d.slotSize {
			return 0, fmt.Errorf("virtiotest: buffer of %d bytes exceeds slot size %d", l, d.slotSize)
		}
	}
	take := func() (uint64, []byte) {
		s := d.freeSlots[len(d.freeSlots)-1]
		d.freeSlots = d.freeSlots[:len(d.freeSlots)-1]
		ss = append(ss, s)
		return d.Slot(int(s))
	}
	for _, b := range out {
		gpa, sb := take()
		copy(sb, b)
		es = append(es, Elem{GPA: gpa, Len: uint32(len(b))})
	}
	for _, l := range in {
		gpa, sb := take()
		if !d.keepIn {
			clear(sb[:l])
		}
		es = append(es, Elem{GPA: gpa, Len: l, Write: true})
	}
	head, err = d.add(es, indirect, ss)
	if err != nil {
		d.freeSlots = append(d.freeSlots, ss...)
	}
	return head, err
}

// AddElems adds a chain of caller-provided buffers (anywhere, even outside
// guest memory, for hostile tests), direct or through one indirect table
// (which takes a buffer slot).
func (d *Driver) AddElems(elems []Elem, indirect bool) (head uint16, err error) {
	return d.add(elems, indirect, nil)
}

// indirectTable takes a buffer slot for an indirect descriptor table of n
// entries (split and packed rings alike: 16 bytes an entry) and returns
// its guest address and bytes, with the slot appended to slots.
func (d *Driver) indirectTable(n int, slots []int32) (gpa uint64, table []byte, _ []int32, err error) {
	if uint64(n)*16 > uint64(d.slotSize) {
		return 0, nil, slots, fmt.Errorf("virtiotest: indirect table of %d entries exceeds slot size %d", n, d.slotSize)
	}
	if len(d.freeSlots) == 0 {
		return 0, nil, slots, ErrFull
	}
	s := d.freeSlots[len(d.freeSlots)-1]
	d.freeSlots = d.freeSlots[:len(d.freeSlots)-1]
	gpa, table = d.Slot(int(s))
	return gpa, table, append(slots, s), nil
}

// add writes the descriptors of elems and the avail ring entry.
func (d *Driver) add(elems []Elem, indirect bool, slots []int32) (head uint16, err error) {
	if len(elems) == 0 {
		return 0, fmt.Errorf("virtiotest: empty chain")
	}
	if d.packed {
		return d.addPacked(elems, indirect, slots)
	}
	ndesc := len(elems)
	if indirect {
		ndesc = 1
	}
	if ndesc > len(d.freeDesc) {
		return 0, ErrFull
	}
	var table []byte
	var tableGPA uint64
	if indirect {
		if tableGPA, table, slots, err = d.indirectTable(len(elems), slots); err != nil {
			return 0, err
		}
	}
	descs := d.freeDesc[len(d.freeDesc)-ndesc:]
	d.freeDesc = d.freeDesc[:len(d.freeDesc)-ndesc]
	head = descs[len(descs)-1]
	h := &d.heads[head]
	h.live = true
	h.descs = append(h.descs[:0], descs...)
	h.slots = append(h.slots[:0], slots...)
	h.in = h.in[:0]
	for i, e := range elems {
		flags := uint16(0)
		if e.Write {
			flags |= DescFWrite
			h.in = append(h.in, e)
		}
		var next uint16
		if i+1 < len(elems) {
			flags |= DescFNext
			if indirect {
				next = uint16(i + 1)
			} else {
				next = descs[len(descs)-2-i]
			}
		}
		dd := Desc{Addr: e.GPA, Len: e.Len, Flags: flags, Next: next}
		if indirect {
			putDesc(table[16*i:], dd)
		} else {
			d.WriteDesc(descs[len(descs)-1-i], dd)
		}
	}
	if indirect {
		d.WriteDesc(head, Desc{Addr: tableGPA, Len: uint32(16 * len(elems)), Flags: DescFIndirect})
	}
	d.AddHead(head)
	return head, nil
}

// AddHead puts head into the next avail ring entry without touching any
// descriptor (raw; the device sees it after Publish).
func (d *Driver) AddHead(head uint16) {
	slot := uint32(d.availIdx&(d.size-1)) * 2
	binary.LittleEndian.PutUint16(d.availRing[slot:], head)
	d.availIdx++
}

// Publish stores the avail index (release: descriptors and ring entries
// first, virtio 1.2 §2.7.13.2) and reports whether the device asked for a
// kick: with VIRTIO_F_EVENT_IDX when the index passed avail_event, else
// unless VIRTQ_USED_F_NO_NOTIFY is set (§2.7.13.3).
func (d *Driver) Publish() (kick bool) {
	if d.packed {
		return d.publishPacked()
	}
	old, cur := d.published, d.availIdx
	ring.StoreRelease16(d.avail[2:4], cur)
	d.published = cur
	ring.FullFence() // our idx store before the device's event/flags load
	if d.features&virtio.FEventIdx != 0 {
		ev := ring.LoadAcquire16(d.availEvent)
		return cur-ev-1 < cur-old
	}
	return ring.LoadAcquire16(d.used[0:2])&UsedFNoNotify == 0
}

// Used returns the next used element, if the device published one, and
// frees the chain's descriptors and slots (its In bytes stay readable with
// ReadIn until the next Add). With VIRTIO_F_EVENT_IDX and interrupts
// enabled it moves used_event past the element, as Linux does.
func (d *Driver) Used() (e UsedElem, ok bool) {
	if d.packed {
		return d.usedPacked()
	}
	idx := ring.LoadAcquire16(d.used[2:4])
	if idx == d.lastUsed {
		return UsedElem{}, false
	}
	slot := uint32(d.lastUsed&(d.size-1)) * 8
	e.ID = binary.LittleEndian.Uint32(d.usedRing[slot:])
	e.Len = binary.LittleEndian.Uint32(d.usedRing[slot+4:])
	d.lastUsed++
	if d.features&virtio.FEventIdx != 0 && !d.intrOff {
		ring.StoreRelease16(d.usedEvent, d.lastUsed)
		// The store must be visible before the next Used loads used->idx
		// (Linux: virtio_store_mb in virtqueue_get_buf_ctx_split): else a
		// device publishing in between reads the old used_event, skips
		// the notification, and a driver that found nothing new sleeps
		// on a call that never comes (TestUsedEventNoLostWakeup).
		ring.FullFence()
	}
	if e.ID < uint32(d.size) {
		d.free(uint16(e.ID))
	}
	return e, true
}

// free returns the descriptors and slots of chain head.
func (d *Driver) free(head uint16) {
	h := &d.heads[head]
	if !h.live {
		return
	}
	h.live = false
	d.p.free += int(h.n)
	d.freeDesc = append(d.freeDesc, h.descs...)
	d.freeSlots = append(d.freeSlots, h.slots...)
}

// ReadIn copies the device-writable buffers of chain head, in order, into
// dst and returns the number of bytes copied. Valid after Used until the
// next Add.
func (d *Driver) ReadIn(head uint16, dst []byte) int {
	n := 0
	for _, e := range d.heads[head].in {
		off := e.GPA - d.gpa
		if off >= uint64(len(d.mem)) || uint64(e.Len) > uint64(len(d.mem))-off {
			break
		}
		n += copy(dst[n:], d.mem[off:off+uint64(e.Len)])
		if n == len(dst) {
			break
		}
	}
	return n
}

// EnableInterrupts asks the device for used buffer notifications (used_event
// = next used index with VIRTIO_F_EVENT_IDX, else clears
// VIRTQ_AVAIL_F_NO_INTERRUPT) and reports whether used elements are
// already pending.
func (d *Driver) EnableInterrupts() (pending bool) {
	d.intrOff = false
	if d.packed {
		return d.enableInterruptsPacked()
	}
	if d.features&virtio.FEventIdx != 0 {
		ring.StoreRelease16(d.usedEvent, d.lastUsed)
	} else {
		ring.StoreRelease16(d.avail[0:2], 0)
	}
	ring.FullFence()
	return ring.LoadAcquire16(d.used[2:4]) != d.lastUsed
}

// DisableInterrupts asks the device not to notify: sets
// VIRTQ_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX moves used_event
// half the index space away.
func (d *Driver) DisableInterrupts() {
	d.intrOff = true
	if d.packed {
		d.setDriverEvent(0, EventFlagsDisable)
		return
	}
	if d.features&virtio.FEventIdx != 0 {
		ring.StoreRelease16(d.usedEvent, d.lastUsed+0x8000)
	} else {
		ring.StoreRelease16(d.avail[0:2], AvailFNoInterrupt)
	}
}

// Raw accessors for hostile tests.

// WriteDesc writes descriptor i of the descriptor table (i < Size).
func (d *Driver) WriteDesc(i uint16, desc Desc) { putDesc(d.desc[16*uint32(i):], desc) }

// ReadDesc reads descriptor i of the descriptor table.
func (d *Driver) ReadDesc(i uint16) Desc {
	b := d.desc[16*uint32(i):]
	return Desc{
		Addr:  binary.LittleEndian.Uint64(b),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		Flags: binary.LittleEndian.Uint16(b[12:]),
		Next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// WriteDescAt writes a descriptor at guest address gpa (an indirect
// table); it fails if gpa is not inside the driver's memory.
func (d *Driver) WriteDescAt(gpa uint64, desc Desc) error {
	off := gpa - d.gpa
	if gpa < d.gpa || off >= uint64(len(d.mem)) || uint64(len(d.mem))-off < 16 {
		return fmt.Errorf("virtiotest: descriptor at %#x outside memory", gpa)
	}
	putDesc(d.mem[off:], desc)
	return nil
}

func putDesc(b []byte, desc Desc) {
	binary.LittleEndian.PutUint64(b[0:], desc.Addr)
	binary.LittleEndian.PutUint32(b[8:], desc.Len)
	binary.LittleEndian.PutUint16(b[12:], desc.Flags)
	binary.LittleEndian.PutUint16(b[14:], desc.Next)
}

// SetAvailEntry writes avail->ring[slot % Size] = head.
func (d *Driver) SetAvailEntry(slot, head uint16) {
	binary.LittleEndian.PutUint16(d.availRing[2*uint32(slot&(d.size-1)):], head)
}

// SetAvailIdx stores avail->idx = idx (release), whatever was added: a
// raw writer for index jumps and decrements.
func (d *Driver) SetAvailIdx(idx uint16) {
	d.availIdx, d.published = idx, idx
	ring.StoreRelease16(d.avail[2:4], idx)
}

// AvailIdx returns the driver's avail index, including unpublished entries
// (packed: its position, index | wrap<<15).
func (d *Driver) AvailIdx() uint16 {
	if d.packed {
		return d.p.avail
	}
	return d.availIdx
}

// SetAvailFlags stores avail->flags.
func (d *Driver) SetAvailFlags(f uint16) { ring.StoreRelease16(d.avail[0:2], f) }

// SetUsedEvent stores avail->used_event.
func (d *Driver) SetUsedEvent(v uint16) { ring.StoreRelease16(d.usedEvent, v) }

// UsedEvent returns avail->used_event.
func (d *Driver) UsedEvent() uint16 { return ring.LoadAcquire16(d.usedEvent) }

// AvailEvent returns used->avail_event as the device last stored it.
func (d *Driver) AvailEvent() uint16 { return ring.LoadAcquire16(d.availEvent) }

// UsedFlags returns used->flags.
func (d *Driver) UsedFlags() uint16 { return ring.LoadAcquire16(d.used[0:2]) }

// UsedIdx returns used->idx as the device last published it (packed: the
// position after the used descriptors the device published that the
// driver read, which is all it can know).
func (d *Driver) UsedIdx() uint16 {
	if d.packed {
		return d.p.used
	}
	return ring.LoadAcquire16(d.used[2:4])
}

// LastUsed returns the next used index the driver will read (packed: its
// position, index | wrap<<15).
func (d *Driver) LastUsed() uint16 {
	if d.packed {
		return d.p.used
	}
	return d.lastUsed
}

// SetUsedIdx stores used->idx, for a test that resumes a ring mid-way.
func (d *Driver) SetUsedIdx(v uint16) {
	d.lastUsed = v
	ring.StoreRelease16(d.used[2:4], v)
}

// MustReadv is Readv of all of frame: t fails if bufs cannot hold it.
func MustReadv(t testing.TB, bufs [][]byte, frame []byte, from int) (tail [][]byte) {
	t.Helper()
	tail, n := Readv(bufs, frame, from)
	if n != len(frame) {
		t.Fatalf("virtiotest: %d of %d bytes fit the buffers", n, len(frame))
	}
	return tail
}

// Readv writes frame across bufs in order, as readv(2) into them would (the
// kernel's read of a frame into receive buffers a device reserved, see
// virtio.NetRX.Reserve), and returns how many bytes it wrote and the
// scatter list of frame's bytes from offset from on, where they now are in
// bufs.
func Readv(bufs [][]byte, frame []byte, from int) (tail [][]byte, n int) {
	for _, b := range bufs {
		if n == len(frame) {
			break
		}
		k := copy(b, frame[n:])
		if lo := max(from-n, 0); lo < k {
			tail = append(tail, b[lo:k])
		}
		n += k
	}
	return tail, n
}
