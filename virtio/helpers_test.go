package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// memGPA is where the test driver's memory sits in guest physical space.
const memGPA = 0x100000

// pair is a driver mock and the device queue on the same memory.
type pair struct {
	d   *virtiotest.Driver
	mem *virtio.Memory
	q   *virtio.Queue
	buf []byte
}

// newPair builds a driver of the given size on 1 MiB of memory and the
// device queue for it.
func newPair(t testing.TB, size uint16, features uint64, opt ...virtiotest.DriverOptions) *pair {
	t.Helper()
	var o virtiotest.DriverOptions
	if len(opt) > 0 {
		o = opt[0]
	}
	buf := make([]byte, 1<<20)
	d, err := virtiotest.NewDriver(buf, memGPA, size, o)
	require.NoError(t, err)
	mem, err := virtio.NewMemory([]virtio.Region{d.Region()})
	require.NoError(t, err)
	q, err := virtio.NewQueue(mem, d.Config(features))
	require.NoError(t, err)
	return &pair{d: d, mem: mem, q: q, buf: buf}
}

// gather concatenates the bytes of segs.
func gather(segs []virtio.Segment) []byte {
	var b []byte
	for _, s := range segs {
		b = append(b, s.Buf...)
	}
	return b
}

// mustPop pops one chain and fails the test if there is none.
func mustPop(t testing.TB, q *virtio.Queue) *virtio.Chain {
	t.Helper()
	var c virtio.Chain
	ok, err := q.Pop(&c)
	require.NoError(t, err)
	require.True(t, ok, "no chain available")
	return &c
}
