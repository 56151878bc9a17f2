package vhostuser_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// restartWithQueued adds a frame to pair 0's transmit side while its
// rings are stopped, restarts both rings at rxBase and txBase (the
// indexes they stopped at) and checks that the backend picks the frame up
// from there: it comes back echoed.
func restartWithQueued(t *testing.T, f *vhostusertest.Frontend, rxBase, txBase uint16) {
	t.Helper()
	require.NoError(t, f.AddFrame(0, virtio.NetHdr{}, frame(100, 42), vhostusertest.LayoutSplit))
	require.NoError(t, f.Flush(0))
	require.NoError(t, f.RestartRing(0, rxBase))
	require.NoError(t, f.RestartRing(1, txBase))
	got, err := f.WaitRecv()
	require.NoError(t, err)
	require.Equal(t, frame(100, 42), got)
}
