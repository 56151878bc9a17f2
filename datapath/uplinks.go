package datapath

import "encoding/binary"

// The measurement uplinks of the command line (README "Command line"):
// they attach straight to each guest port and bypass switch, services,
// anti-spoofing and NAT, so that the vhost-user datapath can be measured
// alone.

// Sink counts and drops every frame sent to it (--uplink sink). A copying
// sink (--uplink sink-copy) first copies each frame out of the sender's
// memory into a buffer of its own, as an uplink that hands frames on must
// (a TAP write, DPDK's net_vhost copying into an mbuf): the like-for-like
// transmit measurement against DPDK (bench/vs-dpdk.sh f2b-copy-SIZE).
type Sink struct {
	name  string
	stats Stats
	// bufs are a copying sink's buffers: one per queue pair and batch
	// slot, reused by every batch of that pair (nil: counting sink).
	bufs *[MaxQueuePairs]copySlots
}

// copySlots are a copying sink's buffers for one queue pair, one per batch
// slot.
type copySlots [MaxBatch][]byte

// copyBufSize is a copying sink buffer's initial size, DPDK's default mbuf
// data room (RTE_MBUF_DEFAULT_DATAROOM); a larger frame grows its slot's
// buffer once.
const copyBufSize = 2048

// copyBufStride is the distance between two of a queue pair's sink
// buffers, which share one allocation: one cache line more than a buffer.
// Buffers 2 KiB apart (one allocation each, from Go's 2048-byte size
// class) start in the same 2 of the 64 sets of a 32 or 48 KiB L1 data
// cache, so a batch of 64-byte frames copied into them evicted its own
// lines and every store of the copy missed L1 (perf f2b-copy-64: the
// copy's stores held up the atomic counter updates and the used ring
// stores after them). With an odd number of lines between them the
// buffers' first lines fall into different sets. DPDK's mempool spaces
// its mbufs for the same reason (objects padded to spread over channels
// and ranks).
const copyBufStride = copyBufSize + 64

// NewSink returns a sink port.
func NewSink(name string) *Sink { return &Sink{name: name} }

// NewCopySink returns a sink port that copies every frame before it drops
// it. Its buffers (2 KiB per queue pair and batch slot, larger where a
// frame needed it) are allocated on first use, a queue pair's together.
func NewCopySink(name string) *Sink {
	return &Sink{name: name, bufs: new([MaxQueuePairs]copySlots)}
}

// Name returns the port's name.
func (s *Sink) Name() string { return s.name }

// Stats returns the port's counters: every frame it got is a tx frame (it
// left the backend) and a drop_sink.
func (s *Sink) Stats() *Stats { return &s.stats }

// Send counts frames (a copying sink copies them first) and drops them. All
// frames of one call come from one queue pair, whose transmit worker is the
// only caller for that pair, so the pair's buffers need no lock.
func (s *Sink) Send(frames []Frame) {
	if len(frames) == 0 {
		return
	}
	bytes := 0
	if s.bufs != nil {
		slots := &s.bufs[int(frames[0].Queue)%MaxQueuePairs]
		if slots[0] == nil {
			slots.alloc()
		}
		for i := range frames {
			f := &frames[i]
			buf := &slots[i%MaxBatch]
			if len(*buf) < f.Len {
				*buf = make([]byte, max(f.Len, copyBufSize))
			}
			if len(f.Segs) == 1 {
				// The common frame, one segment: one copy, without
				// copyFrame's loop.
				bytes += copy((*buf)[:f.Len], f.Segs[0])
			} else {
				bytes += copyFrame((*buf)[:f.Len], f.Segs)
			}
		}
	} else {
		for i := range frames {
			bytes += frames[i].Len
		}
	}
	s.stats.TxPackets.Add(uint64(len(frames)))
	s.stats.TxBytes.Add(uint64(bytes))
	s.stats.Drop(DropSink, uint64(len(frames)))
}

// alloc gives every slot of a queue pair a buffer of copyBufSize bytes,
// copyBufStride apart in one allocation (each capped at its length, so a
// copy never reaches the next).
func (slots *copySlots) alloc() {
	arena := make([]byte, MaxBatch*copyBufStride)
	for i := range slots {
		off := i * copyBufStride
		slots[i] = arena[off : off+copyBufSize : off+copyBufSize]
	}
}

// macSwapLen is the part of an Ethernet header the loopback rewrites:
// destination and source MAC.
const macSwapLen = 12

// Loopback sends every frame a guest transmits back to that guest with the
// MAC addresses swapped (--uplink loopback). The swapped addresses are
// written into backend memory; the rest of the frame is copied once, from
// the guest's transmit buffer straight into its receive buffer.
type Loopback struct {
	name   string
	guest  Port
	stats  Stats
	batchs [MaxQueuePairs]*loopBatch
}

type loopBatch struct {
	frames [MaxBatch]Frame
	heads  [MaxBatch][macSwapLen]byte
	segs   [MaxBatch][][]byte
}

// NewLoopback returns a loopback that sends frames back to guest.
func NewLoopback(name string, guest Port) *Loopback {
	l := &Loopback{name: name, guest: guest}
	for i := range l.batchs {
		b := new(loopBatch)
		for j := range b.segs {
			b.segs[j] = make([][]byte, 0, 4)
		}
		l.batchs[i] = b
	}
	return l
}

// Name returns the port's name.
func (l *Loopback) Name() string { return l.name }

// Stats returns the port's counters.
func (l *Loopback) Stats() *Stats { return &l.stats }

// Send swaps the MAC addresses of frames and sends them to the guest. All
// frames of one call come from one queue pair, whose transmit worker is the
// only caller for that pair, so the pair's scratch batch needs no lock.
func (l *Loopback) Send(frames []Frame) {
	if len(frames) == 0 {
		return
	}
	b := l.batchs[int(frames[0].Queue)%MaxQueuePairs]
	n, bytes := 0, 0
	for i := range frames {
		f := &frames[i]
		head := &b.heads[n]
		var segs [][]byte
		if len(f.Segs) > 0 && len(f.Segs[0]) >= macSwapLen {
			s0 := f.Segs[0]
			// The common frame, its MACs in its first segment: read
			// them once with two fixed-width loads (a copy of 12 bytes
			// was a runtime.memmove call per frame) and store them
			// swapped into backend memory.
			swapMACs(head, s0)
			segs = append(b.segs[n][:0], head[:], s0[macSwapLen:])
			if len(f.Segs) > 1 {
				segs = append(segs, f.Segs[1:]...)
			}
		} else {
			if copyFrame(head[:], f.Segs) < macSwapLen {
				l.stats.Drop(DropMalformed, 1)
				continue
			}
			swapMACs(head, head[:])
			segs, _ = appendTail(append(b.segs[n][:0], head[:]), f.Segs, macSwapLen)
		}
		b.segs[n] = segs
		out := &b.frames[n]
		*out = *f
		out.Segs = segs
		bytes += f.Len
		n++
	}
	l.stats.TxPackets.Add(uint64(n))
	l.stats.TxBytes.Add(uint64(bytes))
	l.guest.Send(b.frames[:n])
}

// swapMACs stores into dst the first 12 bytes of src (destination and
// source MAC, len(src) >= 12) with the two addresses swapped. src is read
// once, with two loads, before dst is written (dst may be src).
func swapMACs(dst *[macSwapLen]byte, src []byte) {
	_ = src[macSwapLen-1]
	a := binary.LittleEndian.Uint64(src[0:8])  // dst MAC, src MAC[0:2]
	c := binary.LittleEndian.Uint32(src[8:12]) // src MAC[2:6]
	// New bytes 0-5: src MAC (a's bytes 6-7, then c); 6-11: dst MAC (a's
	// bytes 0-5).
	binary.LittleEndian.PutUint64(dst[0:8], a>>48|uint64(c)<<16|a<<48)
	binary.LittleEndian.PutUint32(dst[8:12], uint32(a>>16))
}

// Source generates frames toward a guest as fast as it takes them
// (--uplink source): Ethernet broadcasts of a fixed size with the local
// experimental EtherType 0x88B5 (IEEE 802 §9.2.2), all sharing one read-only
// buffer.
type Source struct {
	frame []byte
}

// NewSource returns a source of frames of size bytes (at least 60).
func NewSource(size int) *Source {
	if size < 60 {
		size = 60
	}
	f := make([]byte, size)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x61, 0x72, 0x63, 0x6e, 0x01, 0x88, 0xb5})
	for i := 14; i < size; i++ {
		f[i] = byte(i)
	}
	return &Source{frame: f}
}

// Fill writes len(frames) copies of the source's frame.
func (s *Source) Fill(q uint16, frames []Frame) int {
	for i := range frames {
		f := &frames[i]
		if len(f.Segs) != 1 || len(f.Segs[0]) != len(s.frame) {
			f.Segs = [][]byte{s.frame}
		}
		f.Len = len(s.frame)
		f.Queue = q
	}
	return len(frames)
}
