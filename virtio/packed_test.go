package virtio_test

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// packedFeatures are the features of a packed ring with everything on.
const packedFeatures = virtio.FVersion1 | virtio.FRingPacked | virtio.FIndirectDesc | virtio.FEventIdx

// newPackedPair is newPair for a packed ring.
func newPackedPair(t testing.TB, size uint16, features uint64) *pair {
	t.Helper()
	return newPair(t, size, features|virtio.FRingPacked, virtiotest.DriverOptions{Packed: true})
}

// TestPackedRoundTrip adds chains of every shape over several rounds of
// rings of odd sizes (packed sizes need not be powers of two), so that both
// wrap counters flip many times, and checks what the device reads, what
// the driver gets back, and that nothing is visible before Publish.
func TestPackedRoundTrip(t *testing.T) {
	shapes := []struct {
		name     string
		out      [][]byte
		in       []uint32
		indirect bool
	}{
		{"out", [][]byte{[]byte("hello")}, nil, false},
		{"in", nil, []uint32{100}, false},
		{"chain out+in", [][]byte{[]byte("hdr"), []byte("payload")}, []uint32{10, 20}, false},
		{"indirect out", [][]byte{[]byte("a"), []byte("bc"), []byte("def")}, nil, true},
		{"indirect out+in", [][]byte{[]byte("req")}, []uint32{1, 2, 3}, true},
	}
	for _, size := range []uint16{1, 3, 4, 7, 256} {
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("size %d %s", size, sh.name), func(t *testing.T) {
				if len(sh.out)+len(sh.in) > int(size) {
					// Direct: more than the ring holds; indirect: a
					// table longer than the queue size is refused, as
					// for split rings.
					t.Skip("chain longer than the ring")
				}
				p := newPackedPair(t, size, packedFeatures)
				var c virtio.Chain
				for round := range 3 * int(size) {
					id, err := p.d.AddChain(sh.out, sh.in, sh.indirect)
					require.NoError(t, err)
					ok, err := p.q.Pop(&c)
					require.NoError(t, err)
					require.False(t, ok, "visible before Publish")
					p.d.Publish()
					ok, err = p.q.Pop(&c)
					require.NoError(t, err)
					require.True(t, ok, "round %d", round)
					require.Equal(t, id, c.Head)
					require.Equal(t, string(bytes.Join(sh.out, nil)), string(gather(c.Out)))
					require.Len(t, c.In, len(sh.in))
					for i, l := range sh.in {
						require.Len(t, c.In[i].Buf, int(l))
						c.In[i].Buf[0] = byte(round)
					}
					ok, err = p.q.Pop(&c)
					require.NoError(t, err)
					require.False(t, ok)
					require.NoError(t, p.q.Push(c.Head, c.InLen))
					_, ok = p.d.Used()
					require.False(t, ok, "used before Publish")
					p.q.Publish()
					e, ok := p.d.Used()
					require.True(t, ok)
					require.Equal(t, uint32(id), e.ID)
					require.Equal(t, c.InLen, e.Len)
					if len(sh.in) > 0 {
						b := make([]byte, 1)
						p.d.ReadIn(id, b)
						require.Equal(t, byte(round), b[0])
					}
					require.Equal(t, p.d.AvailIdx(), p.q.LastAvail(), "positions agree (index|wrap<<15)")
					require.Equal(t, p.d.LastUsed(), p.q.UsedIdx())
				}
			})
		}
	}
}

// TestPackedBatchAndOutOfOrder pushes a batch out of order: one Publish
// makes them all visible, each used descriptor skips its own buffer's
// descriptors (§2.8.6).
func TestPackedBatchAndOutOfOrder(t *testing.T) {
	p := newPackedPair(t, 8, packedFeatures)
	a, err := p.d.AddChain(nil, []uint32{10, 10, 10}, false) // 3 descriptors
	require.NoError(t, err)
	b, err := p.d.AddIn(20) // 1
	require.NoError(t, err)
	c3, err := p.d.AddChain(nil, []uint32{1, 2}, true) // 1, indirect
	require.NoError(t, err)
	p.d.Publish()
	var chains [3]virtio.Chain
	for i := range chains {
		ok, err := p.q.Pop(&chains[i])
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.Equal(t, []uint16{a, b, c3}, []uint16{chains[0].Head, chains[1].Head, chains[2].Head})
	require.Equal(t, uint16(0x8000|5), p.q.LastAvail())
	require.NoError(t, p.q.Push(b, 7))
	require.NoError(t, p.q.Push(c3, 3))
	require.NoError(t, p.q.Push(a, 30))
	require.Equal(t, uint16(0x8000|5), p.q.UsedIdx())
	p.q.Publish()
	var got []virtiotest.UsedElem
	for {
		e, ok := p.d.Used()
		if !ok {
			break
		}
		got = append(got, e)
	}
	require.Equal(t, []virtiotest.UsedElem{{ID: uint32(b), Len: 7}, {ID: uint32(c3), Len: 3}, {ID: uint32(a), Len: 30}}, got)
	require.Equal(t, 8, p.d.FreeDescs())
}

func TestPackedUnpopRewind(t *testing.T) {
	p := newPackedPair(t, 5, packedFeatures)
	var ids []uint16
	for _, n := range []int{2, 1, 2} {
		lens := make([]uint32, n)
		for i := range lens {
			lens[i] = 64
		}
		id, err := p.d.AddChain(nil, lens, false)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	p.d.Publish()
	var c virtio.Chain
	pop := func() uint16 {
		ok, err := p.q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		return c.Head
	}
	require.Equal(t, ids[0], pop())
	require.Equal(t, ids[1], pop())
	p.q.Unpop(1)
	require.Equal(t, uint16(0x8000|2), p.q.LastAvail())
	require.Equal(t, ids[1], pop())
	require.Equal(t, ids[2], pop())
	require.Equal(t, uint16(0), p.q.LastAvail(), "wrapped: index 0, wrap counter 0")
	p.q.Unpop(2)
	require.Equal(t, ids[1], pop())
	require.Equal(t, ids[2], pop())
	for _, id := range ids {
		require.NoError(t, p.q.Push(id, 1))
	}
	p.q.Publish()
	for range ids {
		_, ok := p.d.Used()
		require.True(t, ok)
	}

	// Mark, pop and push, Rewind: the ring is untouched and the chain is
	// popped again, whole.
	id, err := p.d.AddChain(nil, []uint32{32, 32}, false)
	require.NoError(t, err)
	p.d.Publish()
	m := p.q.Mark()
	require.Equal(t, id, pop())
	require.NoError(t, p.q.Push(id, 64))
	p.q.Rewind(m)
	p.q.Publish()
	_, ok := p.d.Used()
	require.False(t, ok, "a rewound push is never published")
	require.Equal(t, id, pop())
	require.Len(t, c.In, 2)
	require.NoError(t, p.q.Push(id, 64))
	p.q.Publish()
	e, ok := p.d.Used()
	require.True(t, ok)
	require.Equal(t, virtiotest.UsedElem{ID: uint32(id), Len: 64}, e)
}

// TestPackedNotify covers used buffer notifications (driver event
// suppression, §2.8.10) in the three modes and available buffer
// notifications (device event suppression) as the driver mock sees them.
func TestPackedNotify(t *testing.T) {
	roundTrip := func(p *pair, n int) bool {
		var c virtio.Chain
		for range n {
			_, err := p.d.AddIn(8)
			require.NoError(t, err)
		}
		p.d.Publish()
		for range n {
			c = *mustPop(t, p.q)
			require.NoError(t, p.q.Push(c.Head, 0))
		}
		p.q.Publish()
		return p.q.NeedNotify()
	}
	drain := func(p *pair) {
		for {
			if _, ok := p.d.Used(); !ok {
				return
			}
		}
	}
	t.Run("flags", func(t *testing.T) {
		p := newPackedPair(t, 8, virtio.FVersion1)
		require.True(t, roundTrip(p, 1), "enabled by default")
		drain(p)
		p.d.DisableInterrupts()
		require.False(t, roundTrip(p, 2))
		drain(p)
		require.False(t, p.d.EnableInterrupts())
		require.True(t, roundTrip(p, 1))
		require.False(t, p.q.NeedNotify(), "nothing new published")
	})
	t.Run("event idx", func(t *testing.T) {
		p := newPackedPair(t, 6, virtio.FVersion1|virtio.FEventIdx)
		require.False(t, p.d.EnableInterrupts())
		for round := range 10 { // several wraps of a 6-entry ring
			require.True(t, roundTrip(p, 1), "round %d: event at the used position", round)
			drain(p) // moves the event to the next used position
		}
		// Event set two descriptors ahead: the first one does not reach
		// it, the second does.
		pos := p.d.LastUsed()
		next := pos&0x7fff + 1
		ev := pos&0x8000 | next
		if next >= 6 {
			ev = (pos ^ 0x8000) & 0x8000
		}
		p.d.SetDriverEvent(ev, virtiotest.EventFlagsDesc)
		require.False(t, roundTrip(p, 1))
		require.True(t, roundTrip(p, 1))
		drain(p)
		// Reserved flags value 3: notify rather than stall.
		p.d.SetDriverEvent(0, 3)
		require.True(t, roundTrip(p, 1))
	})
	t.Run("kick suppression", func(t *testing.T) {
		for _, f := range []uint64{virtio.FVersion1, virtio.FVersion1 | virtio.FEventIdx} {
			p := newPackedPair(t, 6, f)
			_, err := p.d.AddIn(8)
			require.NoError(t, err)
			require.True(t, p.d.Publish(), "device event enabled by default")
			p.q.DisableNotify()
			_, flags := p.d.DeviceEvent()
			require.Equal(t, virtiotest.EventFlagsDisable, flags)
			_, err = p.d.AddIn(8)
			require.NoError(t, err)
			require.False(t, p.d.Publish())
			require.True(t, p.q.EnableNotify(), "chains pending")
			mustPop(t, p.q)
			mustPop(t, p.q)
			require.False(t, p.q.EnableNotify())
			off, flags := p.d.DeviceEvent()
			if f&virtio.FEventIdx != 0 {
				require.Equal(t, virtiotest.EventFlagsDesc, flags)
				require.Equal(t, p.q.LastAvail(), off)
			} else {
				require.Equal(t, virtiotest.EventFlagsEnable, flags)
			}
			_, err = p.d.AddIn(8)
			require.NoError(t, err)
			require.True(t, p.d.Publish())
		}
	})
}

func TestPackedNetRXMergeable(t *testing.T) {
	p := newPackedPair(t, 5, virtio.FVersion1|virtio.NetFMrgRxbuf|virtio.FEventIdx)
	rx := virtio.NewNetRX(p.q)
	for round := range 7 {
		for range 3 {
			_, err := p.d.AddIn(1024)
			require.NoError(t, err)
		}
		p.d.Publish()
		f := frame(2500)
		ok, err := rx.Write(virtio.NetHdr{}, [][]byte{f})
		require.NoError(t, err)
		require.True(t, ok, "round %d", round)
		// Not enough buffers for a second one: nothing consumed.
		ok, err = rx.Write(virtio.NetHdr{}, [][]byte{f})
		require.NoError(t, err)
		require.False(t, ok)
		p.q.Publish()
		var got []byte
		for range 3 {
			e, ok := p.d.Used()
			require.True(t, ok)
			b := make([]byte, e.Len)
			p.d.ReadIn(uint16(e.ID), b)
			got = append(got, b...)
		}
		var h virtio.NetHdr
		h.Decode(got)
		require.Equal(t, uint16(3), h.NumBuffers)
		require.Equal(t, f, got[virtio.NetHdrSize:])
		_, ok = p.d.Used()
		require.False(t, ok)
	}
}

// TestPackedHostileDriver: every way a driver can break a packed ring
// breaks the queue with a sticky error and never panics.
func TestPackedHostileDriver(t *testing.T) {
	in := func(i uint16) uint64 { return memGPA + 0x10000 + uint64(i)*0x100 }
	const av = virtiotest.DescFAvail // available in the first round
	pd := func(addr uint64, l uint32, id, flags uint16) virtiotest.PackedDesc {
		return virtiotest.PackedDesc{Addr: addr, Len: l, ID: id, Flags: flags}
	}
	for _, tc := range []struct {
		name     string
		size     uint16
		features uint64
		setup    func(d *virtiotest.Driver)
		want     error
	}{
		{"buffer id out of range", 8, 0, func(d *virtiotest.Driver) { d.WritePackedDesc(0, pd(in(0), 1, 8, av)) }, virtio.ErrBadChain},
		{"buffer id 0xffff", 8, 0, func(d *virtiotest.Driver) { d.WritePackedDesc(0, pd(in(0), 1, 0xffff, av)) }, virtio.ErrBadChain},
		{"NEXT on every descriptor", 4, 0, func(d *virtiotest.Driver) {
			for i := uint16(3); i < 4; i-- {
				d.WritePackedDesc(i, pd(in(i), 1, 0, av|virtiotest.DescFNext))
			}
		}, virtio.ErrBadChain},
		{"NEXT wraps round to a stale descriptor", 3, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(2, pd(in(2), 1, 0, av|virtiotest.DescFNext))
			d.WritePackedDesc(0, pd(in(0), 1, 0, av|virtiotest.DescFNext))
			d.WritePackedDesc(1, pd(in(1), 1, 0, av|virtiotest.DescFNext))
		}, virtio.ErrBadChain},
		{"address outside memory", 8, 0, func(d *virtiotest.Driver) { d.WritePackedDesc(0, pd(0x1000, 1, 0, av)) }, virtio.ErrOutOfBounds},
		{"absurd length", 8, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(in(0), math.MaxUint32, 0, av|virtiotest.DescFWrite))
		}, virtio.ErrOutOfBounds},
		{"address+length wraps 2^64", 8, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(math.MaxUint64-9, memGPA+20, 0, av))
		}, virtio.ErrOutOfBounds},
		{"readable after writable", 8, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(1, pd(in(1), 1, 0, av))
			d.WritePackedDesc(0, pd(in(0), 1, 0, av|virtiotest.DescFWrite|virtiotest.DescFNext))
		}, virtio.ErrBadChain},
		{"indirect not negotiated", 8, 0, func(d *virtiotest.Driver) {
			_ = d.WritePackedDescAt(in(0), pd(in(1), 1, 0, 0))
			d.WritePackedDesc(0, pd(in(0), 16, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrBadChain},
		{"indirect table outside memory", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(0x10, 16, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrOutOfBounds},
		{"indirect table past the end of memory", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(memGPA+1<<20-16, 32, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrOutOfBounds},
		{"indirect table length not a multiple of 16", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(in(0), 24, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrBadChain},
		{"indirect table longer than the queue", 4, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, pd(in(0), 16*5, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrBadChain},
		{"indirect with NEXT", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(1, pd(in(1), 1, 0, av))
			d.WritePackedDesc(0, pd(in(0), 16, 0, av|virtiotest.DescFIndirect|virtiotest.DescFNext))
		}, virtio.ErrBadChain},
		{"indirect inside a list", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WritePackedDesc(1, pd(in(1), 16, 0, av|virtiotest.DescFIndirect))
			d.WritePackedDesc(0, pd(in(0), 1, 0, av|virtiotest.DescFNext))
		}, virtio.ErrBadChain},
		{"nested indirect", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WritePackedDescAt(in(0), pd(in(1), 16, 0, virtiotest.DescFIndirect))
			d.WritePackedDesc(0, pd(in(0), 16, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrBadChain},
		{"indirect buffer outside memory", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WritePackedDescAt(in(0), pd(math.MaxUint64, 1, 0, 0))
			d.WritePackedDesc(0, pd(in(0), 16, 0, av|virtiotest.DescFIndirect))
		}, virtio.ErrOutOfBounds},
		{"good buffer then bad one", 8, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddIn(10)
			d.Publish()
			d.WritePackedDesc(1, pd(in(1), 1, 200, av))
		}, virtio.ErrBadChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPackedPair(t, tc.size, virtio.FVersion1|tc.features)
			tc.setup(p.d)
			requireBreaks(t, p.q, tc.want)
			require.ErrorIs(t, p.q.Push(0, 0), virtio.ErrBroken)
			p.q.Publish()
			require.False(t, p.q.NeedNotify())
			require.True(t, p.q.EnableNotify())
		})
	}
}

// TestPackedNotAvailable: descriptors whose wrap bits do not say
// "available in this round" are not popped, and break nothing.
func TestPackedNotAvailable(t *testing.T) {
	in := uint64(memGPA + 0x10000)
	for _, flags := range []uint16{
		0, // never written
		virtiotest.DescFAvail | virtiotest.DescFUsed, // a used descriptor of round 1
		virtiotest.DescFUsed,                         // available in round 0 (wrong wrap counter)
	} {
		p := newPackedPair(t, 4, virtio.FVersion1)
		p.d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: in, Len: 1, Flags: flags})
		var c virtio.Chain
		ok, err := p.q.Pop(&c)
		require.NoError(t, err, "flags %#x", flags)
		require.False(t, ok, "flags %#x", flags)
		require.False(t, p.q.EnableNotify())
	}
}

func TestPackedNewQueueValidation(t *testing.T) {
	buf := make([]byte, 1<<16)
	mem, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: 0x1000, Size: 1 << 16, UserAddr: 0, Data: buf}})
	require.NoError(t, err)
	good := virtio.QueueConfig{Size: 300, DescGPA: 0x1000, AvailGPA: 0x3000, UsedGPA: 0x3004, Features: virtio.FRingPacked, LastAvail: 0x8000, LastUsed: 0x8000}
	_, err = virtio.NewQueue(mem, good)
	require.NoError(t, err, "a size that is not a power of two is fine")
	for _, tc := range []struct {
		name string
		mod  func(c *virtio.QueueConfig)
	}{
		{"size 0", func(c *virtio.QueueConfig) { c.Size = 0 }},
		{"size 32769", func(c *virtio.QueueConfig) { c.Size = 32769 }},
		{"ring misaligned", func(c *virtio.QueueConfig) { c.DescGPA = 0x1008 }},
		{"driver area misaligned", func(c *virtio.QueueConfig) { c.AvailGPA = 0x3002 }},
		{"device area misaligned", func(c *virtio.QueueConfig) { c.UsedGPA = 0x3006 }},
		{"ring outside memory", func(c *virtio.QueueConfig) { c.DescGPA = 0x10000 }},
		{"device area outside memory", func(c *virtio.QueueConfig) { c.UsedGPA = 0x11000 }},
		{"avail position past size", func(c *virtio.QueueConfig) { c.LastAvail = 0x8000 | 300 }},
		{"used position past size", func(c *virtio.QueueConfig) { c.LastUsed = 0x7fff }},
		{"log address wraps", func(c *virtio.QueueConfig) { c.UsedLogGPA = math.MaxUint64 - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			_, err := virtio.NewQueue(mem, cfg)
			if strings.Contains(tc.name, "outside memory") {
				require.ErrorIs(t, err, virtio.ErrOutOfBounds)
			} else {
				require.ErrorIs(t, err, virtio.ErrBadRing)
			}
		})
	}
}

func TestPackedDirtyLog(t *testing.T) {
	p := newPackedPair(t, 256, virtio.FVersion1|virtio.NetFMrgRxbuf|virtio.FEventIdx)
	cfg := p.d.Config(virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.FEventIdx | virtio.FRingPacked)
	cfg.UsedLogGPA = 0x4000000
	q, err := virtio.NewQueue(p.mem, cfg)
	require.NoError(t, err)
	bitmap := make([]byte, 4096)
	q.SetLog(virtio.NewDirtyLog(bitmap))
	h, err := p.d.AddIn(2048)
	require.NoError(t, err)
	p.d.Publish()
	rx := virtio.NewNetRX(q)
	ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(100)})
	require.NoError(t, err)
	require.True(t, ok)
	q.Publish()
	gpa := p.d.ReadPackedDesc(0).Addr
	_ = h
	// The buffer, the used descriptor (in the descriptor ring, at its own
	// address) and the device event suppression written by Pop (at the
	// log address of the device area).
	want := dedup([]uint64{gpa >> 12, cfg.DescGPA >> 12, cfg.UsedLogGPA >> 12})
	require.ElementsMatch(t, want, dirtyPages(bitmap))
}

func TestAllocsPackedCycle(t *testing.T) {
	p := newPackedPair(t, 256, packedFeatures)
	p.q.SetLog(virtio.NewDirtyLog(make([]byte, 4096)))
	var c virtio.Chain
	msg := make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := p.d.AddOut(msg[:14], msg); err != nil {
			t.Fatal(err)
		}
		p.d.Publish()
		if ok, err := p.q.Pop(&c); !ok || err != nil {
			t.Fatal("pop", ok, err)
		}
		if err := p.q.Push(c.Head, 0); err != nil {
			t.Fatal(err)
		}
		p.q.Publish()
		p.q.NeedNotify()
		if _, ok := p.d.Used(); !ok {
			t.Fatal("not used")
		}
	})
	require.Zero(t, allocs)
}

// TestPackedPendingHeadNotUsed is the regression test of a driver mock
// bug: a buffer added but not yet published must look neither available
// to the device nor used to the driver, in rounds of either wrap counter
// (zero flags read as "used" when the wrap counter is 0).
func TestPackedPendingHeadNotUsed(t *testing.T) {
	p := newPackedPair(t, 4, virtio.FVersion1)
	var c virtio.Chain
	for round := range 12 {
		_, err := p.d.AddIn(64)
		require.NoError(t, err)
		_, ok := p.d.Used()
		require.False(t, ok, "round %d: pending buffer read as used", round)
		ok, err = p.q.Pop(&c)
		require.NoError(t, err)
		require.False(t, ok, "round %d: pending buffer popped", round)
		p.d.Publish()
		require.NoError(t, p.q.Push(mustPop(t, p.q).Head, 0))
		p.q.Publish()
		_, ok = p.d.Used()
		require.True(t, ok)
	}
}

// TestPackedRewindRestoresRing: Push writes used descriptors into the ring
// in place; Rewind must leave the descriptor ring byte for byte as it was
// at the Mark, whatever was pushed (out of order, buffers of several
// descriptors, across the end of the ring), the chains must pop again
// whole, and pushes made before the Mark are published as usual.
func TestPackedRewindRestoresRing(t *testing.T) {
	p := newPackedPair(t, 7, packedFeatures)
	ringBytes := func() []byte { return append([]byte(nil), p.d.Mem()[:16*int(p.d.Size())]...) }
	var c virtio.Chain
	pop := func() (uint16, int) {
		ok, err := p.q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		return c.Head, len(c.In)
	}
	// Move the positions so that the chains below cross the end of the ring.
	for range 5 {
		_, err := p.d.AddIn(8)
		require.NoError(t, err)
	}
	p.d.Publish()
	for range 5 {
		id, _ := pop()
		require.NoError(t, p.q.Push(id, 8))
	}
	p.q.Publish()
	for range 5 {
		_, ok := p.d.Used()
		require.True(t, ok)
	}

	before, err := p.d.AddIn(16) // pushed before the Mark: survives the Rewind
	require.NoError(t, err)
	shapes := [][]uint32{{10, 10, 10}, {20}, {5, 5}}
	var ids []uint16
	for _, lens := range shapes {
		id, err := p.d.AddChain(nil, lens, false)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	p.d.Publish()
	id0, _ := pop()
	require.Equal(t, before, id0)
	require.NoError(t, p.q.Push(before, 16))
	snapshot := ringBytes()
	m := p.q.Mark()
	for _, want := range ids {
		id, n := pop()
		require.Equal(t, want, id)
		require.Len(t, c.In, n)
	}
	for _, i := range []int{1, 2, 0} { // out of order
		require.NoError(t, p.q.Push(ids[i], 3))
	}
	require.NotEqual(t, snapshot, ringBytes(), "Push writes into the ring")
	p.q.Rewind(m)
	require.Equal(t, snapshot, ringBytes(), "Rewind restored the ring")
	for i, want := range ids {
		id, n := pop()
		require.Equal(t, want, id)
		require.Equal(t, len(shapes[i]), n, "chain %d popped again whole", i)
	}
	for _, id := range ids {
		require.NoError(t, p.q.Push(id, 1))
	}
	p.q.Publish()
	var got []uint32
	for {
		e, ok := p.d.Used()
		if !ok {
			break
		}
		got = append(got, e.ID)
	}
	require.Equal(t, []uint32{uint32(before), uint32(ids[0]), uint32(ids[1]), uint32(ids[2])}, got)
	require.Equal(t, 7, p.d.FreeDescs())
}

// TestPackedPushBeyondPops: a used descriptor never goes past what the
// device consumed, even when the driver gave one buffer id to two buffers
// of different lengths (the second pop's count wins): Push refuses.
func TestPackedPushBeyondPops(t *testing.T) {
	p := newPackedPair(t, 8, packedFeatures)
	id, err := p.d.AddIn(8)
	require.NoError(t, err)
	p.d.Publish()
	require.Equal(t, id, mustPop(t, p.q).Head)
	require.NoError(t, p.q.Push(id, 8))
	require.ErrorIs(t, p.q.Push(id, 8), virtio.ErrBadChain, "a second push of the one buffer popped")

	// The driver reuses buffer id 0 for a buffer of three descriptors
	// while the first (one descriptor) is in flight.
	p = newPackedPair(t, 8, packedFeatures)
	p.d.WritePackedDesc(1, virtiotest.PackedDesc{Addr: memGPA + 0x8000, Len: 8, ID: 0, Flags: virtiotest.DescFWrite | virtiotest.DescFNext})
	p.d.WritePackedDesc(2, virtiotest.PackedDesc{Addr: memGPA + 0x8000, Len: 8, ID: 0, Flags: virtiotest.DescFWrite | virtiotest.DescFNext})
	p.d.WritePackedDesc(3, virtiotest.PackedDesc{Addr: memGPA + 0x8000, Len: 8, ID: 0, Flags: virtiotest.DescFWrite})
	p.d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: memGPA + 0x8000, Len: 8, ID: 0, Flags: virtiotest.DescFWrite})
	for _, i := range []uint16{0, 1, 2, 3} { // the avail flags of the first round, first descriptor last
		d := p.d.ReadPackedDesc(i)
		d.Flags |= virtiotest.DescFAvail
		p.d.WritePackedDesc(i, d)
	}
	require.Equal(t, uint16(0), mustPop(t, p.q).Head)
	require.Equal(t, uint16(0), mustPop(t, p.q).Head)
	require.NoError(t, p.q.Push(0, 8)) // 3 descriptors (the last pop's count)
	require.ErrorIs(t, p.q.Push(0, 8), virtio.ErrBadChain, "3 more descriptors than the 1 consumed and not used")
}

// TestPackedPushErrors: each check of a packed Push refuses with its own
// error and leaves the ring and the used position as they were.
func TestPackedPushErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   uint16
		pops int
		want string
	}{
		{"buffer id beyond the queue size", 8, 1, "push buffer id 8 out of range (queue size 8)"},
		{"never popped", 3, 1, "push of buffer id 3: never popped"},
		{"more pushes than pops", 0, 1, "push of buffer id 0: 1 ring descriptors, 0 consumed and not used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPackedPair(t, 8, packedFeatures)
			for range tc.pops {
				_, err := p.d.AddIn(8)
				require.NoError(t, err)
			}
			p.d.Publish()
			for range tc.pops {
				require.NoError(t, p.q.Push(mustPop(t, p.q).Head, 8))
			}
			before, used := append([]byte(nil), p.d.Mem()...), p.q.UsedIdx()
			err := p.q.Push(tc.id, 8)
			require.ErrorIs(t, err, virtio.ErrBadChain)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, used, p.q.UsedIdx())
			require.Equal(t, before, p.d.Mem())
		})
	}
}
