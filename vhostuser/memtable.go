package vhostuser

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Guest memory: SET_MEM_TABLE replaces the whole table; with
// CONFIGURE_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG change one region at a
// time (QEMU 7.2 then never sends SET_MEM_TABLE: it builds the initial
// table with one ADD_MEM_REG per region). Every change builds a new,
// immutable virtio.Memory; rings that run on the old one are stopped,
// rebuilt on the new one from the avail index they reached, and restarted;
// only then are mappings that left the table unmapped, so no device
// goroutine can touch an unmapped page.

// DefaultMaxMemSlots is GET_MAX_MEM_SLOTS when Options.MaxMemSlots is zero:
// 509, KVM's KVM_USER_MEM_SLOTS on x86 and what libvhost-user and rust-vmm's
// vhost-user-backend answer. QEMU takes at most 512.
const DefaultMaxMemSlots = 509

// DefaultMaxGuestMemory is the guest memory a session may map when
// Options.MaxGuestMemory is zero: 1 TiB.
const DefaultMaxGuestMemory = 1 << 40

// DefaultMaxMemory is the guest memory all sessions of a Server together
// may map when Options.MaxMemory is zero: 64 GiB.
const DefaultMaxMemory = 64 << 30

// checkTotal refuses memory that would take the session above its limit,
// or the server above its own (Options.MaxMemory), and otherwise counts
// it against the server's: sizes are the sizes of every region the
// session will map once the change is made. The change must end with
// settle.
func (s *Session) checkTotal(sizes ...uint64) error {
	var total uint64
	for _, sz := range sizes {
		t, c := bits.Add64(total, sz, 0)
		if c != 0 || t > s.cfg.maxMemory {
			return fmt.Errorf("%w: more than the %d bytes of guest memory a session may map", ErrBadMemory, s.cfg.maxMemory)
		}
		total = t
	}
	if total <= s.reserved {
		return nil // what is released goes in settle
	}
	b := s.cfg.budget
	if !b.grow(total - s.reserved) {
		// Not the frontend's fault: refused, the session goes on.
		return reject(fmt.Errorf("%w: the session would map %d bytes of guest memory, and with the %d bytes other sessions map now that is above the server's limit of %d bytes (Options.MaxMemory, vhost-arcnet --max-memory-gib)",
			ErrMemoryLimit, total, b.used.Load()-s.reserved, b.limit))
	}
	s.reserved = total
	return nil
}

// settle makes the session's share of the server's memory budget what it
// maps now (its regions, and regions being retired).
func (s *Session) settle() {
	var total uint64
	for _, m := range s.regions {
		total += m.Size
	}
	for _, m := range s.retiring {
		if m.full != nil {
			total += m.Size
		}
	}
	if total < s.reserved {
		s.cfg.budget.release(s.reserved - total)
	} else {
		s.cfg.budget.used.Add(total - s.reserved) // cannot happen: checkTotal counted it
	}
	s.reserved = total
}

// memBudget is the guest memory the sessions of a Server may map together.
type memBudget struct {
	limit uint64
	used  atomic.Uint64
}

// grow counts n more bytes, if they fit under the limit.
func (b *memBudget) grow(n uint64) bool {
	for {
		u := b.used.Load()
		if n > b.limit || u > b.limit-n {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *memBudget) release(n uint64) { b.used.Add(-n) }

// SET_MEM_TABLE: one fd per region, in order ("The size and ordering of the
// fds matches the number and ordering of memory regions").
func (s *Session) setMemTable(p *payload, fds *fdSet) ([]byte, error) {
	t := &p.Table
	if fds.len() != t.N {
		return nil, fmt.Errorf("%w: %d fds for %d regions", ErrBadFDs, fds.len(), t.N)
	}
	defer s.settle()
	var sizes [maxTableRegions]uint64
	for i := 0; i < t.N; i++ {
		sizes[i] = t.Regions[i].Size
	}
	if err := s.checkTotal(sizes[:t.N]...); err != nil {
		return nil, err
	}
	mapped := make([]*mappedRegion, 0, t.N)
	for i := 0; i < t.N; i++ {
		m, err := mapRegion(fds.fds[i], t.Regions[i], s.onFault)
		if err != nil {
			unmapAll(mapped)
			return nil, fmt.Errorf("region %d: %w", i, err)
		}
		mapped = append(mapped, m)
	}
	// The fds are closed by the dispatcher: the mappings outlive them.
	old := s.regions
	s.retiring = old // unmapped by teardown if setRegions faults
	swapped, err := s.setRegions(mapped)
	s.retiring = nil
	if !swapped {
		unmapAll(mapped)
		return nil, err
	}
	unmapAll(old)
	if err != nil {
		return nil, err
	}
	s.log.Info("memory table set", "regions", t.N, "sealed", sealedCount(mapped))
	return nil, nil
}

// ADD_MEM_REG: exactly one fd, for the one region.
//
// QEMU 7.2 (whose vhost_user_one_time_request lists neither ADD_MEM_REG
// nor REM_MEM_REG; current QEMU's vhost_user_per_device_request does)
// sends them once per queue pair,
// each vhost_dev keeping its own shadow table (hw/virtio/vhost-user.c
// vhost_user_add_remove_regions), so with queues=2 the same region comes
// twice (recorded: testdata/launchers/qemu-7.2-mq.rec). A region equal to
// one already mapped (guest address, user address, size, file and offset)
// is counted, not mapped again; REM_MEM_REG unmaps it at the last removal.
// Any other overlap is an error.
func (s *Session) addMemReg(p *payload, fds *fdSet) ([]byte, error) {
	if m := s.sameRegion(fds.fds[0], p.Region); m != nil {
		m.refs++
		s.log.Debug("memory region added again", "gpa", p.Region.GPA, "size", p.Region.Size, "refs", m.refs)
		return nil, nil
	}
	if len(s.regions) >= s.cfg.maxMemSlots {
		return nil, fmt.Errorf("%w: all %d memory slots are in use", ErrBadMemory, s.cfg.maxMemSlots)
	}
	defer s.settle()
	sizes := make([]uint64, 0, len(s.regions)+1)
	for _, m := range s.regions {
		sizes = append(sizes, m.Size)
	}
	if err := s.checkTotal(append(sizes, p.Region.Size)...); err != nil {
		return nil, err
	}
	m, err := mapRegion(fds.fds[0], p.Region, s.onFault)
	if err != nil {
		return nil, err
	}
	regions := make([]*mappedRegion, 0, len(s.regions)+1)
	regions = append(append(regions, s.regions...), m)
	if swapped, err := s.setRegions(regions); !swapped {
		m.unmap()
		return nil, err
	} else if err != nil {
		return nil, err
	}
	s.log.Debug("memory region added", "gpa", p.Region.GPA, "size", p.Region.Size, "regions", len(regions), "sealed", m.sealed)
	return nil, nil
}

// sameRegion returns the mapped region that r (to be mapped from fd) is a
// copy of, if any.
func (s *Session) sameRegion(fd int, r memRegion) *mappedRegion {
	for _, m := range s.regions {
		if m.GuestPhysAddr != r.GPA || m.UserAddr != r.UVA || m.Size != r.Size || m.offset != r.MmapOffset {
			continue
		}
		if dev, ino, err := fileID(fd); err == nil && dev == m.dev && ino == m.ino {
			return m
		}
		return nil
	}
	return nil
}

// REM_MEM_REG: "The memory region to be removed is identified by its guest
// address, user address and size. The mmap offset is ignored." A region
// added more than once (addMemReg) goes at its last removal.
func (s *Session) remMemReg(p *payload, _ *fdSet) ([]byte, error) {
	r := p.Region
	at := -1
	for i, m := range s.regions {
		if m.GuestPhysAddr == r.GPA && m.UserAddr == r.UVA && m.Size == r.Size {
			at = i
			break
		}
	}
	if at < 0 {
		return nil, fmt.Errorf("%w: no region at guest %#x, user %#x, size %#x", ErrBadMemory, r.GPA, r.UVA, r.Size)
	}
	if m := s.regions[at]; m.refs > 1 {
		m.refs--
		s.log.Debug("memory region removed once", "gpa", r.GPA, "size", r.Size, "refs", m.refs)
		return nil, nil
	}
	defer s.settle()
	removed := s.regions[at]
	regions := make([]*mappedRegion, 0, len(s.regions)-1)
	regions = append(append(regions, s.regions[:at]...), s.regions[at+1:]...)
	s.retiring = []*mappedRegion{removed} // unmapped by teardown if setRegions faults
	swapped, err := s.setRegions(regions)
	s.retiring = nil
	if swapped {
		removed.unmap()
	}
	if err != nil {
		return nil, err
	}
	s.log.Debug("memory region removed", "gpa", r.GPA, "size", r.Size, "regions", len(regions))
	return nil, nil
}

// setRegions makes regions the guest memory: it validates them as a whole
// (virtio.NewMemory refuses overlaps in guest or user addresses), then
// rebuilds the started rings on the new memory. swapped reports whether
// regions replaced s.regions: if not, nothing changed and the caller still
// owns its new mappings; if so, no ring uses the mappings that left the
// table and the caller unmaps them, even when err says a ring no longer
// fits the new memory (the session then fails).
func (s *Session) setRegions(regions []*mappedRegion) (swapped bool, err error) {
	var mem *virtio.Memory
	if len(regions) > 0 {
		vr := make([]virtio.Region, len(regions))
		for i, m := range regions {
			vr[i] = m.Region
		}
		if mem, err = virtio.NewMemory(vr); err != nil {
			return false, fmt.Errorf("%w: %w", ErrBadMemory, err)
		}
	} else if s.anyStarted() {
		return false, fmt.Errorf("%w: last region removed under started rings", ErrBadMemory)
	}
	paused := s.pauseAll()
	s.regions, s.mem = regions, mem
	return true, s.resume(paused)
}

// sealedCount returns how many of regions cannot shrink (F_SEAL_SHRINK).
func sealedCount(regions []*mappedRegion) int {
	n := 0
	for _, m := range regions {
		if m.sealed {
			n++
		}
	}
	return n
}

func unmapAll(regions []*mappedRegion) {
	for _, m := range regions {
		m.unmap()
	}
}
