package virtio_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

func reg(gpa, size, uva uint64) virtio.Region {
	return virtio.Region{GuestPhysAddr: gpa, Size: size, UserAddr: uva, Data: make([]byte, size)}
}

func TestNewMemoryRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		regions []virtio.Region
	}{
		{"none", nil},
		{"size 0", []virtio.Region{{GuestPhysAddr: 0, Size: 0, Data: nil}}},
		{"data shorter than size", []virtio.Region{{GuestPhysAddr: 0, Size: 4096, Data: make([]byte, 4095)}}},
		{"data longer than size", []virtio.Region{{GuestPhysAddr: 0, Size: 4096, Data: make([]byte, 4097)}}},
		{"gpa wraps", []virtio.Region{reg(math.MaxUint64-100, 200, 0)}},
		{"gpa ends at 2^64", []virtio.Region{reg(math.MaxUint64-99, 100, 0)}},
		{"uva wraps", []virtio.Region{reg(0, 200, math.MaxUint64-100)}},
		{"gpa overlap", []virtio.Region{reg(0x1000, 0x1000, 0), reg(0x1fff, 0x1000, 0x10000)}},
		{"gpa contained", []virtio.Region{reg(0x1000, 0x3000, 0), reg(0x2000, 0x100, 0x10000)}},
		{"gpa same start", []virtio.Region{reg(0x1000, 0x100, 0), reg(0x1000, 0x100, 0x10000)}},
		{"uva overlap", []virtio.Region{reg(0x1000, 0x1000, 0x5000), reg(0x4000, 0x1000, 0x5fff)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := virtio.NewMemory(tc.regions)
			require.ErrorIs(t, err, virtio.ErrOutOfBounds)
		})
	}
}

func TestMemorySlice(t *testing.T) {
	regions := []virtio.Region{
		reg(0x10000, 0x1000, 0x7f0000000000),
		reg(0x0, 0x1000, 0x7f0000100000),
		reg(0x11000, 0x1000, 0x7f0000200000), // adjacent to the first
		reg(math.MaxUint64-0x1000, 0x1000, 0x7f0000300000),
	}
	for i := range regions {
		binary.LittleEndian.PutUint64(regions[i].Data, uint64(i+1))
	}
	m, err := virtio.NewMemory(regions)
	require.NoError(t, err)
	require.Equal(t, regions, m.Regions())
	for _, tc := range []struct {
		gpa, n uint64
		region int // -1: error
		off    uint64
	}{
		{0x10000, 8, 0, 0},
		{0x10ff8, 8, 0, 0xff8},
		{0x10ff9, 8, -1, 0}, // crosses into the adjacent region
		{0x11000, 0x1000, 2, 0},
		{0x0, 0x1000, 1, 0},
		{0x0, 0x1001, -1, 0},
		{0x1000, 1, -1, 0},
		{0x0fff, 0, 1, 0xfff},
		{0x1000, 0, -1, 0},
		{math.MaxUint64 - 0x1000, 0x1000, 3, 0},
		{math.MaxUint64 - 1, 1, 3, 0xfff},
		{math.MaxUint64 - 1, 2, -1, 0},
		{math.MaxUint64, 1, -1, 0},
		{0x10000, math.MaxUint64, -1, 0},
		{0x10800, math.MaxUint64 - 0x7ff, -1, 0},
	} {
		b, err := m.Slice(tc.gpa, tc.n)
		if tc.region < 0 {
			require.ErrorIs(t, err, virtio.ErrOutOfBounds, "%#x+%#x", tc.gpa, tc.n)
			continue
		}
		require.NoError(t, err, "%#x+%#x", tc.gpa, tc.n)
		require.Len(t, b, int(tc.n))
		require.Equal(t, int(tc.n), cap(b))
		if tc.n > 0 {
			require.True(t, &b[0] == &regions[tc.region].Data[tc.off])
		}
	}
}

func TestMemoryManyRegions(t *testing.T) {
	// More than 8 regions: the binary search path.
	var regions []virtio.Region
	for i := range 40 {
		regions = append(regions, reg(uint64(39-i)*0x10000, 0x1000, uint64(i)*0x1000))
	}
	m, err := virtio.NewMemory(regions)
	require.NoError(t, err)
	for i := range 40 {
		base := uint64(39-i) * 0x10000
		b, err := m.Slice(base+0x10, 0xff0)
		require.NoError(t, err)
		require.True(t, &b[0] == &regions[i].Data[0x10])
		_, err = m.Slice(base+0x1000, 1)
		require.Error(t, err)
		gpa, err := m.UserToGuest(uint64(i)*0x1000+5, 10)
		require.NoError(t, err)
		require.Equal(t, base+5, gpa)
	}
}

func TestUserToGuest(t *testing.T) {
	m, err := virtio.NewMemory([]virtio.Region{reg(0x100000, 0x1000, 0x7000), reg(0, 0x1000, 0x8000)})
	require.NoError(t, err)
	for _, tc := range []struct {
		uva, n uint64
		gpa    uint64
		ok     bool
	}{
		{0x7000, 0x1000, 0x100000, true},
		{0x7ffe, 2, 0x100ffe, true},
		{0x7fff, 2, 0, false}, // crosses into the next region: not contiguous in GPA
		{0x8000, 16, 0, true},
		{0x6fff, 1, 0, false},
		{0x9000, 1, 0, false},
		{0x8000, math.MaxUint64, 0, false},
	} {
		gpa, err := m.UserToGuest(tc.uva, tc.n)
		if !tc.ok {
			require.ErrorIs(t, err, virtio.ErrOutOfBounds)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.gpa, gpa)
	}
}

// memoryRef is the obviously correct Slice: which region holds [gpa, gpa+n).
func memoryRef(regions []virtio.Region, gpa, n uint64) (int, bool) {
	for i, r := range regions {
		if gpa >= r.GuestPhysAddr && gpa-r.GuestPhysAddr < r.Size && n <= r.Size-(gpa-r.GuestPhysAddr) {
			return i, true
		}
	}
	return -1, false
}

func FuzzMemory(f *testing.F) {
	seed := func(words ...uint64) []byte {
		b := make([]byte, 8*len(words))
		for i, w := range words {
			binary.LittleEndian.PutUint64(b[8*i:], w)
		}
		return b
	}
	f.Add(seed(2, 0x1000, 0x1000, 0x7000, 0x2000, 0x1000, 0x9000), uint64(0x1ff8), uint64(16))
	f.Add(seed(1, math.MaxUint64-0x100, 0x100, 0, 0, 0, 0), uint64(math.MaxUint64-1), uint64(1))
	f.Add(seed(3, 0, 0x10, 0, 0x10, 0x10, 0x10, 0x8, 0x10, 0x20), uint64(0x8), uint64(8))
	f.Fuzz(func(t *testing.T, table []byte, gpa, n uint64) {
		word := func(i int) uint64 {
			if 8*i+8 > len(table) {
				return 0
			}
			return binary.LittleEndian.Uint64(table[8*i:])
		}
		count := int(word(0)%4) + 1
		var regions []virtio.Region
		for i := range count {
			g, size, uva := word(1+3*i), word(2+3*i), word(3+3*i)
			r := virtio.Region{GuestPhysAddr: g, Size: size, UserAddr: uva}
			// Keep allocations small: a mapping of at most 64 KiB; a
			// larger Size gets a mismatched mapping, which must be rejected.
			r.Data = make([]byte, min(size, 1<<16))
			regions = append(regions, r)
		}
		m, err := virtio.NewMemory(regions)
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrOutOfBounds)
			return
		}
		// Accepted: sizes match, nothing wraps, nothing overlaps.
		for i, a := range regions {
			require.Equal(t, a.Size, uint64(len(a.Data)))
			require.LessOrEqual(t, a.GuestPhysAddr, math.MaxUint64-a.Size)
			for _, b := range regions[i+1:] {
				require.True(t, a.GuestPhysAddr+a.Size <= b.GuestPhysAddr || b.GuestPhysAddr+b.Size <= a.GuestPhysAddr)
				require.True(t, a.UserAddr+a.Size <= b.UserAddr || b.UserAddr+b.Size <= a.UserAddr)
			}
		}
		for _, q := range [][2]uint64{{gpa, n}, {gpa, n % 64}, {regions[0].GuestPhysAddr + gpa%regions[0].Size, n % (regions[0].Size + 1)}} {
			b, err := m.Slice(q[0], q[1])
			want, ok := memoryRef(regions, q[0], q[1])
			if !ok {
				require.ErrorIs(t, err, virtio.ErrOutOfBounds)
				continue
			}
			require.NoError(t, err)
			require.Len(t, b, int(q[1]))
			if q[1] > 0 {
				require.True(t, &b[0] == &regions[want].Data[q[0]-regions[want].GuestPhysAddr])
			}
			uva := regions[want].UserAddr + (q[0] - regions[want].GuestPhysAddr)
			g, err := m.UserToGuest(uva, q[1])
			require.NoError(t, err)
			require.Equal(t, q[0], g)
		}
	})
}
