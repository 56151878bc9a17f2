package virtio

import (
	"fmt"
	"math"
	"sort"
)

// Region is one contiguous range of guest physical memory mapped into the
// backend (a vhost-user memory table entry, vhost-user spec "Memory region
// description").
type Region struct {
	GuestPhysAddr uint64 // guest physical address of the first byte
	Size          uint64 // length in bytes
	UserAddr      uint64 // the frontend's virtual address of the first byte (vhost-user ring addresses use it)
	Data          []byte // backend mapping of the region, len(Data) == Size
}

// region is the validated, internal form of a Region.
type region struct {
	gpa  uint64
	size uint64
	uva  uint64
	data []byte
}

// Memory is the guest's physical memory as the backend sees it: a set of
// non-overlapping regions. It is immutable after NewMemory and safe for
// concurrent use; a new memory table means a new Memory.
type Memory struct {
	regions []region // sorted by gpa
	byUVA   []int    // indices into regions, sorted by uva
	orig    []Region
}

// NewMemory validates regions and returns the guest memory they make up.
// It rejects an empty table, a region of size 0, len(Data) != Size, a GPA or
// UVA range that wraps around 2^64, and overlapping GPA or UVA ranges.
func NewMemory(regions []Region) (*Memory, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("memory table: no regions: %w", ErrOutOfBounds)
	}
	m := &Memory{
		regions: make([]region, len(regions)),
		byUVA:   make([]int, len(regions)),
		orig:    append([]Region(nil), regions...),
	}
	for i, r := range regions {
		switch {
		case r.Size == 0:
			return nil, fmt.Errorf("memory region %d: size 0: %w", i, ErrOutOfBounds)
		case uint64(len(r.Data)) != r.Size:
			return nil, fmt.Errorf("memory region %d: mapping is %d bytes, size is %d: %w", i, len(r.Data), r.Size, ErrOutOfBounds)
		case r.GuestPhysAddr > math.MaxUint64-r.Size:
			return nil, fmt.Errorf("memory region %d: guest range %#x+%#x wraps: %w", i, r.GuestPhysAddr, r.Size, ErrOutOfBounds)
		case r.UserAddr > math.MaxUint64-r.Size:
			return nil, fmt.Errorf("memory region %d: user range %#x+%#x wraps: %w", i, r.UserAddr, r.Size, ErrOutOfBounds)
		}
		// Cap the slice so no append through a segment can reach past it.
		m.regions[i] = region{gpa: r.GuestPhysAddr, size: r.Size, uva: r.UserAddr, data: r.Data[:r.Size:r.Size]}
	}
	sort.Slice(m.regions, func(a, b int) bool { return m.regions[a].gpa < m.regions[b].gpa })
	for i := 1; i < len(m.regions); i++ {
		p, r := &m.regions[i-1], &m.regions[i]
		if r.gpa-p.gpa < p.size { // r.gpa >= p.gpa: overlap iff r starts before p ends
			return nil, fmt.Errorf("memory regions [%#x+%#x] and [%#x+%#x] overlap: %w", p.gpa, p.size, r.gpa, r.size, ErrOutOfBounds)
		}
	}
	for i := range m.byUVA {
		m.byUVA[i] = i
	}
	sort.Slice(m.byUVA, func(a, b int) bool { return m.regions[m.byUVA[a]].uva < m.regions[m.byUVA[b]].uva })
	for i := 1; i < len(m.byUVA); i++ {
		p, r := &m.regions[m.byUVA[i-1]], &m.regions[m.byUVA[i]]
		if r.uva-p.uva < p.size {
			return nil, fmt.Errorf("memory regions at user addresses %#x+%#x and %#x+%#x overlap: %w", p.uva, p.size, r.uva, r.size, ErrOutOfBounds)
		}
	}
	return m, nil
}

// Regions returns a copy of the regions m was made from, in their
// original order.
func (m *Memory) Regions() []Region { return append([]Region(nil), m.orig...) }

// find returns the index of the region holding gpa, or -1.
func (m *Memory) find(gpa uint64) int {
	rs := m.regions
	if len(rs) <= 8 {
		for i := range rs {
			if gpa-rs[i].gpa < rs[i].size { // unsigned: false when gpa < start
				return i
			}
		}
		return -1
	}
	// First region starting after gpa; the candidate is the one before.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].gpa > gpa })
	if i > 0 && gpa-rs[i-1].gpa < rs[i-1].size {
		return i - 1
	}
	return -1
}

// Slice returns the n bytes of guest memory at gpa. The range must lie
// inside one region; n == 0 needs gpa inside a region. The arithmetic
// cannot overflow: only offsets inside a region are ever added.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	i := m.find(gpa)
	if i < 0 {
		return nil, fmt.Errorf("guest range %#x+%#x: %w", gpa, n, ErrOutOfBounds)
	}
	r := &m.regions[i]
	off := gpa - r.gpa
	if n > r.size-off {
		return nil, fmt.Errorf("guest range %#x+%#x crosses the end of region %#x+%#x: %w", gpa, n, r.gpa, r.size, ErrOutOfBounds)
	}
	return r.data[off : off+n : off+n], nil
}

// UserToGuest translates the frontend virtual address range [uva, uva+n)
// to a guest physical address. The range must lie inside one region.
func (m *Memory) UserToGuest(uva, n uint64) (gpa uint64, err error) {
	for _, i := range m.byUVA {
		r := &m.regions[i]
		if off := uva - r.uva; off < r.size {
			if n > r.size-off {
				break
			}
			return r.gpa + off, nil
		}
	}
	return 0, fmt.Errorf("user range %#x+%#x: %w", uva, n, ErrOutOfBounds)
}

// appendSegments appends the guest range [gpa, gpa+n) to segs, split at
// region boundaries, and returns the new slice. *hint caches the region
// index of the previous lookup (per queue, so Memory stays read-only).
func (m *Memory) appendSegments(segs []Segment, gpa uint64, n uint32, hint *int) ([]Segment, error) {
	left := uint64(n)
	rs := m.regions
	for left > 0 {
		i := *hint
		if i >= len(rs) || gpa-rs[i].gpa >= rs[i].size {
			if i = m.find(gpa); i < 0 {
				return segs, fmt.Errorf("buffer %#x+%#x: %w", gpa, left, ErrOutOfBounds)
			}
			*hint = i
		}
		r := &rs[i]
		off := gpa - r.gpa
		take := min(r.size-off, left)
		segs = append(segs, Segment{Buf: r.data[off : off+take : off+take], GPA: gpa})
		left -= take
		gpa += take // cannot wrap: off+take <= size and gpa+size fits
	}
	return segs, nil
}
