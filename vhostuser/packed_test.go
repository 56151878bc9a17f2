package vhostuser_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestPackedRingsVringBase: a packed ring of a size that is not a power of
// two runs through several wraps, GET_VRING_BASE reports both positions
// with their wrap counters (vhost-user spec "Vring descriptor indices for
// packed virtqueues"), and the rings resume from them.
func TestPackedRingsVringBase(t *testing.T) {
	h := newHarness(t, vhostuser.Options{Features: vhostuser.PackedFeatures})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NotZero(t, f.Features()&virtio.FRingPacked)
	require.NoError(t, f.SetupQueues(1, 100))
	const frames = 250 // 2.5 rounds of the receive ring, more of the transmit ring
	for i := range frames {
		echoOnce(t, f, 0, frame(60+i, byte(i)), vhostusertest.LayoutSingle)
	}
	eventually(t, "transmit chains used", func() bool { return f.TxDone(0) })
	txBase, err := f.GetVringBase(1)
	require.NoError(t, err)
	rxBase, err := f.GetVringBase(0)
	require.NoError(t, err)
	tx, rx := f.Ring(1).Driver, f.Ring(0).Driver
	require.Equal(t, tx.AvailIdx(), txBase)
	require.Equal(t, rx.LastUsed(), rxBase, "every receive buffer taken was used")
	// One descriptor per frame (LayoutSingle), 250 of a 100-entry ring:
	// index 50, and the wrap counter flipped twice (back to 1).
	require.Equal(t, uint16(0x8000|50), txBase)

	restartWithQueued(t, f, rxBase, txBase)
	echoOnce(t, f, 0, frame(100, 43), vhostusertest.LayoutIndirect)
	require.Nil(t, h.lastDevice().broken.Load())
}

// TestPackedNotOfferedByDefault: DefaultFeatures leaves packed rings out
// (README "Performance"); hostile_linux_test's "SET_FEATURES not offered"
// checks a frontend that acks VIRTIO_F_RING_PACKED anyway is refused.
func TestPackedNotOfferedByDefault(t *testing.T) {
	require.Zero(t, vhostuser.DefaultFeatures&virtio.FRingPacked)
	h := newHarness(t, vhostuser.Options{})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	off, err := f.GetFeatures()
	require.NoError(t, err)
	require.Zero(t, off&virtio.FRingPacked)
}
