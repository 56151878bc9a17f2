package virtiotest_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

func TestLayout(t *testing.T) {
	mem := make([]byte, 1<<16)
	d, err := virtiotest.NewDriver(mem, 0x40000, 256, virtiotest.DriverOptions{})
	require.NoError(t, err)
	cfg := d.Config(virtio.FEventIdx)
	require.Equal(t, virtio.QueueConfig{Size: 256, DescGPA: 0x40000, AvailGPA: 0x41000, UsedGPA: 0x41208, Features: virtio.FEventIdx}, cfg)
	legacy, err := virtiotest.NewDriver(mem, 0x40000, 256, virtiotest.DriverOptions{UsedAlign: 4096})
	require.NoError(t, err)
	require.Equal(t, uint64(0x42000), legacy.UsedGPA())
	n, size := d.Slots()
	require.Equal(t, uint32(2048), size)
	require.Equal(t, (0x50000-0x41a40)/2048, n) // slots from alignUp(used end, 64)

	for _, bad := range []struct {
		mem  []byte
		gpa  uint64
		size uint16
	}{
		{mem, 0x40000, 0},
		{mem, 0x40000, 3},
		{mem, 0x40008, 8},
		{mem[:100], 0, 8},
		{mem[1:], 0, 8},
		{mem, ^uint64(0) - 100, 8},
	} {
		_, err := virtiotest.NewDriver(bad.mem, bad.gpa, bad.size, virtiotest.DriverOptions{})
		require.Error(t, err)
	}
}

func TestAddUsedRecycles(t *testing.T) {
	mem := make([]byte, 1<<16)
	d, err := virtiotest.NewDriver(mem, 0, 4, virtiotest.DriverOptions{SlotSize: 256})
	require.NoError(t, err)
	m, err := virtio.NewMemory([]virtio.Region{d.Region()})
	require.NoError(t, err)
	q, err := virtio.NewQueue(m, d.Config(virtio.FIndirectDesc))
	require.NoError(t, err)
	var c virtio.Chain
	for round := range 100 {
		// Two direct chains of two descriptors fill the 4-entry table.
		_, err := d.AddChain([][]byte{{byte(round)}}, []uint32{8}, false)
		require.NoError(t, err)
		_, err = d.AddChain([][]byte{{1}}, []uint32{8}, false)
		require.NoError(t, err)
		_, err = d.AddIn(1)
		require.ErrorIs(t, err, virtiotest.ErrFull)
		require.True(t, d.Publish())
		for range 2 {
			ok, err := q.Pop(&c)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, 8, q.WriteIn(&c, 0, []byte("written!")))
			require.NoError(t, q.Push(c.Head, 8))
		}
		q.Publish()
		for range 2 {
			e, ok := d.Used()
			require.True(t, ok)
			buf := make([]byte, 8)
			require.Equal(t, 8, d.ReadIn(uint16(e.ID), buf))
			require.Equal(t, "written!", string(buf))
		}
		require.Equal(t, 4, d.FreeDescs())
	}
	// Indirect: one descriptor per chain whatever its length.
	for range 4 {
		_, err := d.AddChain([][]byte{{1}, {2}, {3}}, []uint32{1, 2}, true)
		require.NoError(t, err)
	}
	require.Equal(t, 0, d.FreeDescs())
}
