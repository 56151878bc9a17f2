package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// TestPrefetch checks that Prefetch only reads: whatever the ring holds
// (partial batches, a wrapped ring, heads out of range, an avail index too
// far ahead, a broken queue, a packed ring), the queue's state and what the
// following Pops return are those without it.
func TestPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		packed   bool
		k        int
		setup    func(t *testing.T, p *pair)
	}{
		{"nothing available", virtio.FVersion1, false, 64, func(*testing.T, *pair) {}},
		{"fewer than k", virtio.FVersion1, false, 64, addIn(3)},
		{"more than k", virtio.FVersion1, false, 2, addIn(6)},
		{"k zero", virtio.FVersion1, false, 0, addIn(2)},
		{"k negative", virtio.FVersion1, false, -1, addIn(2)},
		{"k beyond any queue", virtio.FVersion1, false, 1 << 20, addIn(8)},
		{"ring wrapped", virtio.FVersion1 | virtio.FEventIdx, false, 8, func(t *testing.T, p *pair) {
			// Move the ring's indices past the end once.
			for range 3 {
				addIn(6)(t, p)
				for range 6 {
					c := mustPop(t, p.q)
					require.NoError(t, p.q.Push(c.Head, 0))
				}
				p.q.Publish()
				for range 6 {
					_, ok := p.d.Used()
					require.True(t, ok)
				}
			}
			addIn(7)(t, p)
		}},
		{"head out of range", virtio.FVersion1, false, 8, func(t *testing.T, p *pair) {
			addIn(1)(t, p)
			p.d.AddHead(200)
			p.d.Publish()
		}},
		{"avail idx too far", virtio.FVersion1, false, 8, func(t *testing.T, p *pair) {
			p.d.SetAvailIdx(100)
		}},
		{"broken queue", virtio.FVersion1, false, 8, func(t *testing.T, p *pair) {
			p.d.AddHead(300)
			p.d.Publish()
			_, err := p.q.Pop(&virtio.Chain{})
			require.ErrorIs(t, err, virtio.ErrBroken)
			addIn(2)(t, p)
		}},
		{"packed", virtio.FVersion1 | virtio.FRingPacked, true, 8, addIn(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The same ring twice, one queue with Prefetch, one without.
			var pops [2][]string
			var state [2][3]uint16
			for i, pre := range []bool{false, true} {
				p := newPair(t, 8, tc.features, virtiotest.DriverOptions{SlotSize: 256, Packed: tc.packed})
				tc.setup(t, p)
				if pre {
					p.q.Prefetch(tc.k)
					p.q.Prefetch(tc.k)
				}
				state[i] = [3]uint16{p.q.LastAvail(), p.q.UsedIdx(), p.d.UsedIdx()}
				for range 10 {
					var c virtio.Chain
					ok, err := p.q.Pop(&c)
					pops[i] = append(pops[i], describe(c, ok, err))
				}
			}
			require.Equal(t, state[0], state[1])
			require.Equal(t, pops[0], pops[1])
		})
	}
}

// addIn makes a setup that adds n receive chains of 64 bytes.
func addIn(n int) func(*testing.T, *pair) {
	return func(t *testing.T, p *pair) {
		for range n {
			_, err := p.d.AddIn(64)
			require.NoError(t, err)
		}
		p.d.Publish()
	}
}

// describe is what a Pop returned, as text.
func describe(c virtio.Chain, ok bool, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if !ok {
		return "none"
	}
	return string(rune('A'+c.Head)) + string(rune('0'+len(c.In)))
}

func TestAllocsPrefetch(t *testing.T) {
	p := rawPair(t, 256, virtio.FVersion1, 64, true)
	for i := range uint16(256) {
		p.d.AddHead(i)
	}
	p.d.Publish()
	allocs := testing.AllocsPerRun(500, func() { p.q.Prefetch(64) })
	require.Zero(t, allocs)
}
