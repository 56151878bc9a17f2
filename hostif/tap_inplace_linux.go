//go:build linux

package hostif

import (
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Reading in place (datapath/inplace.go): while one guest is attached and
// the frames the TAP gives are large (the kernel's GSO frames of a TCP
// stream into the guest), each is read with one readv(2) straight into that
// guest's receive buffers, its virtio-net header into the queue's own
// memory, and goes through the router and the switch as any frame: the
// router and the switch copy and rewrite its first bytes, the guest port
// writes those and leaves the rest where the kernel put it. Its payload is
// copied once (by the kernel), not twice. Small frames are read in batches
// into the queue's buffers as before: for them the second copy is cheap
// and a batch's shared costs (a lock, a notification) are not.

// inPlaceMin is the size from which a frame is worth reading in place: a
// frame read of at least this size makes the next read try it, a smaller
// one makes the next read a batch again. Above an Ethernet MTU: only GSO
// (and jumbo) frames.
const inPlaceMin = 4096

// inPlaceCopyMax: a frame read in place but no larger than this (smaller
// than the heads the router and switch copy, so none of its bytes would
// stay in place) is copied into the queue's memory and the reservation
// given back before it goes on.
const inPlaceCopyMax = 1024

// SetInPlace gives the TAP's readers the guest port they may read into in
// place (the switch's, for the router's port); nil stops it.
func (t *TAP) SetInPlace(target datapath.InPlaceTarget) {
	if target == nil {
		t.inPlace.Store(nil)
		return
	}
	t.inPlace.Store(&target)
}

// InPlaceFrames returns how many frames the readers wrote in place into a
// guest's receive buffers.
func (t *TAP) InPlaceFrames() uint64 { return t.inPlaceFrames.Load() }

// inPlace outcomes of readInPlace.
const (
	inPlaceNo    = iota // not possible now: read a batch
	inPlaceRead         // a frame (or an error) is read: deliverInPlace
	inPlaceAgain        // nothing to read: wait for the fd
)

// readInPlace reserves receive buffers of the target guest and reads one
// frame into them. On inPlaceRead the reservation and the target are held
// until deliverInPlace.
func (q *tapQueue) readInPlace(fd int) int {
	t := q.tap
	tp := t.inPlace.Load()
	if tp == nil {
		return inPlaceNo
	}
	target := *tp
	gp, ok := target.BeginInPlace()
	if !ok {
		return inPlaceNo
	}
	q.res.Lazy = true
	bufs, ok := gp.Reserve(q.res.Pair(), readBufSize-virtio.NetHdrSize, t.Offloads(), &q.res)
	if !ok {
		target.EndInPlace()
		return inPlaceNo
	}
	iov := append(q.riov[:0], unix.Iovec{Base: &q.rhdr[0]})
	iov[0].SetLen(len(q.rhdr))
	room := 0
	for _, b := range bufs {
		if len(iov) == maxIOV {
			break
		}
		iov = append(iov, unix.Iovec{Base: &b[0]})
		iov[len(iov)-1].SetLen(len(b))
		room += len(b)
	}
	q.riov = iov
	if room < readBufSize-virtio.NetHdrSize {
		// Buffers so small that UIO_MAXIOV of them do not hold the
		// largest frame (a guest may post 12-byte ones): the kernel
		// would cut the frame. Read it into the queue's memory.
		q.res.End(gp)
		target.EndInPlace()
		q.big = false
		return inPlaceNo
	}
	for {
		n, err := readv(fd, iov)
		switch err {
		case nil:
			q.rn, q.gp, q.target = n, gp, target
			return inPlaceRead
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			q.res.End(gp)
			target.EndInPlace()
			q.flushCalls()
			return inPlaceAgain
		case unix.EFAULT:
			// The guest's memory went away under the read (a frontend
			// that shrank its memory file): the kernel dropped the
			// frame. Its session ends; read batches meanwhile.
			q.res.End(gp)
			target.EndInPlace()
			q.big = false
			t.stats.Drop(datapath.DropNoQueue, 1)
			return inPlaceNo
		default:
			q.res.End(gp)
			target.EndInPlace()
			q.rerr = err
			return inPlaceRead
		}
	}
}

// deliverInPlace hands the frame readInPlace read to the peer and ends the
// reservation.
func (q *tapQueue) deliverInPlace() {
	t := q.tap
	gp, target := q.gp, q.target
	q.gp, q.target = nil, nil
	defer target.EndInPlace()
	n := q.rn
	t.stats.RxPackets.Add(1)
	t.stats.RxBytes.Add(uint64(n))
	flen := n - virtio.NetHdrSize
	var h virtio.NetHdr
	h.Decode(q.rhdr[:])
	if flen < header.EthernetMinSize || !validRxHdr(&h, flen, t.offload) {
		q.res.End(gp)
		q.malformed()
		return
	}
	h.NumBuffers = 0
	q.big = flen >= inPlaceMin
	p := t.peer.Load()
	if p == nil {
		q.res.End(gp)
		t.stats.Drop(datapath.DropNoRoute, 1)
		return
	}
	f := &q.frames[0]
	if flen <= inPlaceCopyMax {
		// No byte of it would stay in place: a copy, as a batch's.
		ok := copyOut(q.bufs[0][:flen], q.res.Buffers())
		q.res.End(gp)
		if !ok {
			t.stats.Drop(datapath.DropMalformed, 1)
			return
		}
		q.segs[0][0] = q.bufs[0][:flen]
		*f = datapath.Frame{Hdr: h, Segs: q.segs[0][:], Len: flen, Queue: q.idx}
		(*p).Send(q.frames[:1])
		return
	}
	segs := q.isegs[:0]
	left := flen
	for _, b := range q.res.Buffers() {
		if left == 0 {
			break
		}
		k := min(left, len(b))
		segs = append(segs, b[:k])
		left -= k
	}
	q.isegs = segs
	*f = datapath.Frame{Hdr: h, Segs: segs, Len: flen, Queue: q.idx}
	sent := sendGuarded(*p, q.frames[:1])
	if q.res.End(gp) && sent {
		t.inPlaceFrames.Add(1)
		if q.lazyGP != gp {
			q.flushCalls()
			q.lazyGP = gp
		}
		if q.lazyN++; q.lazyN == inPlaceCallEvery {
			q.flushCalls()
		}
	}
	clear(q.isegs)
	*f = datapath.Frame{}
}

// inPlaceCallEvery: frames committed in place without a call to the guest
// (datapath.Reservation.Lazy) get one after this many, whenever the reader
// is about to wait, and (the guest port decides) once they used a quarter
// of the ring. Measured on the TCP bench into the Go guest (256 entries of
// 16 KiB), medians of 9 rounds: a call every 2 frames 8.7 Gbit/s, 8: 9.5,
// 16: 10.1, 32 (the quarter ring first, ~16 frames): 10.5.
const inPlaceCallEvery = 32

// flushCalls gives the guest the calls lazily committed frames owe it.
func (q *tapQueue) flushCalls() {
	if q.lazyGP != nil {
		q.lazyGP.FlushReceive()
		q.lazyGP, q.lazyN = nil, 0
	}
}

// malformed counts a malformed frame from the kernel, logged once.
func (q *tapQueue) malformed() {
	t := q.tap
	t.stats.Drop(datapath.DropMalformed, 1)
	if !t.readErr.Swap(true) {
		t.log.Warn("malformed frame from the TAP dropped (logged once)", "queue", q.idx)
	}
}

// copyOut copies the bytes of bufs, in order, into dst; false if a fault
// in the guest's memory (a frontend that shrank its memory file,
// virtio/fault.go) stopped it.
func copyOut(dst []byte, bufs [][]byte) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			ok = false
		}
	}()
	n := 0
	for _, b := range bufs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return true
}

// sendGuarded sends frames whose bytes are in a guest's memory to p: the
// router and the switch copy their heads from there, and a fault (a
// frontend that shrank its memory file) ends the call, the frame
// dropped; the guest's session was told by virtio.HandleFault. It reports
// whether the call ran to its end.
func sendGuarded(p datapath.Port, frames []datapath.Frame) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			ok = false
		}
	}()
	p.Send(frames)
	return true
}
