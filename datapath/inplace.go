package datapath

import (
	"runtime/debug"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Reading in place: an uplink reader that gets frames from a file (the
// TAP) can have the kernel copy each one straight into a guest's receive
// buffers (virtio.NetRX.Reserve), so that its payload is copied once
// instead of twice. The reader reserves buffers on the guest's receive
// queue, reads the frame into them and sends it on as usual, its segments
// pointing at where its bytes are: the router and the switch copy its first
// bytes into their own memory and decide on and rewrite that copy, as for
// every frame (the guest may change its buffers at any time). When the
// frame reaches this port's deliver, the bytes in place stay and only the
// head and the virtio-net header are written (CommitReserved); the
// reader's End gives back whatever the frame did not use.
//
// While buffers are reserved nothing else is written into that receive
// queue: frames that other goroutines send meanwhile (another guest, the
// gateway) go to the queue's backlog, as they would for a full ring, and
// End writes them after the reserved frame. A frame that is not the
// reserved one in place (it went to another receive queue, was segmented
// for this guest, or is another frame altogether) is copied as any other,
// from wherever its bytes are. A reservation needs a backlog.

// Reservation is an uplink reader's hold on receive buffers of a guest
// port, for one frame. Its zero value is ready to use; one goroutine uses
// it at a time.
type Reservation struct {
	// Lazy: the frame's deliver publishes it without the guest's call
	// (unless a quarter of the ring went to such frames since the last);
	// the reader calls FlushReceive before it waits, and after a few
	// frames (a call per 64 KiB frame cost more than the copy saved).
	Lazy bool

	r         *rxQueue
	bufs      [][]byte
	committed bool
	pair      uint16 // where the next Reserve should be (Pair)
}

// Pair returns the queue pair to reserve on next: the one the last
// reserved frame was written to, or, if it was steered to another (the
// guest's flow table, steer.go), that one. A reader's frames come mostly
// from one flow at a time.
func (res *Reservation) Pair() uint16 { return res.pair }

// Reserve reserves receive buffers of queue pair qp (or the first running
// one) that hold a frame of up to room bytes, for a reader whose frames
// may carry the offloads in need: only when the guest takes them all
// unsegmented, its backlog is empty and no other reservation is open on
// the queue. It returns the buffers the frame's bytes go into, in order;
// ok=false when the reader should read into its own memory instead. End
// must follow a successful Reserve.
func (p *GuestPort) Reserve(qp uint16, room int, need RxOffloads, res *Reservation) (bufs [][]byte, ok bool) {
	r := p.rxFor(qp)
	if r == nil {
		return nil, false
	}
	defer r.mu.Unlock()
	if r.held == nil || r.held.n > 0 || r.reserved != nil || !r.offload.covers(need) {
		return nil, false
	}
	bufs, ok, err := reserveGuarded(r, room, res.bufs)
	switch {
	case err != nil:
		r.broken = true
		p.broken("receive", r.idx, err)
		return nil, false
	case !ok:
		return nil, false
	}
	res.r, res.bufs, res.committed = r, bufs, false
	res.pair = uint16(r.idx / 2)
	r.reserved = res
	r.resOpen.Add(1)
	if p.steer != nil {
		p.reserving.Add(1)
		p.steered.Store(0)
	}
	return bufs, true
}

// reserveGuarded is NetRX.Reserve with a fault in guest memory (the
// descriptors it reads) contained: the queue breaks, as in deliverGuarded.
func reserveGuarded(r *rxQueue, room int, bufs [][]byte) (out [][]byte, ok bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			out, ok, err = nil, false, f
		}
	}()
	return r.nrx.Reserve(room, bufs)
}

// End ends the reservation: the buffers the reserved frame did not use go
// back to the guest, and frames that waited in the backlog meanwhile are
// written. It reports whether the frame was written in place. The caller
// must not touch the reserved buffers after End: StopQueue waits for End,
// and the session unmaps the guest's memory after StopQueue.
func (res *Reservation) End(p *GuestPort) (committed bool) {
	r := res.r
	if r == nil {
		return false
	}
	r.mu.Lock()
	if r.reserved == res { // still the queue it reserved on: a stop clears reserved
		r.nrx.CancelReserved()
		r.reserved = nil
	}
	wake := false
	if r.held != nil && r.held.n > 0 && r.q != nil && !r.broken {
		p.drainHeld(r)
		wake = r.held.n > 0 // the ring is full: the drain worker waits for buffers
	}
	r.mu.Unlock()
	if wake {
		select {
		case r.heldWake <- struct{}{}:
		default:
		}
	}
	committed = res.committed
	if p.steer != nil {
		if qp := p.steered.Load(); !committed && qp != 0 {
			res.pair = uint16(qp - 1)
		}
		p.reserving.Add(-1)
	}
	res.r = nil
	clear(res.bufs) // no reference into guest memory outlives the call
	res.bufs = res.bufs[:0]
	r.resOpen.Done() // StopQueue may go on: nothing of the frame is used after End
	return committed
}

// deliverReserved writes f, the first frame of a batch for r (locked)
// while r has buffers reserved: the reserved frame, with its bytes in
// place, is committed; anything else is left (ok=false) for the backlog.
func (p *GuestPort) deliverReserved(r *rxQueue, f *Frame) (ok bool) {
	var hdr *virtio.NetHdr
	segs := f.Segs
	if f.Hdr.Flags != 0 || f.Hdr.GSOType != virtio.NetHdrGSONone {
		h, s, good := r.prepare(f)
		if !good {
			return false
		}
		hdr, segs = &h, s
	}
	if !r.nrx.CommitReserved(hdr, segs) {
		return false
	}
	r.reserved.committed = true
	r.reserved = nil
	return true
}

// covers reports whether a guest with offloads o takes every frame a
// reader with offloads need gives (checksums are completed for it in
// deliver, so only the GSO types count).
func (o offloads) covers(need RxOffloads) bool {
	return (!need.TSO4 || o.guestTSO4) && (!need.TSO6 || o.guestTSO6) &&
		(!need.UFO || o.guestUFO) && (!need.ECN || o.guestECN)
}

// InPlaceTarget tells an uplink reader which guest port it may read frames
// into in place.
type InPlaceTarget interface {
	// BeginInPlace returns the guest port for the next frame, if there is
	// one; EndInPlace must follow a true result, after the frame went
	// through.
	BeginInPlace() (*GuestPort, bool)
	EndInPlace()
}

// InPlaceTarget returns the target of an uplink whose frames enter the
// switch through from (the router's port): the guest port attached
// besides it, while it is the only port besides it. With two guests a
// frame read into one's memory could be for the other, which must never
// see bytes the first could change; Attach waits for a frame in flight.
func (s *Switch) InPlaceTarget(from *SwitchPort) InPlaceTarget {
	return inPlaceTarget{s: s, from: from}
}

type inPlaceTarget struct {
	s    *Switch
	from *SwitchPort
}

func (t inPlaceTarget) BeginInPlace() (*GuestPort, bool) {
	t.s.inPlace.RLock()
	var gp *GuestPort
	n := 0
	for _, sp := range *t.s.ports.Load() {
		if sp == nil || sp == t.from {
			continue
		}
		n++
		gp, _ = sp.port.(*GuestPort)
	}
	if n != 1 || gp == nil {
		t.s.inPlace.RUnlock()
		return nil, false
	}
	return gp, true
}

func (t inPlaceTarget) EndInPlace() { t.s.inPlace.RUnlock() }

// Buffers returns the reserved buffers (those Reserve returned) until End.
func (res *Reservation) Buffers() [][]byte { return res.bufs }

// FlushReceive gives the guest the calls that frames published by lazy
// reservations did not (where its event suppression asks for one).
func (p *GuestPort) FlushReceive() {
	for i := range p.pairs {
		p.flushReceive(&p.pairs[i].rx)
	}
}

// flushReceive is FlushReceive for r, with a fault in its used ring (read
// for the driver's event index) contained: the queue breaks.
func (p *GuestPort) flushReceive(r *rxQueue) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			r.broken = true
			p.faulted("receive", r.idx, r.q, f)
		}
	}()
	if !r.callPending {
		return
	}
	r.callPending, r.lazyBufs = false, 0
	if r.q != nil && !r.broken && r.q.NeedNotify() && r.call != nil {
		_ = r.call.Notify()
	}
}
