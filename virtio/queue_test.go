package virtio_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

func TestPopDirectAndIndirect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		out      [][]byte
		in       []uint32
		indirect bool
	}{
		{"out only", [][]byte{[]byte("hello")}, nil, false},
		{"in only", nil, []uint32{100}, false},
		{"out+in", [][]byte{[]byte("hdr"), []byte("payload")}, []uint32{10, 20}, false},
		{"indirect out", [][]byte{[]byte("a"), []byte("bc"), []byte("def")}, nil, true},
		{"indirect out+in", [][]byte{[]byte("req")}, []uint32{1, 2, 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 8, virtio.FVersion1|virtio.FIndirectDesc)
			head, err := p.d.AddChain(tc.out, tc.in, tc.indirect)
			require.NoError(t, err)
			var c virtio.Chain
			ok, err := p.q.Pop(&c)
			require.NoError(t, err)
			require.False(t, ok, "visible before Publish")
			p.d.Publish()
			ok, err = p.q.Pop(&c)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, head, c.Head)
			require.Equal(t, string(bytes.Join(tc.out, nil)), string(gather(c.Out)))
			require.Len(t, c.Out, len(tc.out))
			require.Len(t, c.In, len(tc.in))
			var inLen uint32
			for i, l := range tc.in {
				require.Len(t, c.In[i].Buf, int(l))
				require.Equal(t, int(l), cap(c.In[i].Buf), "segment capacity capped")
				inLen += l
			}
			require.Equal(t, uint32(len(bytes.Join(tc.out, nil))), c.OutLen)
			require.Equal(t, inLen, c.InLen)
			for _, s := range append(c.Out, c.In...) {
				// GPA matches the bytes: the segment is a view of guest memory.
				require.True(t, &s.Buf[0] == &p.buf[s.GPA-memGPA])
			}
			ok, err = p.q.Pop(&c)
			require.NoError(t, err)
			require.False(t, ok)
			require.Equal(t, uint16(1), p.q.LastAvail())
		})
	}
}

func TestPopSplitsAcrossRegions(t *testing.T) {
	bufA := make([]byte, 1<<16)
	d, err := virtiotest.NewDriver(bufA, memGPA, 8, virtiotest.DriverOptions{})
	require.NoError(t, err)
	bufB := make([]byte, 1<<16)
	bufC := make([]byte, 1<<16)
	endA := uint64(memGPA + len(bufA))
	mem, err := virtio.NewMemory([]virtio.Region{
		{GuestPhysAddr: endA + uint64(len(bufB)), Size: uint64(len(bufC)), UserAddr: 0x900000, Data: bufC},
		d.Region(),
		{GuestPhysAddr: endA, Size: uint64(len(bufB)), UserAddr: 0x800000, Data: bufB},
	})
	require.NoError(t, err)
	q, err := virtio.NewQueue(mem, d.Config(virtio.FVersion1|virtio.FIndirectDesc))
	require.NoError(t, err)

	copy(bufA[len(bufA)-3:], "abc")
	copy(bufB, "defg")
	// One buffer spanning all of B plus the ends of A and C: three segments.
	_, err = d.AddElems([]virtiotest.Elem{
		{GPA: endA - 3, Len: 3 + uint32(len(bufB)) + 2},
		{GPA: endA - 3, Len: 7, Write: true},
	}, false)
	require.NoError(t, err)
	// The same through an indirect table.
	_, err = d.AddElems([]virtiotest.Elem{{GPA: endA - 3, Len: 7}}, true)
	require.NoError(t, err)
	d.Publish()

	c := mustPop(t, q)
	require.Len(t, c.Out, 3)
	require.Equal(t, []uint64{endA - 3, endA, endA + uint64(len(bufB))}, []uint64{c.Out[0].GPA, c.Out[1].GPA, c.Out[2].GPA})
	require.Equal(t, []int{3, len(bufB), 2}, []int{len(c.Out[0].Buf), len(c.Out[1].Buf), len(c.Out[2].Buf)})
	require.True(t, &c.Out[2].Buf[0] == &bufC[0])
	require.Equal(t, uint32(3+len(bufB)+2), c.OutLen)
	require.Len(t, c.In, 2)
	require.Equal(t, "abcdefg", string(gather(c.In)))

	c = mustPop(t, q)
	require.Equal(t, "abcdefg", string(gather(c.Out)))
	require.Len(t, c.Out, 2)
}

func TestIndirectTableAcrossRegions(t *testing.T) {
	bufA := make([]byte, 1<<16)
	d, err := virtiotest.NewDriver(bufA, memGPA, 8, virtiotest.DriverOptions{})
	require.NoError(t, err)
	bufB := make([]byte, 4096)
	endA := uint64(memGPA + len(bufA))
	mem, err := virtio.NewMemory([]virtio.Region{d.Region(), {GuestPhysAddr: endA, Size: 4096, UserAddr: 1 << 40, Data: bufB}})
	require.NoError(t, err)
	q, err := virtio.NewQueue(mem, d.Config(virtio.FIndirectDesc))
	require.NoError(t, err)
	// A two-entry table: entry 0 at the end of A, entry 1 at the start of B.
	tbl := endA - 16
	require.NoError(t, d.WriteDescAt(tbl, virtiotest.Desc{Addr: memGPA + 0x8000, Len: 4, Flags: virtiotest.DescFNext, Next: 1}))
	// WriteDescAt only knows A; write entry 1 into B by hand.
	copy(bufB, []byte{0x04, 0x80, 0x10, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0}) // addr memGPA+0x8004, len 5, WRITE
	d.WriteDesc(0, virtiotest.Desc{Addr: tbl, Len: 32, Flags: virtiotest.DescFIndirect})
	d.AddHead(0)
	d.Publish()
	c := mustPop(t, q)
	require.Equal(t, uint32(4), c.OutLen)
	require.Equal(t, uint32(5), c.InLen)
	require.Equal(t, uint64(memGPA+0x8004), c.In[0].GPA)
}

func TestZeroLengthDescriptors(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	_, err := p.d.AddElems([]virtiotest.Elem{{GPA: memGPA + 0x8000, Len: 0}, {GPA: memGPA + 0x8000, Len: 4}, {GPA: 0, Len: 0, Write: true}}, false)
	require.NoError(t, err)
	p.d.Publish()
	c := mustPop(t, p.q)
	require.Len(t, c.Out, 1)
	require.Empty(t, c.In)
	require.Equal(t, uint32(4), c.OutLen)
}

// hostile is one misbehaving-driver scenario: setup writes the rings.
type hostile struct {
	name     string
	size     uint16
	features uint64
	setup    func(d *virtiotest.Driver)
	want     error // sentinel wrapped besides ErrBroken
}

func hostileCases() []hostile {
	in := func(i uint16) uint64 { return memGPA + 0x10000 + uint64(i)*0x100 }
	return []hostile{
		{"avail idx jumps past queue size", 8, 0, func(d *virtiotest.Driver) { d.SetAvailIdx(9) }, virtio.ErrBadRing},
		{"avail idx jumps by 2^15", 8, 0, func(d *virtiotest.Driver) { d.SetAvailIdx(0x8000) }, virtio.ErrBadRing},
		{"avail idx decremented", 8, 0, func(d *virtiotest.Driver) { d.SetAvailIdx(math.MaxUint16) }, virtio.ErrBadRing},
		{"head out of range", 8, 0, func(d *virtiotest.Driver) { d.AddHead(8); d.Publish() }, virtio.ErrBadChain},
		{"head 0xffff", 8, 0, func(d *virtiotest.Driver) { d.AddHead(0xffff); d.Publish() }, virtio.ErrBadChain},
		{"self loop", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext, Next: 0})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"two-descriptor loop", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(3, virtiotest.Desc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext, Next: 5})
			d.WriteDesc(5, virtiotest.Desc{Addr: in(1), Len: 1, Flags: virtiotest.DescFNext, Next: 3})
			d.AddHead(3)
			d.Publish()
		}, virtio.ErrBadChain},
		{"loop through every descriptor", 4, 0, func(d *virtiotest.Driver) {
			for i := range uint16(4) {
				d.WriteDesc(i, virtiotest.Desc{Addr: in(i), Len: 1, Flags: virtiotest.DescFNext, Next: (i + 1) % 4})
			}
			d.AddHead(2)
			d.Publish()
		}, virtio.ErrBadChain},
		{"next out of range", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext, Next: 8})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"address outside memory", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: 0x1000, Len: 1})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"address past end of memory", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: memGPA + 1<<20, Len: 1})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"length crosses end of memory", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: memGPA + 1<<20 - 4, Len: 5, Flags: virtiotest.DescFWrite})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"address+length wraps 2^64", 8, 0, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: math.MaxUint64 - 9, Len: memGPA + 20})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"readable after writable", 8, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 1, Write: true}, {GPA: in(1), Len: 1}}, false)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect not negotiated", 8, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 1}}, true)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect table length not a multiple of 16", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 24, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect table length 0", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 0, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect table longer than the queue", 4, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 16 * 5, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect with NEXT", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 16, Flags: virtiotest.DescFIndirect | virtiotest.DescFNext, Next: 1})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"nested indirect", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WriteDescAt(in(0), virtiotest.Desc{Addr: in(1), Len: 16, Flags: virtiotest.DescFIndirect})
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 16, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect table outside memory", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: 0x10, Len: 16, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"loop inside indirect table", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WriteDescAt(in(0), virtiotest.Desc{Addr: in(4), Len: 1, Flags: virtiotest.DescFNext, Next: 1})
			_ = d.WriteDescAt(in(0)+16, virtiotest.Desc{Addr: in(4), Len: 1, Flags: virtiotest.DescFNext, Next: 0})
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 32, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"next out of range inside indirect table", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WriteDescAt(in(0), virtiotest.Desc{Addr: in(4), Len: 1, Flags: virtiotest.DescFNext, Next: 2})
			_ = d.WriteDescAt(in(0)+16, virtiotest.Desc{Addr: in(4), Len: 1})
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 32, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBadChain},
		{"indirect buffer outside memory", 8, virtio.FIndirectDesc, func(d *virtiotest.Driver) {
			_ = d.WriteDescAt(in(0), virtiotest.Desc{Addr: math.MaxUint64, Len: 1})
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 16, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrOutOfBounds},
		{"good chain then bad one", 8, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddIn(10)
			d.AddHead(200)
			d.Publish()
		}, virtio.ErrBadChain},
	}
}

func TestHostileDriver(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.size, tc.features)
			snapshot := append([]byte(nil), p.buf...)
			tc.setup(p.d)
			// Sticky: every later call fails or does nothing.
			err := requireBreaks(t, p.q, tc.want)
			require.Equal(t, err, p.q.Err())
			require.ErrorIs(t, p.q.Push(0, 0), virtio.ErrBroken)
			before := p.d.UsedIdx()
			p.q.Publish()
			require.False(t, p.q.NeedNotify())
			require.True(t, p.q.EnableNotify())
			p.q.DisableNotify()
			require.Equal(t, before, p.d.UsedIdx(), "a broken queue publishes nothing")
			_ = snapshot
		})
	}
}

func TestNewQueueValidation(t *testing.T) {
	buf := make([]byte, 1<<16)
	mem, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: 0x1000, Size: 1 << 16, UserAddr: 0, Data: buf}})
	require.NoError(t, err)
	good := virtio.QueueConfig{Size: 256, DescGPA: 0x1000, AvailGPA: 0x2000, UsedGPA: 0x3000, Features: virtio.FEventIdx}
	_, err = virtio.NewQueue(mem, good)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		mod  func(c *virtio.QueueConfig)
		want error
	}{
		{"size 0", func(c *virtio.QueueConfig) { c.Size = 0 }, virtio.ErrBadRing},
		{"size 3", func(c *virtio.QueueConfig) { c.Size = 3 }, virtio.ErrBadRing},
		{"size 32768 does not fit", func(c *virtio.QueueConfig) { c.Size = 32768 }, virtio.ErrOutOfBounds},
		{"size not power of two", func(c *virtio.QueueConfig) { c.Size = 100 }, virtio.ErrBadRing},
		{"desc misaligned", func(c *virtio.QueueConfig) { c.DescGPA += 8 }, virtio.ErrBadRing},
		{"avail misaligned", func(c *virtio.QueueConfig) { c.AvailGPA++ }, virtio.ErrBadRing},
		{"used misaligned", func(c *virtio.QueueConfig) { c.UsedGPA += 2 }, virtio.ErrBadRing},
		{"desc outside memory", func(c *virtio.QueueConfig) { c.DescGPA = 0 }, virtio.ErrOutOfBounds},
		{"avail overlaps end of memory", func(c *virtio.QueueConfig) { c.AvailGPA = 0x11000 - 0x200 }, virtio.ErrOutOfBounds},
		{"used event word past end of memory", func(c *virtio.QueueConfig) { c.UsedGPA = 0x11000 - 4 - 8*256 }, virtio.ErrOutOfBounds},
		{"used at top of address space", func(c *virtio.QueueConfig) { c.UsedGPA = math.MaxUint64 - 3 }, virtio.ErrOutOfBounds},
		{"log address wraps", func(c *virtio.QueueConfig) { c.UsedLogGPA = math.MaxUint64 - 16 }, virtio.ErrBadRing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			_, err := virtio.NewQueue(mem, cfg)
			require.ErrorIs(t, err, tc.want)
		})
	}
	t.Run("no event idx needs no event word", func(t *testing.T) {
		cfg := good
		cfg.Features = 0
		cfg.UsedGPA = 0x11000 - 4 - 8*256
		_, err := virtio.NewQueue(mem, cfg)
		require.NoError(t, err)
	})
	t.Run("nil memory", func(t *testing.T) {
		_, err := virtio.NewQueue(nil, good)
		require.Error(t, err)
	})
	t.Run("host address misaligned", func(t *testing.T) {
		// Guest addresses aligned, but the mapping starts at an odd host
		// address: the ring index helpers would fault on arm64.
		odd := make([]byte, 1<<16+1)[1:]
		m, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: 0x1000, Size: 1 << 16, Data: odd}})
		require.NoError(t, err)
		_, err = virtio.NewQueue(m, good)
		require.ErrorIs(t, err, virtio.ErrBadRing)
	})
}

func TestPushPublish(t *testing.T) {
	p := newPair(t, 4, virtio.FVersion1)
	var heads []uint16
	for i := range 4 {
		h, err := p.d.AddIn(uint32(10 + i))
		require.NoError(t, err)
		heads = append(heads, h)
	}
	_, err := p.d.AddIn(1)
	require.ErrorIs(t, err, virtiotest.ErrFull)
	p.d.Publish()
	var chains [4]virtio.Chain
	for i := range chains {
		ok, err := p.q.Pop(&chains[i])
		require.NoError(t, err)
		require.True(t, ok)
	}
	// Complete out of order.
	for _, i := range []int{2, 0, 3, 1} {
		require.NoError(t, p.q.Push(chains[i].Head, uint32(i)))
	}
	require.Equal(t, uint16(0), p.d.UsedIdx(), "nothing visible before Publish")
	_, ok := p.d.Used()
	require.False(t, ok)
	p.q.Publish()
	require.Equal(t, uint16(4), p.d.UsedIdx())
	for _, i := range []int{2, 0, 3, 1} {
		e, ok := p.d.Used()
		require.True(t, ok)
		require.Equal(t, uint32(heads[i]), e.ID)
		require.Equal(t, uint32(i), e.Len)
	}
	require.Equal(t, 4, p.d.FreeDescs())
	require.ErrorIs(t, p.q.Push(4, 0), virtio.ErrBadChain)
	require.NoError(t, p.q.Err(), "a device mistake does not break the queue")
}

func TestUnpop(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	for i := range 3 {
		_, err := p.d.AddOut([]byte{byte(i)})
		require.NoError(t, err)
	}
	p.d.Publish()
	var c virtio.Chain
	for range 3 {
		mustPop(t, p.q)
	}
	p.q.Unpop(2)
	require.Equal(t, uint16(1), p.q.LastAvail())
	for i := 1; i < 3; i++ {
		ok, err := p.q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []byte{byte(i)}, gather(c.Out))
	}
	ok, err := p.q.Pop(&c)
	require.NoError(t, err)
	require.False(t, ok)
}

func TestIndexWrap(t *testing.T) {
	// Run the 16-bit indices through their wrap-around (virtio 1.2 §2.7.6:
	// idx "wraps naturally at 65536").
	p := newPair(t, 4, virtio.FVersion1|virtio.FEventIdx)
	var c virtio.Chain
	for i := range 70000 {
		_, err := p.d.AddOut([]byte{byte(i)})
		require.NoError(t, err)
		p.d.Publish()
		ok, err := p.q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, byte(i), c.Out[0].Buf[0])
		require.NoError(t, p.q.Push(c.Head, 0))
		p.q.Publish()
		_, ok = p.d.Used()
		require.True(t, ok)
	}
	require.Equal(t, uint16(70000%65536), p.q.LastAvail())
}

func TestResumeFromBase(t *testing.T) {
	// vhost-user GET_VRING_BASE / SET_VRING_BASE: a new Queue continues
	// where the old one stopped, and reads used->idx from memory.
	p := newPair(t, 8, virtio.FVersion1)
	for i := range 3 {
		_, err := p.d.AddOut([]byte{byte(i)})
		require.NoError(t, err)
	}
	p.d.Publish()
	for range 2 {
		c := mustPop(t, p.q)
		require.NoError(t, p.q.Push(c.Head, 0))
	}
	p.q.Publish()
	cfg := p.d.Config(virtio.FVersion1)
	cfg.LastAvail = p.q.LastAvail()
	q2, err := virtio.NewQueue(p.mem, cfg)
	require.NoError(t, err)
	require.Equal(t, uint16(2), q2.UsedIdx())
	c := mustPop(t, q2)
	require.Equal(t, []byte{2}, gather(c.Out))
}

func TestWriteIn(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	_, err := p.d.AddChain([][]byte{[]byte("ro")}, []uint32{3, 4, 5}, false)
	require.NoError(t, err)
	p.d.Publish()
	c := mustPop(t, p.q)
	require.Equal(t, 5, p.q.WriteIn(c, 2, []byte("abcde")))
	require.Equal(t, 5, p.q.WriteIn(c, 7, []byte("vwxyz012")), "short at the end")
	require.Equal(t, 0, p.q.WriteIn(c, 12, []byte("x")))
	require.Equal(t, 0, p.q.WriteIn(c, 100, []byte("x")))
	require.Equal(t, "\x00\x00abcdevwxyz", string(gather(c.In)))
	require.Equal(t, "ro", string(gather(c.Out)), "never writes readable buffers")
	dst := make([]byte, 4)
	require.Equal(t, 2, c.ReadOut(0, dst[:]))
	require.Equal(t, "ro\x00\x00", string(dst))
	require.Equal(t, 1, c.ReadOut(1, dst))
	require.Equal(t, 0, c.ReadOut(2, dst))
}
