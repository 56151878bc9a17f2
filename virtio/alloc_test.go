package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// rawPair is a pair whose descriptors are written once (descriptor i is a
// chain of one buffer of n bytes in slot i), so the driver side of a loop
// is just AddHead+Publish.
func rawPair(t testing.TB, size uint16, features uint64, n uint32, write bool) *pair {
	p := newPair(t, size, features, virtiotest.DriverOptions{SlotSize: 2048})
	for i := range size {
		gpa, _ := p.d.Slot(int(i))
		var flags uint16
		if write {
			flags = virtiotest.DescFWrite
		}
		p.d.WriteDesc(i, virtiotest.Desc{Addr: gpa, Len: n, Flags: flags})
	}
	return p
}

func TestAllocsPop(t *testing.T) {
	p := rawPair(t, 256, virtio.FVersion1|virtio.FEventIdx, 64, false)
	for i := range uint16(256) {
		p.d.AddHead(i)
	}
	p.d.Publish()
	var c virtio.Chain
	allocs := testing.AllocsPerRun(200, func() {
		if ok, err := p.q.Pop(&c); !ok || err != nil {
			t.Fatal("pop", ok, err)
		}
	})
	require.Zero(t, allocs)
}

func TestAllocsPushPublish(t *testing.T) {
	p := rawPair(t, 256, virtio.FVersion1|virtio.FEventIdx, 64, false)
	p.q.SetLog(virtio.NewDirtyLog(make([]byte, 4096)))
	allocs := testing.AllocsPerRun(1000, func() {
		if err := p.q.Push(1, 64); err != nil {
			t.Fatal(err)
		}
		p.q.Publish()
		p.q.NeedNotify()
	})
	require.Zero(t, allocs)
}

func TestAllocsPopPushCycle(t *testing.T) {
	for _, f := range []uint64{virtio.FVersion1, virtio.FVersion1 | virtio.FEventIdx} {
		p := rawPair(t, 256, f, 1518, false)
		p.q.SetLog(virtio.NewDirtyLog(make([]byte, 4096)))
		var c virtio.Chain
		i := uint16(0)
		allocs := testing.AllocsPerRun(1000, func() {
			p.d.AddHead(i % 256)
			i++
			p.d.Publish()
			if ok, err := p.q.Pop(&c); !ok || err != nil {
				t.Fatal("pop", ok, err)
			}
			_ = p.q.Push(c.Head, 0)
			p.q.Publish()
			p.q.NeedNotify()
			p.q.EnableNotify()
			p.q.DisableNotify()
		})
		require.Zero(t, allocs)
	}
}

func TestAllocsNetRXWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		buf      uint32
		per      int // chains one frame takes
	}{
		{"single", virtio.FVersion1, 2048, 1},
		{"mergeable", virtio.FVersion1 | virtio.NetFMrgRxbuf, 2048, 1},
		{"mergeable 3 chains", virtio.FVersion1 | virtio.NetFMrgRxbuf, 600, 3},
	} {
		for _, plain := range []bool{false, true} {
			name := tc.name
			if plain {
				name += " plain"
			}
			t.Run(name, func(t *testing.T) {
				p := rawPair(t, 256, tc.features|virtio.FEventIdx, tc.buf, true)
				p.q.SetLog(virtio.NewDirtyLog(make([]byte, 4096)))
				rx := virtio.NewNetRX(p.q)
				payload := [][]byte{frame(14), frame(1500)}
				i := uint16(0)
				allocs := testing.AllocsPerRun(500, func() {
					for range tc.per {
						p.d.AddHead(i % 256)
						i++
					}
					p.d.Publish()
					ok, err := writeZeroHdr(rx, plain, payload)
					if !ok || err != nil {
						t.Fatal("write", ok, err)
					}
					p.q.Publish()
					if p.q.LastAvail() != i {
						t.Fatal("frame took", p.q.LastAvail(), "want", i)
					}
				})
				require.Zero(t, allocs)
			})
		}
	}
}

func TestAllocsDirtyLogMark(t *testing.T) {
	l := virtio.NewDirtyLog(make([]byte, 4096))
	allocs := testing.AllocsPerRun(1000, func() {
		l.Mark(0x12345, 1518)
		l.Mark(0, 1<<30)
	})
	require.Zero(t, allocs)
}
