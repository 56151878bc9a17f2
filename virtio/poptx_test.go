package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// TestPopOneReadable: Pop's fast path for a chain of one device-readable
// descriptor (split rings) returns what the slow path (walk) returns for
// the same descriptor, falls back to it for every other chain, and a
// reused Chain keeps nothing of the previous one.
func TestPopOneReadable(t *testing.T) {
	buf := uint64(memGPA + 0x80000)
	for _, tc := range []struct {
		name     string
		features uint64
		desc     []virtiotest.Desc // descriptors 0.., head 0
		broken   bool
	}{
		{"one readable", 0, []virtiotest.Desc{{Addr: buf, Len: 76}}, false},
		{"one readable, event idx", virtio.FEventIdx, []virtiotest.Desc{{Addr: buf, Len: 76}}, false},
		{"zero length", 0, []virtiotest.Desc{{Addr: buf, Len: 0}}, false},
		{"unknown flag bit", 0, []virtiotest.Desc{{Addr: buf, Len: 76, Flags: 8}}, false},
		{"two readable", 0, []virtiotest.Desc{{Addr: buf, Len: 12, Flags: virtiotest.DescFNext, Next: 1}, {Addr: buf + 12, Len: 64}}, false},
		{"readable then writable", 0, []virtiotest.Desc{{Addr: buf, Len: 12, Flags: virtiotest.DescFNext, Next: 1}, {Addr: buf + 12, Len: 64, Flags: virtiotest.DescFWrite}}, false},
		{"one writable", 0, []virtiotest.Desc{{Addr: buf, Len: 76, Flags: virtiotest.DescFWrite}}, false},
		{"indirect", virtio.FIndirectDesc, []virtiotest.Desc{{Addr: buf, Len: 16, Flags: virtiotest.DescFIndirect}}, false},
		{"indirect not negotiated", 0, []virtiotest.Desc{{Addr: buf, Len: 16, Flags: virtiotest.DescFIndirect}}, true},
		{"outside memory", 0, []virtiotest.Desc{{Addr: memGPA + 1<<20 - 8, Len: 76}}, true},
		{"address wraps", 0, []virtiotest.Desc{{Addr: ^uint64(0) - 4, Len: 76}}, true},
		{"next out of range", 0, []virtiotest.Desc{{Addr: buf, Len: 12, Flags: virtiotest.DescFNext, Next: 9}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 8, tc.features)
			// The indirect table (for the indirect cases): one readable
			// descriptor after the buffer.
			require.NoError(t, p.d.WriteDescAt(buf, virtiotest.Desc{Addr: buf + 0x100, Len: 76}))
			// A chain popped first, with two segments, so that the
			// Chain reused below has stale Out and In.
			h, err := p.d.AddChain([][]byte{make([]byte, 10), make([]byte, 20)}, []uint32{30}, false)
			require.NoError(t, err)
			p.d.Publish()
			var c virtio.Chain
			ok, err := p.q.Pop(&c)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, h, c.Head)
			require.NoError(t, p.q.Push(c.Head, 0))
			for i, d := range tc.desc {
				p.d.WriteDesc(uint16(i), d)
			}
			p.d.AddHead(0)
			p.d.Publish()

			var want virtio.Chain
			werr := p.q.Walk(&want, 0)
			ok, err = p.q.Pop(&c)
			if tc.broken {
				require.Error(t, werr)
				require.ErrorIs(t, err, virtio.ErrBroken)
				require.Contains(t, err.Error(), werr.Error())
				require.False(t, ok)
				require.Equal(t, uint16(1), p.q.LastAvail())
				return
			}
			require.NoError(t, werr)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, want.Head, c.Head)
			require.Equal(t, want.OutLen, c.OutLen)
			require.Equal(t, want.InLen, c.InLen)
			require.Equal(t, len(want.Out), len(c.Out))
			require.Equal(t, len(want.In), len(c.In))
			for i := range want.Out {
				require.Equal(t, want.Out[i].GPA, c.Out[i].GPA)
				require.Equal(t, len(want.Out[i].Buf), len(c.Out[i].Buf))
				require.Equal(t, len(want.Out[i].Buf), cap(c.Out[i].Buf), "capacity clipped to the buffer")
				require.Same(t, &want.Out[i].Buf[0], &c.Out[i].Buf[0])
			}
			require.Equal(t, uint16(2), p.q.LastAvail())
			if tc.features&virtio.FEventIdx != 0 {
				require.Equal(t, uint16(2), p.d.AvailEvent())
			}
		})
	}
}
