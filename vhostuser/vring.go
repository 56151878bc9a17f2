package vhostuser

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// ring is the session's view of one vring (vhost-user spec "Ring states").
//
//   - stopped: q == nil. Configuration (NUM, BASE, ADDR, KICK, CALL, ERR,
//     ENABLE) is collected.
//   - started: q != nil. A ring starts when it has a kick (fd, or NOFD for
//     polling), a size, addresses and guest memory, whichever comes last;
//     QEMU's order is NUM, BASE, ADDR, KICK. GET_VRING_BASE stops it and
//     forgets the kick, so a restart needs a new SET_VRING_KICK.
//   - running: started and enabled, and handed to the Device. A ring is
//     enabled by SET_VRING_ENABLE 1 when VHOST_USER_F_PROTOCOL_FEATURES was
//     acked, and always otherwise. A started but disabled ring is not given
//     to the device at all (as in DPDK): for a network device that means no
//     new RX packets (as the spec requires) and TX buffers left pending
//     rather than discarded until the ring is enabled.
type ring struct {
	num     uint16 // SET_VRING_NUM; 0 until set
	addr    vringAddr
	hasAddr bool
	base    uint16 // SET_VRING_BASE, or the avail index the ring stopped at (packed: position, index | wrap<<15)
	used    uint16 // packed rings: the used position the ring resumes at
	hasBase bool   // base (and used) were set by SET_VRING_BASE or a stop
	kick    *doorbell
	call    *notifier
	enable  bool

	q       *virtio.Queue
	running bool
}

func (r *ring) init() {
	*r = ring{call: new(notifier)}
}

// release closes the ring's kick and call fds; the ring must be stopped.
// (Its error fd is Session.ringErr's.)
func (r *ring) release() {
	r.kick.close()
	r.kick = nil
	r.call.set(nil)
}

// ringIndex checks a ring index from the frontend.
func (s *Session) ringIndex(i uint32) (int, error) {
	if uint64(i) >= uint64(len(s.rings)) {
		return 0, fmt.Errorf("%w: ring %d out of range (%d rings)", ErrInvalid, i, len(s.rings))
	}
	return int(i), nil
}

// anyStarted reports whether a ring is started.
func (s *Session) anyStarted() bool {
	for i := range s.rings {
		if s.rings[i].q != nil {
			return true
		}
	}
	return false
}

// enabled reports whether ring r counts as enabled (spec "Ring states").
func (s *Session) enabled(r *ring) bool {
	return s.features&FProtocolFeatures == 0 || r.enable
}

// ringSizes returns the sizes of the descriptor table, the available ring
// and the used ring of a ring of num entries (virtio 1.2 §2.7), with the
// event fields when VIRTIO_F_EVENT_IDX is negotiated.
func (s *Session) ringSizes(num uint16) (desc, avail, used uint64) {
	n := uint64(num)
	if s.packed() {
		// virtio 1.2 §2.8.10: the descriptor ring, and the driver and
		// device event suppression structures of 4 bytes each.
		return 16 * n, 4, 4
	}
	desc, avail, used = 16*n, 4+2*n, 4+8*n
	if s.features&virtio.FEventIdx != 0 {
		avail += 2
		used += 2
	}
	return desc, avail, used
}

// translate turns the ring's frontend user addresses into guest physical
// addresses (spec "Memory access": ring addresses are user addresses when
// VIRTIO_F_IOMMU_PLATFORM is not negotiated).
func (s *Session) translate(r *ring) (cfg virtio.QueueConfig, err error) {
	dsz, asz, usz := s.ringSizes(r.num)
	if cfg.DescGPA, err = s.mem.UserToGuest(r.addr.Desc, dsz); err != nil {
		return cfg, fmt.Errorf("%w: descriptor table at user address %#x: %w", ErrBadRing, r.addr.Desc, err)
	}
	if cfg.AvailGPA, err = s.mem.UserToGuest(r.addr.Avail, asz); err != nil {
		return cfg, fmt.Errorf("%w: available ring at user address %#x: %w", ErrBadRing, r.addr.Avail, err)
	}
	if cfg.UsedGPA, err = s.mem.UserToGuest(r.addr.Used, usz); err != nil {
		return cfg, fmt.Errorf("%w: used ring at user address %#x: %w", ErrBadRing, r.addr.Used, err)
	}
	cfg.Size = r.num
	cfg.Features = s.features &^ (FLogAll | FProtocolFeatures)
	cfg.LastAvail = r.base
	cfg.LastUsed = r.used
	if s.packed() && !r.hasBase {
		// A new packed ring: both wrap counters start at 1 (virtio 1.2
		// §2.8.1), position 0x8000 (a split ring's 0 is just 0).
		cfg.LastAvail, cfg.LastUsed = 0x8000, 0x8000
	}
	if r.addr.Flags&vringFLog != 0 {
		// "log_guest_addr should be used to calculate the log offset: the
		// write to first byte of the used ring is logged at this offset"
		// (spec "Migration").
		cfg.UsedLogGPA = r.addr.Log
	}
	return cfg, nil
}

// maybeStart starts ring i if it is stopped and has everything it needs,
// and hands it to the device if it is enabled.
func (s *Session) maybeStart(i int) error { return s.start(i, true) }

// start is maybeStart; with strict false, a ring whose addresses are not
// (yet) inside guest memory stays stopped instead of failing: memory
// added region by region (ADD_MEM_REG) may not hold it yet.
func (s *Session) start(i int, strict bool) error {
	r := &s.rings[i]
	if r.q == nil {
		if r.kick == nil || r.num == 0 || !r.hasAddr || s.mem == nil {
			return nil
		}
		cfg, err := s.translate(r)
		if err != nil {
			if !strict {
				s.log.Debug("vring waits for its memory", "ring", i, "err", err)
				return nil
			}
			return fmt.Errorf("ring %d: %w", i, err)
		}
		q, err := virtio.NewQueue(s.mem, cfg)
		if err != nil {
			return fmt.Errorf("ring %d: %w: %w", i, ErrBadRing, err)
		}
		q.SetLog(s.effectiveLog())
		errN := &s.ringErr[i]
		q.OnBroken(func(error) { _ = errN.Notify() })
		r.q = q
		if base, ok := q.Resynced(); ok {
			s.log.Warn("vring base out of reach of the avail index; starting at the used index (frames the previous backend took and did not return are taken again)",
				"ring", i, "base", base, "used", q.LastAvail())
		}
		s.log.Debug("vring started", "ring", i, "size", r.num, "base", r.base)
	}
	s.updateRunning(i)
	return nil
}

// updateRunning hands ring i to the device, or takes it back, to match
// started && enabled.
func (s *Session) updateRunning(i int) {
	r := &s.rings[i]
	want := r.q != nil && s.enabled(r)
	switch {
	case want && !r.running:
		r.kick.reset()
		s.dev.StartQueue(i, r.q, r.kick, r.call)
		r.running = true
	case !want && r.running:
		s.dev.StopQueue(i)
		r.running = false
	}
}

// pauseRing stops ring i without forgetting its kick, keeping the avail
// index it reached, so maybeStart can rebuild it (new memory, addresses,
// kick fd or log). It reports whether the ring was started.
func (s *Session) pauseRing(i int) bool {
	r := &s.rings[i]
	if r.running {
		s.dev.StopQueue(i)
		r.running = false
	}
	if r.q == nil {
		return false
	}
	r.base = r.q.LastAvail()
	r.used = r.q.UsedIdx()
	r.hasBase = true
	r.q = nil
	return true
}

// stopRing stops ring i (GET_VRING_BASE, RESET_OWNER, teardown): it is
// paused and its kick forgotten.
func (s *Session) stopRing(i int) {
	s.pauseRing(i)
	r := &s.rings[i]
	r.kick.close()
	r.kick = nil
}

// pauseAll pauses every started ring and returns which were started (a
// bit per ring).
func (s *Session) pauseAll() []bool {
	paused := make([]bool, len(s.rings))
	for i := range s.rings {
		paused[i] = s.pauseRing(i)
	}
	return paused
}

// resume restarts the rings pauseAll stopped (paused may be nil), which
// must still fit in guest memory, and starts any other ring that was only
// waiting for what changed (a kick that came before the memory, say).
func (s *Session) resume(paused []bool) error {
	for i := range s.rings {
		if err := s.start(i, paused != nil && paused[i]); err != nil {
			return err
		}
	}
	return nil
}

// SET_VRING_NUM.
func (s *Session) setVringNum(p *payload, _ *fdSet) ([]byte, error) {
	i, err := s.ringIndex(p.State.Index)
	if err != nil {
		return nil, err
	}
	n := p.State.Num
	// virtio 1.2 §2.7: "Queue Size value is always a power of 2. The
	// maximum Queue Size value is 32768." Packed rings (§2.8) need not be
	// powers of two.
	if n == 0 || n > virtio.MaxQueueSize || n&(n-1) != 0 && !s.packed() {
		return nil, fmt.Errorf("%w: ring %d: size %d is not a power of 2 in 1..%d", ErrBadRing, i, n, virtio.MaxQueueSize)
	}
	r := &s.rings[i]
	if r.q != nil {
		// The kernel's vhost refuses this too (EBUSY).
		return nil, fmt.Errorf("%w: ring %d is started", ErrInvalid, i)
	}
	r.num = uint16(n)
	return nil, s.maybeStart(i)
}

// SET_VRING_BASE.
func (s *Session) setVringBase(p *payload, _ *fdSet) ([]byte, error) {
	i, err := s.ringIndex(p.State.Index)
	if err != nil {
		return nil, err
	}
	packed := s.packed()
	if p.State.Num > 0xffff && !packed {
		// Split rings: "Bits 16-31: Reserved" (vhost-user spec "A vring
		// descriptor index for split virtqueues").
		return nil, fmt.Errorf("%w: ring %d: base %d does not fit 16 bits", ErrInvalid, i, p.State.Num)
	}
	r := &s.rings[i]
	if r.q != nil {
		return nil, fmt.Errorf("%w: ring %d is started", ErrInvalid, i)
	}
	r.base = uint16(p.State.Num)
	r.used = r.base
	r.hasBase = true
	if packed && p.State.Num>>16 != 0 {
		// vhost-user spec "Vring descriptor indices for packed
		// virtqueues": bits 0-14 the last avail index, bit 15 the
		// avail wrap counter, bits 16-30 the last used index, bit 31 the
		// used wrap counter. DPDK's virtio-user sends the avail half
		// only (0x8000 for a new ring): then used = avail, as in DPDK's
		// backend. NewQueue checks both indices against the size.
		r.used = uint16(p.State.Num >> 16)
	}
	return nil, nil
}

// packed reports whether the negotiated features make the rings packed
// (VIRTIO_F_RING_PACKED, virtio 1.2 §2.8). SET_FEATURES comes before the
// rings are configured (QEMU, DPDK, cloud-hypervisor) and may not change
// while a ring is started.
func (s *Session) packed() bool { return s.features&virtio.FRingPacked != 0 }

// SET_VRING_ADDR. Allowed on a started ring ("the back-end must support
// changing some configuration aspects on the fly", spec "Ring states"):
// QEMU resends the addresses with VHOST_VRING_F_LOG set or cleared when
// migration starts or ends. The ring is rebuilt around the new addresses.
func (s *Session) setVringAddr(p *payload, _ *fdSet) ([]byte, error) {
	a := p.Addr
	i, err := s.ringIndex(a.Index)
	if err != nil {
		return nil, err
	}
	if a.Flags&^vringFLog != 0 {
		return nil, fmt.Errorf("%w: ring %d: unknown flags %#x", ErrInvalid, i, a.Flags)
	}
	r := &s.rings[i]
	if a.Flags&vringFLog != 0 && s.logArea != nil && r.num != 0 {
		_, _, usz := s.ringSizes(r.num)
		if !s.logArea.covers(a.Log, usz) {
			return nil, fmt.Errorf("%w: ring %d: used ring log address %#x is outside the log", ErrBadRing, i, a.Log)
		}
	}
	if s.mem != nil && r.num != 0 {
		// Check now so the error names this request; maybeStart checks
		// again with whatever memory the ring starts on.
		probe := *r
		probe.addr = a
		if _, err := s.translate(&probe); err != nil {
			return nil, fmt.Errorf("ring %d: %w", i, err)
		}
	}
	wasStarted := s.pauseRing(i)
	r.addr, r.hasAddr = a, true
	if wasStarted {
		s.log.Debug("vring addresses changed on a started ring", "ring", i, "log", a.Flags&vringFLog != 0)
	}
	return nil, s.maybeStart(i)
}

// GET_VRING_BASE: stops the ring ("stop ring upon receiving
// VHOST_USER_GET_VRING_BASE", spec "Ring states") and returns the next
// avail index it would have used.
func (s *Session) getVringBase(p *payload, _ *fdSet) ([]byte, error) {
	i, err := s.ringIndex(p.State.Index)
	if err != nil {
		return nil, err
	}
	s.stopRing(i)
	b := s.replyBody()[:sizeVringState]
	num := uint32(s.rings[i].base)
	if s.packed() {
		// vhost-user spec "Vring descriptor indices for packed
		// virtqueues" (see setVringBase): avail position in bits 0-15,
		// used position in bits 16-31. QEMU keeps both
		// (virtio_queue_packed_set_last_avail_idx).
		num |= uint32(s.rings[i].used) << 16
	}
	vringState{Index: uint32(i), Num: num}.encode(b)
	return b, nil
}

// vringFDArg decodes the u64 of SET_VRING_KICK/CALL/ERR and checks it
// against the fds that came with it: exactly one, or none with
// VHOST_USER_VRING_NOFD_MASK.
func (s *Session) vringFDArg(p *payload, fds *fdSet) (int, vringFD, error) {
	a, err := decodeVringFD(p.U64)
	if err != nil {
		return 0, a, err
	}
	i, err := s.ringIndex(a.Index)
	if err != nil {
		return 0, a, err
	}
	switch {
	case a.NoFD && fds.len() != 0:
		return 0, a, fmt.Errorf("%w: ring %d: an fd with the no-fd flag", ErrBadFDs, i)
	case !a.NoFD && fds.len() != 1:
		return 0, a, fmt.Errorf("%w: ring %d: no fd and no no-fd flag", ErrBadFDs, i)
	case !a.NoFD:
		if err := checkNotifyFD(fds.fds[0]); err != nil {
			return 0, a, fmt.Errorf("ring %d: %w", i, err)
		}
	}
	return i, a, nil
}

// SET_VRING_KICK: the ring starts (if it has everything else). With
// VHOST_USER_VRING_NOFD_MASK the device polls the ring instead.
func (s *Session) setVringKick(p *payload, fds *fdSet) ([]byte, error) {
	i, a, err := s.vringFDArg(p, fds)
	if err != nil {
		return nil, err
	}
	var d *doorbell
	if a.NoFD {
		d = newPollDoorbell()
	} else if d, err = newFDDoorbell(fds.take(0)); err != nil {
		return nil, err
	}
	// A new kick on a started ring: rebuild it around the new doorbell.
	s.pauseRing(i)
	r := &s.rings[i]
	r.kick.close()
	r.kick = d
	return nil, s.maybeStart(i)
}

// SET_VRING_CALL: replaces the call fd, also on a running ring.
func (s *Session) setVringCall(p *payload, fds *fdSet) ([]byte, error) {
	i, a, err := s.vringFDArg(p, fds)
	if err != nil {
		return nil, err
	}
	var c *callFD
	if !a.NoFD {
		if c, err = newCallFD(fds.take(0), s.notifyBlocked(i, "call")); err != nil {
			return nil, err
		}
	}
	s.rings[i].call.set(c)
	return nil, nil
}

// SET_VRING_ERR: "Set the event file descriptor to signal when error
// occurs" (spec "Front-end message types", VHOST_USER_SET_VRING_ERR; the
// kernel's vhost signals its VHOST_SET_VRING_ERR eventfd the same way, on a
// bad ring access). It is signalled when the ring breaks: a guest error
// the queue finds (virtio.ErrBroken: an avail index that jumps, a bad
// descriptor chain, ...) or a fault in the ring's memory (memFault), from
// the goroutine that found it, by writing 1 to it as to a call fd. It may
// be replaced or removed (NOFD) at any time, also on a running ring.
func (s *Session) setVringErr(p *payload, fds *fdSet) ([]byte, error) {
	i, a, err := s.vringFDArg(p, fds)
	if err != nil {
		return nil, err
	}
	var c *callFD
	if !a.NoFD {
		if c, err = newCallFD(fds.take(0), s.notifyBlocked(i, "error")); err != nil {
			return nil, err
		}
	}
	s.ringErr[i].set(c)
	return nil, nil
}

// SET_VRING_ENABLE.
func (s *Session) setVringEnable(p *payload, _ *fdSet) ([]byte, error) {
	if s.cfg.features&FProtocolFeatures == 0 {
		return nil, fmt.Errorf("%w: VHOST_USER_F_PROTOCOL_FEATURES not offered", ErrNotNegotiated)
	}
	i, err := s.ringIndex(p.State.Index)
	if err != nil {
		return nil, err
	}
	if p.State.Num > 1 {
		return nil, fmt.Errorf("%w: ring %d: enable value %d", ErrInvalid, i, p.State.Num)
	}
	s.rings[i].enable = p.State.Num == 1
	s.updateRunning(i)
	return nil, nil
}
