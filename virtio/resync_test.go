package virtio_test

import (
	"encoding/binary"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

// TestSplitBaseResync: a split ring started with a base (SET_VRING_BASE)
// out of reach of its avail index starts at its used index when that one
// is in reach (DPDK's virtio_user reconnecting as the server sends base 0
// with its rings running); a base in reach is kept whatever the used
// index; with neither in reach the base is kept and the first Pop breaks
// the queue, as before.
func TestSplitBaseResync(t *testing.T) {
	const size = 8
	tests := []struct {
		name    string
		base    uint16
		usedIdx int // -1: as the ring left it (20)
		resync  bool
		first   uint16 // the avail index the first Pop takes; 0 with broken
		broken  bool
	}{
		{name: "base 0 after 20 chains", base: 0, usedIdx: -1, resync: true, first: 20},
		{name: "base in reach, at used", base: 20, usedIdx: -1, first: 20},
		{name: "base in reach, ahead of used", base: 21, usedIdx: -1, first: 21},
		{name: "neither in reach", base: 0, usedIdx: 1000, broken: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, size, virtio.FVersion1)
			frame := func(i int) []byte { return []byte{byte(i), byte(i >> 8), 0xa5} }
			// 20 chains sent and returned, then 3 more sent: the previous
			// backend took the first of them and never returned it.
			for i := 0; i < 23; i++ {
				_, err := p.d.AddOut(frame(i))
				require.NoError(t, err)
				p.d.Publish()
				if i < 21 {
					c := mustPop(t, p.q)
					if i < 20 {
						require.NoError(t, p.q.Push(c.Head, 0))
						p.q.Publish()
						_, ok := p.d.Used()
						require.True(t, ok)
					}
				}
			}
			require.EqualValues(t, 23, p.d.AvailIdx())
			require.EqualValues(t, 20, p.d.UsedIdx())
			if tc.usedIdx >= 0 {
				off := p.d.UsedGPA() - memGPA + 2
				binary.LittleEndian.PutUint16(p.buf[off:], uint16(tc.usedIdx))
			}
			cfg := p.d.Config(virtio.FVersion1)
			cfg.LastAvail = tc.base
			q, err := virtio.NewQueue(p.mem, cfg)
			require.NoError(t, err)
			base, ok := q.Resynced()
			require.Equal(t, tc.resync, ok)
			if tc.resync {
				require.Equal(t, tc.base, base)
			}
			var c virtio.Chain
			got, err := q.Pop(&c)
			if tc.broken {
				require.ErrorIs(t, err, virtio.ErrBroken)
				return
			}
			require.NoError(t, err)
			require.True(t, got)
			require.Equal(t, frame(int(tc.first)), gather(c.Out))
			require.Equal(t, tc.first+1, q.LastAvail())
		})
	}
}
