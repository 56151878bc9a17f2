package virtio_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// fuzzPackedConfig derives a packed queue configuration from the first
// bytes: size 1..16 (any value: packed sizes need not be powers of two),
// features, and the device's starting avail position (any wrap counter,
// any index: out of range ones are refused by NewQueue). The ring is laid
// out as virtiotest.Driver lays out a packed ring at fzA.
func fuzzPackedConfig(ctl []byte) virtio.QueueConfig {
	var c [4]byte
	copy(c[:], ctl)
	features := virtio.FVersion1 | virtio.FRingPacked
	if c[1]&1 != 0 {
		features |= virtio.FIndirectDesc
	}
	if c[1]&2 != 0 {
		features |= virtio.FEventIdx
	}
	if c[1]&4 != 0 {
		features |= virtio.NetFMrgRxbuf
	}
	size := uint64(c[0]%16) + 1
	pos := binary.LittleEndian.Uint16(c[2:])
	return virtio.QueueConfig{
		Size:      uint16(size),
		DescGPA:   fzA,
		AvailGPA:  fzA + 16*size,
		UsedGPA:   fzA + 16*size + 4,
		Features:  features,
		LastAvail: pos,
		LastUsed:  pos,
	}
}

// fuzzPackedSeed lays out buffers with the packed driver mock on region A.
func fuzzPackedSeed(t testing.TB, size uint16, ctl byte, build func(d *virtiotest.Driver)) []byte {
	mem := make([]byte, fzASize+fzBSize)
	d, err := virtiotest.NewDriver(mem[:fzASize], fzA, size, virtiotest.DriverOptions{Packed: true})
	require.NoError(t, err)
	cfg := d.Config(virtio.FRingPacked)
	want := fuzzPackedConfig([]byte{byte(size - 1)})
	require.Equal(t, want.AvailGPA, cfg.AvailGPA)
	require.Equal(t, want.UsedGPA, cfg.UsedGPA)
	build(d)
	d.Publish()
	return append([]byte{byte(size - 1), ctl, 0x00, 0x80}, mem[:0x600]...)
}

// FuzzPackedChainWalk plays a hostile driver on a packed ring: any
// descriptor ring contents (wrap bits, buffer ids, NEXT loops, indirect
// tables anywhere, lengths), any starting position. The device must pop
// only views of guest memory, break the queue with a sticky error wrapping
// ErrBroken on bad input, and never panic.
func FuzzPackedChainWalk(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	seeds := []struct {
		size  uint16
		ctl   byte
		build func(d *virtiotest.Driver)
	}{
		{4, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 16}, {GPA: in(16), Len: 32, Write: true}}, false)
		}},
		{5, 3, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 16}}, false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: fzB - 8, Len: 16}, {GPA: fzC, Len: 100, Write: true}}, false)
			_ = d.WritePackedDescAt(in(0x100), virtiotest.PackedDesc{Addr: in(0), Len: 8})
			_ = d.WritePackedDescAt(in(0x110), virtiotest.PackedDesc{Addr: fzB + 8, Len: 8, Flags: virtiotest.DescFWrite})
			d.WritePackedDesc(3, virtiotest.PackedDesc{Addr: in(0x100), Len: 32, ID: 3, Flags: virtiotest.DescFIndirect | virtiotest.DescFAvail})
		}},
		{16, 5, func(d *virtiotest.Driver) {
			for i := range 5 {
				_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * 64), Len: 64, Write: true}}, false)
			}
		}},
		{3, 1, func(d *virtiotest.Driver) {
			for i := range uint16(3) {
				d.WritePackedDesc(i, virtiotest.PackedDesc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext | virtiotest.DescFAvail})
			}
		}},
		{7, 2, func(d *virtiotest.Driver) {
			// Wrap: fill and return a round, then add more.
			for range 7 {
				_, _ = d.AddIn(64)
			}
		}},
	}
	for _, s := range seeds {
		f.Add(fuzzPackedSeed(f, s.size, s.ctl, s.build))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		fuzzPackedChainWalk(t, data)
	})
}

func fuzzPackedChainWalk(t *testing.T, data []byte) {
	cfg := fuzzPackedConfig(data[:4])
	regions, mem := fuzzMemory(data[4:])
	q, err := virtio.NewQueue(mem, cfg)
	if uint32(cfg.LastAvail&0x7fff) >= uint32(cfg.Size) {
		require.ErrorIs(t, err, virtio.ErrBadRing)
		return
	}
	require.NoError(t, err)
	var c virtio.Chain
	var broken error
	var w virtio.Chain
	for i := range 2*int(cfg.Size) + 2 {
		// The general walk on the same buffer first: Pop's
		// one-descriptor path must read it the same.
		okW, errW := q.WalkPacked(&w)
		ok, err := q.Pop(&c)
		switch {
		case ok:
			require.True(t, okW)
			require.NoError(t, errW)
			requireSameChain(t, &w, &c)
		case err != nil:
			require.True(t, errW != nil || w.Head >= cfg.Size, "Pop failed, the walk did not: %v", err)
		default:
			require.False(t, okW)
		}
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrBroken)
			require.True(t, errors.Is(err, virtio.ErrBadRing) || errors.Is(err, virtio.ErrBadChain) || errors.Is(err, virtio.ErrOutOfBounds))
			broken = err
			break
		}
		if !ok {
			break
		}
		require.Less(t, c.Head, cfg.Size)
		require.Equal(t, uint64(c.OutLen), checkSegments(t, regions, c.Out))
		require.Equal(t, uint64(c.InLen), checkSegments(t, regions, c.In))
		if i%3 == 1 {
			// Give it back and take it again: the same buffer.
			head := c.Head
			q.Unpop(1)
			ok, err := q.Pop(&c)
			require.True(t, ok)
			require.NoError(t, err)
			require.Equal(t, head, c.Head)
		}
		q.WriteIn(&c, 0, []byte("fuzz"))
		require.NoError(t, q.Push(c.Head, c.InLen))
		q.Publish()
		q.NeedNotify()
		q.EnableNotify()
		q.DisableNotify()
	}
	if broken != nil {
		ok, err := q.Pop(&c)
		require.False(t, ok)
		require.Equal(t, broken, err)
	}

	// The receive path on the same guest state, with a Mark/Rewind.
	_, mem = fuzzMemory(data[4:])
	q, err = virtio.NewQueue(mem, cfg)
	require.NoError(t, err)
	q.SetLog(virtio.NewDirtyLog(make([]byte, 8)))
	rx := virtio.NewNetRX(q)
	payload := [][]byte{make([]byte, 60), make([]byte, 1000)}
	for i := range int(cfg.Size) + 1 {
		m := q.Mark()
		ok, err := rx.Write(virtio.NetHdr{}, payload)
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrBroken)
			break
		}
		if !ok {
			break
		}
		if i == 0 {
			q.Rewind(m)
			require.Equal(t, m, q.Mark())
		}
		q.Publish()
	}
}

// FuzzPackedWritePlain plays a hostile driver on a packed receive queue
// (any ring contents, positions, features, frame sizes): WritePlain, fast
// path first, and the general path must leave the same guest memory,
// positions, bookkeeping and dirty log at every step, Rewinds included,
// and never panic.
func FuzzPackedWritePlain(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	for _, s := range []struct {
		size uint16
		ctl  byte
		lens uint64
		elem func(i int) []virtiotest.Elem
	}{
		{4, 0, 0x0a, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x80), Len: 0x80, Write: true}}
		}},
		{5, 6, 0x3020, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x40), Len: 0x40, Write: true}}
		}},
		{3, 3, 0x01, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x80), Len: 8, Write: true}, {GPA: in(uint64(i)*0x80 + 8), Len: 0x78, Write: true}}
		}},
		{7, 8 | 16 | 32, 0x0202, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x20), Len: 0x20, Write: true}}
		}},
	} {
		data := packedRxImage(f, s.size, s.ctl, func(d *virtiotest.Driver) {
			for i := range int(s.size) {
				_, _ = d.AddElems(s.elem(i), s.ctl&1 != 0 && i == 1)
			}
		})
		f.Add(data[:4+0x600], s.lens)
	}
	f.Fuzz(func(t *testing.T, data []byte, lens uint64) {
		if len(data) < 4 {
			return
		}
		comparePackedWritePlain(t, data, lens)
	})
}
