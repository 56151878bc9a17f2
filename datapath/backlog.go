package datapath

import (
	"runtime/debug"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// The receive backlog: frames held for a guest whose receive ring is full.
//
// A frame sent to a guest port finds its receive queue without a free
// buffer whenever the sender is faster than the guest for a moment: a TCP
// stream from the internet arrives in bursts of GSO frames that a guest
// with 256 receive buffers cannot always take at once. Dropping those
// frames (drop_no_buffer) costs TCP a loss and a halved window each time:
// a stream from Inet into the Go test guest ran at 0.26x the kernel's own
// path with 256 buffers (README, BenchmarkTCPThroughput). The kernel's
// path to a guest queues instead: tun keeps up to txqueuelen frames per
// queue in a ring (drivers/net/tun.c, tun_net_xmit), and vhost-net's
// worker moves them into the guest when it adds buffers and kicks
// (drivers/vhost/net.c, handle_rx).
//
// With GuestPortOptions.Backlog a receive queue does the same: frames that
// do not fit the ring are copied into the queue's backlog (their senders
// reuse their buffers once Send returns), in order, up to the queue's share
// of Backlog (split evenly between the port's queue pairs, so a guest's
// backlogs take at most Backlog bytes together) and backlogFrames frames;
// what does not fit is dropped as before. While
// frames are held, every Send to the queue writes them first (a frame never
// overtakes an older one), and the queue's drain worker sleeps on the
// receive kick (notifications on, virtio 1.2 §2.7.10; packed §2.8.10) and
// writes them as soon as the guest adds buffers: a sender that has nothing
// more to send (a TCP peer waiting for the guest's ACKs) is not needed to
// move them. With nothing held the worker waits on a channel and the
// driver is not asked to kick (StartQueue).
//
// Each queue holds its own frames, so one guest that stops taking frames
// fills only its own backlog: the senders (a TAP reader serving every
// guest) never wait for it. Memory follows use: nothing until the first
// frame is held, then a buffer of backlogMinBuf bytes that doubles (up to
// the queue's share) when frames do not fit, all of it given back when the
// queue stops (a guest's session ends; TestChurn saw RSS grow by 16 MiB
// over 700 guest sessions when every queue that ever held a frame kept its
// full buffer).

// backlogFrames bounds the frames a backlog holds, whatever their size
// (tun's default txqueuelen is 500 frames).
const backlogFrames = 1024

// backlogMinBuf is a backlog's first buffer (it doubles as needed).
const backlogMinBuf = 64 << 10

// heldFrame is one frame in a backlog: its virtio-net header and where its
// bytes are in the backlog's buffer.
type heldFrame struct {
	hdr    virtio.NetHdr
	off, n int32
}

// backlog is a receive queue's held frames: a ring of entries over a ring
// of bytes, each frame contiguous in buf. Guarded by its rxQueue's mu.
type backlog struct {
	size    int         // the most bytes buf grows to
	buf     []byte      // nil until the first frame is held, and after release
	ents    []heldFrame // backlogFrames entries, with buf
	head, n int         // the oldest entry, the number held
	// The bytes in use: buf[rd():wr] when not wrapped; buf[rd():] up to
	// the last frame placed before the wrap, and buf[:wr], when wrapped.
	wr      int
	wrapped bool
	bytes   int // bytes held

	batch *heldBatch // drain's scratch, with buf
}

// heldBatch is drain's batch of frames (their one segment is in buf).
type heldBatch struct {
	frames [MaxBatch]Frame
	segs   [MaxBatch][1][]byte
}

// place returns where a frame of n bytes would go, or false when it does
// not fit (the caller drops it). Nothing changes until commit.
func (b *backlog) place(n int) (off int, ok bool) {
	if b.n == len(b.ents) && b.buf != nil || n > b.size {
		return 0, false
	}
	if b.buf == nil {
		b.buf = make([]byte, min(max(backlogMinBuf, n), b.size))
		b.ents = make([]heldFrame, backlogFrames)
		b.batch = new(heldBatch)
	}
	if b.n == 0 {
		b.wr, b.wrapped = 0, false
	}
	if off, ok := b.fit(n); ok {
		return off, true
	}
	if len(b.buf) < b.size {
		b.grow(n)
		return b.fit(n)
	}
	return 0, false
}

// rd returns the oldest frame's offset (0 when none is held).
func (b *backlog) rd() int {
	if b.n == 0 {
		return 0
	}
	return int(b.ents[b.head].off)
}

// fit is place in the buffer as it is.
func (b *backlog) fit(n int) (off int, ok bool) {
	switch {
	case b.wrapped:
		if b.wr+n <= b.rd() {
			return b.wr, true
		}
	case b.wr+n <= len(b.buf):
		return b.wr, true
	case n <= b.rd():
		return 0, true // wrap: the oldest frames are past n
	}
	return 0, false
}

// grow gives b a buffer twice as big (or as big as needed for n more
// bytes, at most size), with the frames held copied to its start in order.
func (b *backlog) grow(n int) {
	nb := make([]byte, min(max(2*len(b.buf), b.bytes+n), b.size))
	off := 0
	for i := range b.n {
		e := &b.ents[(b.head+i)%len(b.ents)]
		copy(nb[off:], b.buf[e.off:e.off+e.n])
		e.off = int32(off)
		off += int(e.n)
	}
	b.buf, b.wr, b.wrapped = nb, off, false
}

// release drops every held frame and gives the memory back; the next
// frame held allocates anew. It returns how many frames were dropped.
func (b *backlog) release() int {
	n := b.clear()
	b.buf, b.ents, b.batch = nil, nil, nil
	return n
}

// commit adds the frame of n bytes at off (from place) with header hdr.
func (b *backlog) commit(hdr virtio.NetHdr, off, n int) {
	if off != b.wr {
		b.wrapped = true
	}
	b.wr = off + n
	hdr.NumBuffers = 0
	b.ents[(b.head+b.n)%len(b.ents)] = heldFrame{hdr: hdr, off: int32(off), n: int32(n)}
	b.n++
	b.bytes += n
}

// pop forgets the k oldest frames.
func (b *backlog) pop(k int) {
	rd := b.rd()
	for range k {
		b.bytes -= int(b.ents[b.head].n)
		b.head = (b.head + 1) % len(b.ents)
		b.n--
	}
	if b.n == 0 {
		b.head, b.wr, b.wrapped, b.bytes = 0, 0, false, 0
		return
	}
	if b.wrapped && b.rd() < rd {
		b.wrapped = false // the oldest frame is now the first after the wrap
	}
}

// oldest returns up to MaxBatch of the oldest frames, their bytes in buf.
func (b *backlog) oldest() []Frame {
	k := min(b.n, MaxBatch)
	for i := range k {
		e := &b.ents[(b.head+i)%len(b.ents)]
		b.batch.segs[i][0] = b.buf[e.off : e.off+e.n : e.off+e.n]
		b.batch.frames[i] = Frame{Hdr: e.hdr, Segs: b.batch.segs[i][:], Len: int(e.n)}
	}
	return b.batch.frames[:k]
}

// clear drops every held frame and returns how many there were.
func (b *backlog) clear() int {
	n := b.n
	b.pop(n)
	if b.batch != nil {
		clear(b.batch.segs[:])
		clear(b.batch.frames[:])
	}
	return n
}

// push writes frames into r (locked), held frames first; frames that do
// not fit the ring go to the backlog, if the port keeps one. It returns how
// many frames it consumed (written, held, or dropped alone and counted) and
// why the rest are dropped.
func (p *GuestPort) push(r *rxQueue, frames []Frame) (int, DropReason) {
	b := r.held
	if b == nil {
		return p.deliverGuarded(r, frames)
	}
	// With buffers reserved (inplace.go) deliver writes only the frame
	// read into them, which came before any frame held meanwhile.
	if b.n > 0 && r.reserved == nil {
		p.drainHeld(r)
		if r.broken {
			return 0, DropQueueBroken
		}
	}
	n := 0
	if b.n == 0 || r.reserved != nil {
		k, reason := p.deliverGuarded(r, frames)
		if k == len(frames) || reason != DropNoBuffer {
			return k, reason
		}
		n = k
	}
	was := b.n
	k, reason := p.hold(r, frames[n:])
	if was == 0 && b.n > 0 {
		select { // the drain worker waits for the first frame held
		case r.heldWake <- struct{}{}:
		default:
		}
	}
	return n + k, reason
}

// hold copies frames, in order, into r's backlog (r locked) until one does
// not fit. It returns how many it held and why the rest are dropped. The
// frames' bytes may be in another guest's memory: a fault there (a
// frontend that shrank its memory file, virtio/fault.go) drops the frame
// being copied and the rest as malformed, and holds nothing of it.
func (p *GuestPort) hold(r *rxQueue, frames []Frame) (n int, reason DropReason) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			reason = DropMalformed
		}
	}()
	b := r.held
	for ; n < len(frames); n++ {
		f := &frames[n]
		size := 0
		for _, s := range f.Segs {
			size += len(s)
		}
		off, ok := b.place(size)
		if !ok {
			return n, DropNoBuffer
		}
		copyFrame(b.buf[off:off+size], f.Segs)
		b.commit(f.Hdr, off, size)
		r.stats.Held.Add(1)
	}
	return n, DropNoBuffer
}

// drainHeld writes r's held frames (r locked) into its ring until the ring
// is full or none is left; it reports whether it wrote any.
func (p *GuestPort) drainHeld(r *rxQueue) (progress bool) {
	b := r.held
	for b.n > 0 {
		frames := b.oldest()
		k, reason := p.deliverGuarded(r, frames)
		b.pop(k)
		progress = progress || k > 0
		if k == len(frames) {
			continue
		}
		if reason != DropNoBuffer { // the queue broke: nothing more goes in
			p.stats.Drop(reason, uint64(b.clear()))
		}
		break
	}
	if b.batch != nil {
		clear(b.batch.segs[:]) // no reference into buf outlives the call
	}
	return progress
}

// runHeld is a receive queue's drain worker (only with a backlog): it
// waits for the first frame held, then writes held frames as the guest
// adds buffers, sleeping on the kick while the ring is full.
func (p *GuestPort) runHeld(r *rxQueue, w *worker) {
	// Faults in guest memory are recovered by deliverGuarded and
	// waitLocked.
	debug.SetPanicOnFault(true)
	for !w.stop.Load() {
		r.mu.Lock()
		if r.q == nil || r.broken {
			r.mu.Unlock()
			return
		}
		if r.held.n == 0 || r.reserved != nil {
			// Nothing held, or buffers reserved by an uplink reader,
			// whose End writes the held frames or wakes this worker.
			r.mu.Unlock()
			select {
			case <-r.heldWake:
			case <-w.quit:
			}
			continue
		}
		if p.drainHeld(r) {
			w.idle.Busy()
		}
		if r.held.n == 0 || r.broken {
			r.mu.Unlock()
			continue
		}
		// The ring is full: sleep until the guest adds buffers.
		if !p.waitLocked(r, w) {
			return
		}
	}
}
