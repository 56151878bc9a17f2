package vhostusertest_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// loopbackServer serves vhost-user at a socket in a temporary directory:
// every connection is a GuestPort whose frames come back to it through a
// datapath.Loopback (MACs swapped), with pairs queue pairs. It returns the
// socket's path.
func loopbackServer(t *testing.T, pairs int) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv, err := vhostuser.NewServer(vhostuser.Options{
		Logger:     log,
		QueuePairs: pairs,
		NewDevice: func(vhostuser.SessionInfo) (vhostuser.Device, error) {
			gp, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: "guest0", QueuePairs: pairs, Logger: log})
			if err != nil {
				return nil, err
			}
			gp.SetPeer(datapath.NewLoopback("loop", gp))
			return gp, nil
		},
	})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "s")
	require.NoError(t, srv.Listen(path))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// TestTxFrame sends frames written once into guest memory (WriteTxFrame)
// several times each, in every layout, with receive buffers that are not
// zeroed (KeepRxBuffers), and checks every frame comes back whole.
func TestTxFrame(t *testing.T) {
	path := loopbackServer(t, 1)
	for _, sz := range []int{60, 1514, 9000} {
		for _, layout := range []vhostusertest.Layout{vhostusertest.LayoutSplit, vhostusertest.LayoutSingle, vhostusertest.LayoutIndirect} {
			t.Run(fmt.Sprintf("%dB/layout%d", sz, layout), func(t *testing.T) {
				f := vhostusertest.New(t, vhostusertest.Options{KeepRxBuffers: true})
				require.NoError(t, f.Dial(path))
				// Without MRG_RXBUF a 9000-byte frame needs big receive
				// chains; with it (the default) 2 KiB buffers merge.
				require.NoError(t, f.Negotiate(0))
				require.NoError(t, f.SetupQueues(1, 256))
				frames := make([]*vhostusertest.TxFrame, 2)
				want := make([][]byte, len(frames))
				for i := range frames {
					b := make([]byte, sz)
					for j := range b {
						b[j] = byte(i*7 + j*13)
					}
					var err error
					frames[i], err = f.WriteTxFrame(0, virtio.NetHdr{}, b)
					require.NoError(t, err)
					require.Equal(t, sz, frames[i].Len())
					// What comes back: the MACs swapped.
					w := append([]byte(nil), b...)
					copy(w[0:6], b[6:12])
					copy(w[6:12], b[0:6])
					want[i] = w
				}
				const rounds = 20
				for r := 0; r < rounds; r++ {
					for i, tf := range frames {
						require.NoError(t, f.AddTxFrame(tf, layout))
						require.NoError(t, f.Flush(0))
						got, err := f.WaitRecv()
						require.NoError(t, err)
						require.Equal(t, want[i], got, "round %d frame %d", r, i)
					}
				}
				// The backend returns the transmit chains after it
				// delivered their frames.
				require.Eventually(t, func() bool { return f.TxDone(0) }, 10*time.Second, time.Millisecond)
			})
		}
	}
}
