package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// roundTrip makes the driver add and publish n chains, the device pop and
// push them and publish, and returns NeedNotify.
func roundTrip(t *testing.T, p *pair, n int) bool {
	t.Helper()
	for range n {
		_, err := p.d.AddOut([]byte("x"))
		require.NoError(t, err)
	}
	p.d.Publish()
	for range n {
		c := mustPop(t, p.q)
		require.NoError(t, p.q.Push(c.Head, 0))
	}
	p.q.Publish()
	return p.q.NeedNotify()
}

func TestNeedNotifyFlags(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	require.False(t, p.q.NeedNotify(), "nothing published")
	require.True(t, roundTrip(t, p, 1))
	require.False(t, p.q.NeedNotify(), "nothing new since the last check")
	p.d.DisableInterrupts()
	require.False(t, roundTrip(t, p, 2), "VIRTQ_AVAIL_F_NO_INTERRUPT")
	for {
		if _, ok := p.d.Used(); !ok {
			break
		}
	}
	require.False(t, p.d.EnableInterrupts())
	require.True(t, roundTrip(t, p, 1))
}

func TestNeedNotifyEventIdx(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1|virtio.FEventIdx)
	require.True(t, roundTrip(t, p, 1), "first notification always goes out")
	// used idx is 1. The driver wants a call once used->idx passes 4.
	p.d.SetUsedEvent(4)
	require.False(t, roundTrip(t, p, 2), "idx 1->3 does not cross used_event 4")
	require.True(t, roundTrip(t, p, 2), "idx 3->5 crosses 4")
	require.False(t, roundTrip(t, p, 1), "5->6: event 4 already passed")
	// used_event far behind: no call until the index wraps around to it.
	p.d.SetUsedEvent(5)
	require.False(t, roundTrip(t, p, 1))
	// The driver reads what it got; Used moves used_event like Linux.
	for {
		if _, ok := p.d.Used(); !ok {
			break
		}
	}
	require.Equal(t, uint16(7), p.d.UsedEvent())
	require.True(t, roundTrip(t, p, 1), "7->8 crosses 7")
	p.d.DisableInterrupts()
	require.False(t, roundTrip(t, p, 3))
}

func TestNotifyOnEmpty(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1|virtio.FEventIdx|virtio.FNotifyOnEmpty)
	require.True(t, roundTrip(t, p, 1))
	p.d.SetUsedEvent(100)
	require.True(t, roundTrip(t, p, 1), "ring ran empty: notify regardless of used_event")
	_, err := p.d.AddOut([]byte("x"))
	require.NoError(t, err)
	_, err = p.d.AddOut([]byte("y"))
	require.NoError(t, err)
	p.d.Publish()
	c := mustPop(t, p.q)
	require.NoError(t, p.q.Push(c.Head, 0))
	p.q.Publish()
	require.False(t, p.q.NeedNotify(), "not empty: used_event rules")
}

func TestKickSuppressionFlags(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	_, err := p.d.AddOut([]byte("a"))
	require.NoError(t, err)
	require.True(t, p.d.Publish(), "kicks are on initially")
	p.q.DisableNotify()
	require.Equal(t, virtiotest.UsedFNoNotify, p.d.UsedFlags())
	_, err = p.d.AddOut([]byte("b"))
	require.NoError(t, err)
	require.False(t, p.d.Publish(), "VIRTQ_USED_F_NO_NOTIFY")
	require.True(t, p.q.EnableNotify(), "chains pending: caller must pop, not wait")
	require.Equal(t, uint16(0), p.d.UsedFlags())
	mustPop(t, p.q)
	mustPop(t, p.q)
	require.False(t, p.q.EnableNotify())
	_, err = p.d.AddOut([]byte("c"))
	require.NoError(t, err)
	require.True(t, p.d.Publish())
}

func TestKickSuppressionEventIdx(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1|virtio.FEventIdx)
	require.False(t, p.q.EnableNotify())
	require.Equal(t, uint16(0), p.d.AvailEvent())
	_, err := p.d.AddOut([]byte("a"))
	require.NoError(t, err)
	require.True(t, p.d.Publish(), "avail idx 0->1 crosses avail_event 0")
	_, err = p.d.AddOut([]byte("b"))
	require.NoError(t, err)
	require.False(t, p.d.Publish(), "1->2: the device has not consumed yet, no second kick")
	// While enabled, Pop moves avail_event along.
	mustPop(t, p.q)
	require.Equal(t, uint16(1), p.d.AvailEvent())
	mustPop(t, p.q)
	require.Equal(t, uint16(2), p.d.AvailEvent())
	_, err = p.d.AddOut([]byte("c"))
	require.NoError(t, err)
	require.True(t, p.d.Publish())
	// Disabled: avail_event stays, so the driver stops kicking.
	p.q.DisableNotify()
	mustPop(t, p.q)
	require.Equal(t, uint16(2), p.d.AvailEvent())
	require.Equal(t, uint16(0), p.d.UsedFlags(), "flags untouched with EVENT_IDX")
	_, err = p.d.AddOut([]byte("d"))
	require.NoError(t, err)
	require.False(t, p.d.Publish())
	// Re-enabling finds the pending chain (the race EnableNotify guards).
	require.True(t, p.q.EnableNotify())
	require.Equal(t, uint16(3), p.d.AvailEvent())
	mustPop(t, p.q)
	require.False(t, p.q.EnableNotify())
	_, err = p.d.AddOut([]byte("e"))
	require.NoError(t, err)
	require.True(t, p.d.Publish())
}
