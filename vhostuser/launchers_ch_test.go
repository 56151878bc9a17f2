package vhostuser_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Issue 16: the cloud-hypervisor paths TestLauncherCloudHypervisor leaves
// out (vhostusertest/cloudhypervisor.go and cloudhypervisor_migration.go
// cite the source at ae44c2971, v53.0-246): queues without a call fd,
// pause and resume, dirty logging for a migration, and the server-mode
// reconnect where cloud-hypervisor's listener is gone for a while.

// chActivated is a cloud-hypervisor (vhost_mode=client) with its device
// activated on h's socket.
func chActivated(t *testing.T, h *harness, noCall map[int]bool) (*vhostusertest.CloudHypervisor, *vhostusertest.Frontend) {
	t.Helper()
	f := vhostusertest.New(t, vhostusertest.Options{Regions: 2, RegionSize: 8 << 20})
	c := vhostusertest.NewCloudHypervisor(f, h.path, false)
	c.QueueSize = 64
	c.NoCall = noCall
	require.NoError(t, c.Connect(false))
	_, err := c.Negotiate()
	require.NoError(t, err)
	f.ResetSent()
	require.NoError(t, c.Activate())
	return c, f
}

func TestLauncherCloudHypervisorPaths(t *testing.T) {
	t.Run("no SET_VRING_CALL", func(t *testing.T) {
		// Neither queue has an MSI-X vector: no call fd at all. The
		// backend works the rings and signals nothing; the guest polls.
		h := newHarness(t, vhostuser.Options{})
		_, f := chActivated(t, h, map[int]bool{0: true, 1: true})
		require.Equal(t, cat([]string{"SET_FEATURES+reply", "SET_MEM_TABLE+reply+2fd"},
			repeat(2, "SET_VRING_NUM+reply"),
			repeat(2, "SET_VRING_ADDR+reply", "SET_VRING_BASE+reply", "SET_VRING_KICK+reply+fd"),
			repeat(2, "SET_VRING_ENABLE+reply")), names(f.Sent()))
		bothWays(t, f, 1, 8)
		// The echo device publishes the receive ring before it returns
		// the transmit chains and counts them: the echo can arrive a
		// moment before (a scheduling delay on a loaded machine).
		d := h.lastDevice()
		eventually(t, "every transmit buffer used", func() bool { return f.TxDone(0) })
		eventually(t, "8 frames counted", func() bool { return d.tx.Load() == 8 })
		require.Zero(t, f.Calls(0), "no call fd: nothing signalled")
		require.Zero(t, f.Calls(1))
		f.Disconnect()
		require.NoError(t, h.waitEnded().err)
		requireNoSessionErrors(t, h)
	})

	t.Run("pause and resume", func(t *testing.T) {
		h := newHarness(t, vhostuser.Options{})
		c, f := chActivated(t, h, nil)
		d := h.lastDevice()
		bothWays(t, f, 1, 2)
		sent := map[string]bool{}
		add := func(seed byte) {
			fr := frame(100+int(seed), seed)
			sent[string(fr)] = true
			require.NoError(t, f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSplit))
		}
		// A burst in flight when the VM pauses.
		for i := 0; i < 16; i++ {
			add(byte(10 + i))
		}
		require.NoError(t, f.Flush(0))
		f.ResetSent()
		require.NoError(t, c.Pause())
		require.Equal(t, repeat(2, "SET_VRING_ENABLE+reply"), names(f.Sent()), "pause: no GET_VRING_BASE")
		// Frames the guest queues while paused stay in the ring.
		tx := f.Ring(1).Driver
		usedAtPause := tx.UsedIdx()
		for i := 0; i < 4; i++ {
			add(byte(40 + i))
		}
		require.NoError(t, f.Flush(0))
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, usedAtPause, tx.UsedIdx(), "a disabled ring is not worked")
		got := map[string]int{}
		for {
			fr, ok := f.Recv()
			if !ok {
				break
			}
			got[string(fr)]++
		}
		f.ResetSent()
		require.NoError(t, c.Resume())
		require.Equal(t, repeat(2, "SET_VRING_ENABLE+reply"), names(f.Sent()), "resume: no SET_VRING_BASE")
		eventually(t, "every transmit buffer used", func() bool { return f.TxDone(0) })
		eventually(t, "every frame echoed or dropped", func() bool {
			for {
				fr, ok := f.Recv()
				if !ok {
					break
				}
				got[string(fr)]++
			}
			n := 0
			for _, k := range got {
				n += k
			}
			return uint64(n)+d.drops.Load() == uint64(len(sent))
		})
		for fr, k := range got {
			require.True(t, sent[fr], "an echo of a frame never sent")
			require.Equal(t, 1, k, "a frame echoed twice")
		}
		for i := 0; i < 4; i++ {
			fr := frame(100+40+i, byte(40+i))
			require.Equal(t, 1, got[string(fr)], "the frames queued while paused come back once after resume")
		}
		t.Logf("pause/resume: %d frames, %d echoed, %d dropped by the echo device (receive ring disabled first)",
			len(sent), len(sent)-int(d.drops.Load()), d.drops.Load())
		bothWays(t, f, 1, 2)
		requireNoSessionErrors(t, h)
	})

	t.Run("migration dirty logging", func(t *testing.T) {
		h := newHarness(t, vhostuser.Options{})
		c, f := chActivated(t, h, nil)
		d := h.lastDevice()
		bothWays(t, f, 1, 2)
		f.ResetSent()
		bm, err := c.StartDirtyLog()
		require.NoError(t, err)
		require.Equal(t, cat([]string{"SET_LOG_BASE+reply+fd", "SET_FEATURES+reply"}, repeat(2, "SET_VRING_ADDR+reply")), names(f.Sent()))
		require.True(t, d.logOn.Load())
		require.Len(t, bm, 512, "16 MiB of guest memory: (16 MiB - 1) / 32 KiB + 1 bytes")
		bothWays(t, f, 1, 4)
		rxUsed := f.Ring(0).Driver.UsedGPA() >> virtio.LogPageShift
		eventually(t, "receive used ring logged", func() bool { return marked(bm)[rxUsed] })

		// An iteration: a new area; the old one is read and no longer
		// written.
		f.ResetSent()
		dirty, next, err := c.DirtyLog(bm)
		require.NoError(t, err)
		require.Equal(t, []string{"SET_LOG_BASE+reply+fd"}, names(f.Sent()))
		snapshot := bytes.Clone(dirty)
		n1 := len(marked(dirty))
		bothWays(t, f, 1, 4)
		require.Equal(t, snapshot, dirty, "the rotated-out area is not written")
		eventually(t, "the new area logged", func() bool { return marked(next)[rxUsed] })
		t.Logf("cloud-hypervisor dirty log: %d pages in the first iteration, %d in the second", n1, len(marked(next)))

		f.ResetSent()
		require.NoError(t, c.StopDirtyLog())
		require.Equal(t, cat(repeat(2, "SET_VRING_ADDR+reply"), []string{"SET_FEATURES+reply"}), names(f.Sent()))
		require.False(t, d.logOn.Load())
		clear(next)
		bothWays(t, f, 1, 2)
		require.Empty(t, marked(next), "logging stopped")
		requireNoSessionErrors(t, h)
	})

	t.Run("server mode, listener away for a while", func(t *testing.T) {
		// cloud-hypervisor (vhost_mode=server) drops its listener after
		// the accept; its socket file stays. When the backend restarts,
		// vhost-arcnet --connect meets ECONNREFUSED, then (file removed)
		// ENOENT, and backs off until cloud-hypervisor binds again.
		path := filepath.Join(shortTempDir(t), "ch.sock")
		f := vhostusertest.New(t, vhostusertest.Options{Regions: 2, RegionSize: 8 << 20})
		c := vhostusertest.NewCloudHypervisor(f, path, true)
		c.QueueSize = 64
		require.NoError(t, c.Listen())
		h := newDialingHarness(t, fastReconnect, path)
		require.NoError(t, c.Connect(false))
		_, err := c.Negotiate()
		require.NoError(t, err)
		require.NoError(t, c.Activate())
		bothWays(t, f, 1, 2)
		_, err = net.Dial("unix", path)
		require.ErrorContains(t, err, "connection refused", "no listener after the accept; the file stays")

		h.stop()
		h2 := newDialingHarness(t, fastReconnect, path)
		eventually(t, "ECONNREFUSED retries", func() bool { return h2.srv.Stats().DialFailures >= 2 })
		require.NoError(t, os.Remove(path))
		n := h2.srv.Stats().DialFailures
		eventually(t, "ENOENT retries", func() bool { return h2.srv.Stats().DialFailures >= n+2 })
		require.NoError(t, os.WriteFile(path, nil, 0o600)) // Reconnect removes the file first, as cloud-hypervisor does
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, c.Reconnect())
		bothWays(t, f, 1, 3)
		st := h2.srv.Stats()
		t.Logf("server-mode reconnect: %d failed dials before cloud-hypervisor bound again", st.DialFailures)
		requireNoSessionErrors(t, h2)
		f.Disconnect()
		require.NoError(t, h2.waitEnded().err)
	})
}
