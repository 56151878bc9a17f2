package virtio

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// Split virtqueue layout (virtio 1.2 §2.7): descriptor flags and ring flags.
const (
	descFNext     = 1 // VIRTQ_DESC_F_NEXT
	descFWrite    = 2 // VIRTQ_DESC_F_WRITE
	descFIndirect = 4 // VIRTQ_DESC_F_INDIRECT

	availFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	usedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY

	descSize     = 16 // struct virtq_desc
	usedElemSize = 8  // struct virtq_used_elem

	// MaxQueueSize is the largest split virtqueue (virtio 1.2 §2.7: "Queue
	// Size value is always a power of 2. The maximum Queue Size value is
	// 32768").
	MaxQueueSize = 32768
)

// QueueConfig describes a virtqueue as the driver set it up: a split one
// (virtio 1.2 §2.7), or a packed one when Features has FRingPacked (§2.8:
// DescGPA is then the descriptor ring, AvailGPA the driver area (driver
// event suppression) and UsedGPA the device area (device event
// suppression)).
type QueueConfig struct {
	Size                       uint16 // split: power of two, 1..32768; packed: 1..32768
	DescGPA, AvailGPA, UsedGPA uint64 // guest physical addresses of the three parts
	Features                   uint64 // negotiated feature bits (FEventIdx, FIndirectDesc, NetFMrgRxbuf, FRingPacked, ...)
	// LastAvail is the next avail index to consume (vhost-user
	// SET_VRING_BASE); packed: the position, index | avail wrap counter<<15
	// (0x8000 for a new ring, whose wrap counters start at 1, §2.8.1).
	LastAvail uint16
	// LastUsed is, for a packed ring only, the position (index | used wrap
	// counter<<15) of the next used descriptor; a split ring reads used->idx
	// from guest memory instead.
	LastUsed   uint16
	UsedLogGPA uint64 // GPA to log used-ring (packed: device area) writes at (vhost-user log_guest_addr); 0 = UsedGPA
}

// Queue is the device side of a split virtqueue (virtio 1.2 §2.7), worked
// in place in guest memory.
//
// One goroutine at a time uses a Queue (SetLog excepted). Every value the
// guest controls (ring indices, ring entries, descriptors) is read once into
// backend memory and only the copy is used. Any guest error breaks the
// queue: the error wraps ErrBroken and is returned by every later call; a
// broken queue never touches guest memory again.
type Queue struct {
	// Hot fields first.
	desc       []byte // descriptor table, size*16
	availRing  []byte // avail->ring[], size*2
	availIdx   []byte // avail->idx
	usedRing   []byte // used->ring[], size*8
	usedIdxB   []byte // used->idx
	regions    []region
	hint       int // region index of the last lookup
	lastAvail  uint16
	availCache uint16 // avail->idx as last loaded; lastAvail..availCache are available
	usedIdx    uint16 // used->idx the next Publish stores
	published  uint16 // used->idx as last stored
	mask       uint16
	size       uint16
	indirect   bool
	eventIdx   bool
	notifyOff  bool
	err        error
	log        atomic.Pointer[DirtyLog]
	onBroken   func(error) // OnBroken

	availFlags    []byte // avail->flags
	usedEvent     []byte // avail->used_event (EVENT_IDX only)
	usedFlags     []byte // used->flags
	availEvent    []byte // used->avail_event (EVENT_IDX only)
	mem           *Memory
	features      uint64
	notifyOnEmpty bool
	usedLog       uint64 // GPA used-ring writes are logged at
	signalled     uint16 // used->idx at the last NeedNotify (or NewQueue)
	signalledOK   bool   // a NeedNotify has run: signalled is a notified index
	scratch       []byte // copy of an indirect table that crosses regions
	resyncedFrom  uint16 // the base resyncBase replaced, if resynced
	resynced      bool

	// Packed rings only (packed.go).
	packed     bool
	drvEvent   []byte   // driver event suppression (driver area)
	devEvent   []byte   // device event suppression (device area)
	descGPA    uint64   // GPA of the descriptor ring (used writes are logged there)
	pcount     []uint16 // ring descriptors of each buffer id in flight
	phist      []uint16 // positions before the last pops (Unpop)
	phmask     uint16   // len(phist)-1
	nhist      uint16   // pops so far (index into phist)
	firstFlags uint16   // flags of the used descriptor at published, stored by Publish
	shadow     []uint64 // bytes 8..15 of each ring descriptor as last popped (Rewind)
	devFlags   uint16   // device event flags as last stored (0xffff: none yet)
}

// NewQueue validates cfg against mem and returns the queue: a packed one
// (virtio 1.2 §2.8, packed.go) when cfg.Features has FRingPacked, else a
// split one. It checks the size (a power of two, 1..32768), the alignment of the three parts (16, 2
// and 4, virtio 1.2 §2.7 table "Virtqueue Part Alignment"), that each part
// lies wholly inside one region, and reads used->idx as the first used
// index (vhost-user: the rings resume where they were).
func NewQueue(mem *Memory, cfg QueueConfig) (*Queue, error) {
	n := uint64(cfg.Size)
	if mem == nil {
		return nil, fmt.Errorf("queue: no guest memory: %w", ErrOutOfBounds)
	}
	if cfg.Features&FRingPacked != 0 {
		return newPackedQueue(mem, cfg)
	}
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("queue size %d: not a power of two in 1..32768: %w", n, ErrBadRing)
	}
	eventIdx := cfg.Features&FEventIdx != 0
	var extra uint64 // used_event / avail_event
	if eventIdx {
		extra = 2
	}
	b, err := mapRingParts(mem, [3]ringPart{
		{"descriptor table", cfg.DescGPA, descSize * n, 16},
		{"available ring", cfg.AvailGPA, 4 + 2*n + extra, 2},
		{"used ring", cfg.UsedGPA, 4 + usedElemSize*n + extra, 4},
	})
	if err != nil {
		return nil, err
	}
	desc, avail, used := b[0], b[1], b[2]
	q := &Queue{
		desc:          desc,
		availFlags:    avail[0:2:2],
		availIdx:      avail[2:4:4],
		availRing:     avail[4 : 4+2*n : 4+2*n],
		usedFlags:     used[0:2:2],
		usedIdxB:      used[2:4:4],
		usedRing:      used[4 : 4+usedElemSize*n : 4+usedElemSize*n],
		regions:       mem.regions,
		mem:           mem,
		size:          cfg.Size,
		mask:          cfg.Size - 1,
		features:      cfg.Features,
		indirect:      cfg.Features&FIndirectDesc != 0,
		eventIdx:      eventIdx,
		notifyOnEmpty: cfg.Features&FNotifyOnEmpty != 0,
		lastAvail:     cfg.LastAvail,
		availCache:    cfg.LastAvail,
		usedLog:       cfg.UsedLogGPA,
	}
	if eventIdx {
		q.usedEvent = avail[4+2*n : 6+2*n : 6+2*n]
		q.availEvent = used[4+usedElemSize*n : 6+usedElemSize*n : 6+usedElemSize*n]
	}
	if q.usedLog == 0 {
		q.usedLog = cfg.UsedGPA
	}
	if q.usedLog > math.MaxUint64-uint64(len(used)) {
		return nil, fmt.Errorf("used ring log address %#x wraps: %w", q.usedLog, ErrBadRing)
	}
	q.usedIdx = ring.LoadAcquire16(q.usedIdxB)
	q.published = q.usedIdx
	q.signalled = q.usedIdx
	q.resyncBase()
	return q, nil
}

// resyncBase starts a split ring whose base (SET_VRING_BASE) is out of
// reach of its avail index at its used index instead, when that one is in
// reach: the driver lost track of where the device stood, but the ring
// still says what the driver has seen completed. DPDK
// 22.11's virtio_user, reconnecting as the vhost-user server to a new
// backend (server=1), keeps its split rings running and sends base 0:
// avail->idx was 52544 in one run. Without this the first Pop breaks the
// queue ("avail idx moved from 0 to 52544") and the frontend is cut off
// until it restarts, which a restart of the backend must not do. The used
// index is what the driver has seen completed, so consuming from there
// loses nothing: chains the previous backend took and never returned are
// taken again (a frame sent twice, a receive buffer filled once), as
// without inflight tracking (vhost-user spec, "Inflight I/O tracking")
// nothing better is known. DPDK's vhost library resynchronizes the same
// way. A base in reach is kept as it is, whatever the used index: that is
// a driver that knows where the ring stands (QEMU).
func (q *Queue) resyncBase() {
	avail := ring.LoadAcquire16(q.availIdx)
	if avail-q.lastAvail <= q.size || avail-q.usedIdx > q.size {
		return
	}
	q.resyncedFrom, q.resynced = q.lastAvail, true
	q.lastAvail, q.availCache = q.usedIdx, q.usedIdx
}

// Resynced reports whether the queue started at its used index instead
// of the base it was given, and that base (resyncBase).
func (q *Queue) Resynced() (base uint16, ok bool) { return q.resyncedFrom, q.resynced }

// Size returns the number of descriptors (the queue size).
func (q *Queue) Size() uint16 { return q.size }

// Features returns the negotiated feature bits the queue was made with.
func (q *Queue) Features() uint64 { return q.features }

// Memory returns the guest memory the queue works in.
func (q *Queue) Memory() *Memory { return q.mem }

// LastAvail returns the next avail index the device will consume
// (vhost-user GET_VRING_BASE); packed: its position, index | wrap<<15.
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// UsedIdx returns the used index the next Publish will store; packed: the
// position, index | wrap<<15, after the last pushed used descriptor.
func (q *Queue) UsedIdx() uint16 { return q.usedIdx }

// Packed reports whether the queue is a packed virtqueue (virtio 1.2 §2.8).
func (q *Queue) Packed() bool { return q.packed }

// Err returns the error that broke the queue, or nil.
func (q *Queue) Err() error { return q.err }

// SetLog sets the dirty log every later guest write of the queue is marked
// in; nil turns logging off. It is safe to call from another goroutine
// while the queue runs.
func (q *Queue) SetLog(l *DirtyLog) { q.log.Store(l) }

// brk breaks the queue with err (which says what the guest did wrong) and
// returns the sticky error.
func (q *Queue) brk(err error) error {
	if q.err == nil {
		q.err = fmt.Errorf("%w: %w", ErrBroken, err)
		if q.onBroken != nil {
			q.onBroken(q.err)
		}
	}
	return q.err
}

// Pop reads the next available descriptor chain into c. It returns
// ok=false, err=nil when no chain is available. Any guest error breaks the
// queue: err wraps ErrBroken (and the detail: ErrBadRing, ErrBadChain or
// ErrOutOfBounds), and every later call returns it.
func (q *Queue) Pop(c *Chain) (ok bool, err error) {
	if q.err != nil {
		return false, q.err
	}
	if q.packed {
		return q.popPacked(c)
	}
	if q.lastAvail == q.availCache {
		// Acquire: the ring entry and the descriptors it names are read
		// after avail->idx (virtio 1.2 §2.7.13.2: the driver publishes
		// idx after writing them, with a write barrier in between).
		idx := ring.LoadAcquire16(q.availIdx)
		// virtio 1.2 §2.7.6: idx only moves forward and the driver can
		// offer at most Queue Size chains beyond the device's position.
		if d := idx - q.lastAvail; d > q.size {
			return false, q.brk(fmt.Errorf("avail idx moved from %d to %d (queue size %d): %w", q.lastAvail, idx, q.size, ErrBadRing))
		}
		q.availCache = idx
		if idx == q.lastAvail {
			return false, nil
		}
	}
	slot := uint32(q.lastAvail&q.mask) * 2
	head := binary.LittleEndian.Uint16(q.availRing[slot : slot+2])
	if head >= q.size {
		return false, q.brk(fmt.Errorf("avail ring entry %d: head %d out of range (queue size %d): %w", q.lastAvail, head, q.size, ErrBadChain))
	}
	if !q.oneReadable(c, head) {
		if err := q.walk(c, head); err != nil {
			return false, q.brk(fmt.Errorf("chain at head %d: %w", head, err))
		}
	}
	q.lastAvail++
	if q.eventIdx && !q.notifyOff {
		q.setAvailEvent(q.lastAvail)
	}
	return true, nil
}

// peekWritable is Pop's fast path for the common receive chain: the next
// available chain is one device-writable descriptor (no NEXT, no INDIRECT)
// whose buffer lies in the region of the last lookup. It returns that
// buffer, its GPA and the chain's head without consuming the chain (take
// commits it); ok=false when the chain is anything else, none is cached
// as available, or the queue is broken or packed: then Pop, which reads and
// validates everything again, decides. The descriptor is read once and
// only the copy is used.
func (q *Queue) peekWritable() (b []byte, gpa uint64, head uint16, ok bool) {
	if q.lastAvail == q.availCache || q.err != nil || q.packed {
		return nil, 0, 0, false
	}
	slot := uint32(q.lastAvail&q.mask) * 2
	head = binary.LittleEndian.Uint16(q.availRing[slot : slot+2])
	if head >= q.size {
		return nil, 0, 0, false
	}
	d := q.desc[uint32(head)*descSize : uint32(head)*descSize+descSize : uint32(head)*descSize+descSize]
	addr := binary.LittleEndian.Uint64(d[0:8])
	length := uint64(binary.LittleEndian.Uint32(d[8:12]))
	if binary.LittleEndian.Uint16(d[12:14]) != descFWrite || length == 0 {
		return nil, 0, 0, false
	}
	r := &q.regions[q.hint]
	if off := addr - r.gpa; off < r.size && length <= r.size-off {
		return r.data[off : off+length : off+length], addr, head, true
	}
	return nil, 0, 0, false
}

// oneReadable is walk's fast path for the common transmit chain: head is
// one device-readable descriptor (flags 0: no NEXT, WRITE or INDIRECT) of
// non-zero length whose buffer lies in the region of the last lookup. It
// fills c as walk would and reports true; for anything else it leaves the
// chain to walk, which reads and validates the descriptor again, and
// reports false. The descriptor is read once and only the copy is used.
func (q *Queue) oneReadable(c *Chain, head uint16) bool {
	d := q.desc[uint32(head)*descSize : uint32(head)*descSize+descSize : uint32(head)*descSize+descSize]
	addr := binary.LittleEndian.Uint64(d[0:8])
	length := binary.LittleEndian.Uint32(d[8:12])
	if binary.LittleEndian.Uint16(d[12:14]) != 0 || length == 0 {
		return false
	}
	r := &q.regions[q.hint]
	off := addr - r.gpa
	if off >= r.size || uint64(length) > r.size-off {
		return false
	}
	end := off + uint64(length)
	c.Head = head
	c.Out = append(c.Out[:0], Segment{Buf: r.data[off:end:end], GPA: addr})
	c.In = c.In[:0]
	c.OutLen, c.InLen = length, 0
	return true
}

// take consumes the chain peekWritable returned, as Pop would have.
func (q *Queue) take() {
	q.lastAvail++
	if q.eventIdx && !q.notifyOff {
		q.setAvailEvent(q.lastAvail)
	}
}

// walk reads the chain starting at descriptor head into c (virtio 1.2
// §2.7.5). Each descriptor is read once, its copy validated and used. The
// walk is bounded by the number of descriptors of the table it runs in, so
// a loop ends with an error.
func (q *Queue) walk(c *Chain, head uint16) error {
	c.Head = head
	c.Out = c.Out[:0]
	c.In = c.In[:0]
	var outLen, inLen uint64
	table := q.desc
	max := uint32(q.size) // descriptors the current table may contribute
	idx := uint32(head)
	seen := uint32(0)
	indirect := false
	writable := false
	for {
		if seen >= max {
			return fmt.Errorf("more than %d descriptors (a loop?): %w", max, ErrBadChain)
		}
		seen++
		d := table[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		flags := binary.LittleEndian.Uint16(d[12:14])
		next := binary.LittleEndian.Uint16(d[14:16])

		if flags&descFIndirect != 0 {
			t, err := q.indirectTable(addr, length, flags, indirect)
			if err != nil {
				return err
			}
			table, indirect = t, true
			max = uint32(len(t) / descSize)
			prefetchTable(t)
			idx, seen = 0, 0
			continue
		}
		if flags&descFWrite != 0 {
			writable = true
			if length > 0 {
				inLen += uint64(length)
				if r := &q.regions[q.hint]; addr-r.gpa < r.size && uint64(length) <= r.size-(addr-r.gpa) {
					off := addr - r.gpa
					end := off + uint64(length)
					c.In = append(c.In, Segment{Buf: r.data[off:end:end], GPA: addr})
				} else {
					var err error
					if c.In, err = q.mem.appendSegments(c.In, addr, length, &q.hint); err != nil {
						return err
					}
				}
			}
		} else {
			// virtio 1.2 §2.7.4.2: "The driver MUST place any
			// device-writable descriptor elements after any device-readable
			// descriptor elements."
			if writable {
				return fmt.Errorf("device-readable descriptor %d after a device-writable one: %w", idx, ErrBadChain)
			}
			if length > 0 {
				outLen += uint64(length)
				if r := &q.regions[q.hint]; addr-r.gpa < r.size && uint64(length) <= r.size-(addr-r.gpa) {
					off := addr - r.gpa
					end := off + uint64(length)
					c.Out = append(c.Out, Segment{Buf: r.data[off:end:end], GPA: addr})
				} else {
					var err error
					if c.Out, err = q.mem.appendSegments(c.Out, addr, length, &q.hint); err != nil {
						return err
					}
				}
			}
		}
		if flags&descFNext == 0 {
			break
		}
		if uint32(next) >= max {
			return fmt.Errorf("descriptor %d: next %d out of range (%d descriptors): %w", idx, next, max, ErrBadChain)
		}
		idx = uint32(next)
	}
	// Each length is < 2^32 and there are at most 32768*2 of them, so the
	// uint64 sums cannot overflow; the uint32 totals can.
	if outLen > math.MaxUint32 || inLen > math.MaxUint32 {
		return fmt.Errorf("chain of %d+%d bytes exceeds 4 GiB: %w", outLen, inLen, ErrBadChain)
	}
	c.OutLen, c.InLen = uint32(outLen), uint32(inLen)
	return nil
}

// tableAhead bounds the lines of an indirect table walk prefetches: 64
// descriptors, more than a 64 KiB frame in 4 KiB pieces takes.
const tableAhead = 16

// prefetchTable asks for the cache lines of the indirect table t (up to
// tableAhead of them) at once: the walk reads its descriptors one after
// another, and each line the driver has just written is a miss.
func prefetchTable(t []byte) {
	if len(t) <= 64 {
		return
	}
	var lines [tableAhead]uintptr
	n := 0
	for off := 64; off < len(t) && n < tableAhead; off += 64 {
		lines[n] = ring.Addr(t, off)
		n++
	}
	ring.Prefetch(lines[:n])
}

// indirectTable validates an indirect descriptor (virtio 1.2 §2.7.5.3) and
// returns its table.
func (q *Queue) indirectTable(addr uint64, length uint32, flags uint16, nested bool) ([]byte, error) {
	switch {
	case !q.indirect:
		// §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT
		// flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated."
		return nil, fmt.Errorf("indirect descriptor without VIRTIO_F_INDIRECT_DESC: %w", ErrBadChain)
	case nested:
		// §2.7.5.3.1: "A driver MUST NOT set the VIRTQ_DESC_F_INDIRECT
		// flag within an indirect descriptor."
		return nil, fmt.Errorf("nested indirect descriptor: %w", ErrBadChain)
	case flags&descFNext != 0:
		// §2.7.5.3.1: "The driver MUST NOT set both
		// VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
		return nil, fmt.Errorf("indirect descriptor with VIRTQ_DESC_F_NEXT: %w", ErrBadChain)
	case flags&descFWrite != 0:
		// §2.7.5.3.2: "The device MUST ignore the write-only flag
		// (flags&VIRTQ_DESC_F_WRITE) in the descriptor that refers to an
		// indirect table." Ignored.
	}
	if length == 0 || length%descSize != 0 {
		return nil, fmt.Errorf("indirect table of %d bytes: not a non-zero multiple of 16: %w", length, ErrBadChain)
	}
	// Like DPDK, bound an indirect table by the queue size (§2.7.5.3.1: a
	// chain is never longer than the Queue Size).
	if length/descSize > uint32(q.size) {
		return nil, fmt.Errorf("indirect table of %d descriptors exceeds queue size %d: %w", length/descSize, q.size, ErrBadChain)
	}
	if t, err := q.mem.Slice(addr, uint64(length)); err == nil {
		return t, nil
	}
	// The table crosses a region boundary (adjacent regions): gather a
	// copy into backend memory.
	if q.scratch == nil {
		q.scratch = make([]byte, descSize*int(q.size))
	}
	t := q.scratch[:length]
	var segs [4]Segment
	hint := 0
	s, err := q.mem.appendSegments(segs[:0], addr, length, &hint)
	if err != nil {
		return nil, fmt.Errorf("indirect table: %w", err)
	}
	n := 0
	for _, sg := range s {
		n += copy(t[n:], sg.Buf)
	}
	return t, nil
}

// Unpop gives back the last n popped chains, which must not have been
// pushed (n is not checked: a device bug, not guest input): the next Pop
// returns them again, re-read and re-validated from guest memory.
func (q *Queue) Unpop(n uint16) {
	if q.packed {
		q.unpopPacked(n)
		return
	}
	q.lastAvail -= n
}

// Push writes one used element (virtio 1.2 §2.7.8): the chain with head
// descriptor head, of which the device wrote written bytes. The driver does
// not see it before Publish.
func (q *Queue) Push(head uint16, written uint32) error {
	if q.err != nil {
		return q.err
	}
	if q.packed {
		return q.pushPacked(head, written)
	}
	if head >= q.size {
		return fmt.Errorf("push head %d out of range (queue size %d): %w", head, q.size, ErrBadChain)
	}
	slot := q.putUsed(head, written)
	if l := q.log.Load(); l != nil {
		l.markUsed(q, slot)
	}
	return nil
}

// putUsed is Push on a split queue that is not broken, for a head below
// the queue size (the caller checked all three), but for the dirty log:
// it returns the byte offset of the element in used->ring for markUsed.
// It is small enough to be inlined.
func (q *Queue) putUsed(head uint16, written uint32) (slot uint32) {
	slot = uint32(q.usedIdx&q.mask) * usedElemSize
	// One 8-byte store of struct virtq_used_elem {le32 id; le32 len}
	// (the two 4-byte stores compiled to four).
	binary.LittleEndian.PutUint64(q.usedRing[slot:slot+usedElemSize:slot+usedElemSize], uint64(head)|uint64(written)<<32)
	q.usedIdx++
	return slot
}

// markUsed marks the used element putUsed stored at slot in l.
func (l *DirtyLog) markUsed(q *Queue, slot uint32) {
	l.Mark(q.usedLog+4+uint64(slot), usedElemSize)
}

// Publish makes every pushed used element visible to the driver with one
// store of used->idx.
func (q *Queue) Publish() {
	if q.err != nil || q.usedIdx == q.published {
		return
	}
	if q.packed {
		q.publishPacked()
		return
	}
	// Release: the used elements and the bytes written into the buffers
	// are visible before the new used->idx (virtio 1.2 §2.7.8.2).
	ring.StoreRelease16(q.usedIdxB, q.usedIdx)
	q.published = q.usedIdx
	if l := q.log.Load(); l != nil {
		l.Mark(q.usedLog+2, 2)
	}
}

// NeedNotify reports whether the driver wants a used buffer notification
// for what was published since the previous NeedNotify (virtio 1.2
// §2.7.10): with VIRTIO_F_EVENT_IDX, whether used->idx passed used_event
// (vring_need_event), else whether VIRTQ_AVAIL_F_NO_INTERRUPT is clear.
// Call it after Publish. It is false when nothing new was published.
func (q *Queue) NeedNotify() bool {
	if q.err != nil {
		return false
	}
	if q.packed {
		return q.needNotifyPacked()
	}
	newIdx := q.published
	if newIdx == q.signalled {
		return false
	}
	old, valid := q.signalled, q.signalledOK
	q.signalled, q.signalledOK = newIdx, true
	// Full fence: our used->idx store must be visible before we read the
	// driver's used_event/flags (store->load order). Otherwise the driver
	// may read the old used->idx, decide to sleep after setting
	// used_event, and we read the old used_event: both wait forever.
	ring.FullFence()
	if q.notifyOnEmpty && ring.LoadAcquire16(q.availIdx) == q.lastAvail {
		// VIRTIO_F_NOTIFY_ON_EMPTY (virtio 1.2 §6, legacy): notify when
		// the device ran out of buffers, regardless of suppression.
		return true
	}
	if q.eventIdx {
		if !valid {
			return true
		}
		return needEvent(ring.LoadAcquire16(q.usedEvent), newIdx, old)
	}
	return ring.LoadAcquire16(q.availFlags)&availFNoInterrupt == 0
}

// needEvent is vring_need_event (virtio 1.2 §2.7.10): whether moving an
// index from old to newIdx crosses event, i.e. event is in [old, newIdx).
func needEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}

// DisableNotify asks the driver not to kick (virtio 1.2 §2.7.10): sets
// VIRTQ_USED_F_NO_NOTIFY, or with VIRTIO_F_EVENT_IDX stops moving
// avail_event (the driver may still kick once, for the index it had).
func (q *Queue) DisableNotify() {
	if q.err != nil || q.notifyOff {
		return
	}
	q.notifyOff = true
	if q.packed {
		// §2.8.14: RING_EVENT_FLAGS_DISABLE in both modes (with EVENT_IDX
		// too: one store stops every kick, not just those past an index).
		q.setDeviceEvent(eventFlagsDisable, 0)
		return
	}
	if !q.eventIdx {
		q.setUsedFlags(usedFNoNotify)
	}
}

// EnableNotify asks the driver to kick for the next available chain
// (avail_event = last avail index with VIRTIO_F_EVENT_IDX, else clears
// VIRTQ_USED_F_NO_NOTIFY), then re-checks the avail index: it reports
// whether chains are already available, in which case the driver may not
// kick for them and the caller must Pop instead of waiting.
func (q *Queue) EnableNotify() (pending bool) {
	if q.err != nil {
		return true // let the caller Pop and see the error
	}
	q.notifyOff = false
	if q.packed {
		if q.eventIdx {
			q.setDeviceEvent(eventFlagsDesc, q.lastAvail)
		} else {
			q.setDeviceEvent(eventFlagsEnable, 0)
		}
		ring.FullFence() // as below
		return q.availPending()
	}
	if q.eventIdx {
		q.setAvailEvent(q.lastAvail)
	} else {
		q.setUsedFlags(0)
	}
	// Full fence: the store above must be visible before we read
	// avail->idx, or the driver may add a chain without kicking (it read
	// the old event/flags) while we read the old idx and go to sleep.
	ring.FullFence()
	idx := ring.LoadAcquire16(q.availIdx)
	return idx != q.lastAvail
}

// setAvailEvent stores used->avail_event and logs it.
func (q *Queue) setAvailEvent(v uint16) {
	// Release is more than needed (the driver reads it as a hint) but as
	// cheap as a plain store on amd64 and arm64.
	ring.StoreRelease16(q.availEvent, v)
	if l := q.log.Load(); l != nil {
		l.Mark(q.usedLog+4+usedElemSize*uint64(q.size), 2)
	}
}

// setUsedFlags stores used->flags and logs it.
func (q *Queue) setUsedFlags(v uint16) {
	ring.StoreRelease16(q.usedFlags, v)
	if l := q.log.Load(); l != nil {
		l.Mark(q.usedLog, 2)
	}
}

// WriteIn copies p into the device-writable part of c starting at byte
// offset off, marks what it writes in the dirty log, and returns the
// number of bytes copied (fewer than len(p) at the end of In).
func (q *Queue) WriteIn(c *Chain, off uint32, p []byte) (n int) {
	var cur cursor
	if !cur.seek(c.In, uint64(off)) {
		return 0
	}
	return copyIn(c.In, &cur, p, q.log.Load())
}
