package vhostuser_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestLauncherQEMUMigration replays QEMU's live migration against the
// backend (vhostusertest/qemu_migration.go): dirty logging on the source
// with two queue pairs (SET_LOG_BASE once on current QEMU, once per pair
// on 7.2; SET_FEATURES with LOG_ALL and SET_VRING_ADDR with the log flag
// waiting for their acks), a cancelled migration, the source's stop, and
// the destination's SEND_RARP. The end-to-end run with real QEMU 10.0 is
// test/qemu TestLiveMigration.
func TestLauncherQEMUMigration(t *testing.T) {
	for _, v := range []vhostusertest.QEMUVersion{vhostusertest.QEMU72, vhostusertest.QEMUCurrent} {
		t.Run(v.String(), func(t *testing.T) {
			h := newHarness(t, vhostuser.Options{QueuePairs: 2})
			opts := vhostusertest.Options{Regions: 2, RegionSize: 8 << 20, QueuePairs: 2}
			q := vhostusertest.NewQEMU(vhostusertest.New(t, opts), v)
			q.Pairs = 2
			require.NoError(t, q.DialBackend(h.path))
			require.NoError(t, q.Init())
			require.NoError(t, q.GuestBoot())
			require.NoError(t, q.Start())
			d := h.lastDevice()
			bothWays(t, q.F, 1, 2)

			q.F.ResetSent()
			perPair := []string{"SET_FEATURES+reply", "GET_STATUS", "SET_VRING_ADDR+reply", "SET_VRING_ADDR+reply"}
			want := cat([]string{"SET_LOG_BASE+fd"}, perPair, perPair)
			if v == vhostusertest.QEMU72 {
				want = cat([]string{"SET_LOG_BASE+fd"}, perPair, []string{"SET_LOG_BASE+fd"}, perPair)
			}
			log, err := q.MigrationLogStart(512) // 16 MiB
			require.NoError(t, err)
			require.Equal(t, want, names(q.F.Sent()))
			require.True(t, d.logOn.Load())
			bothWays(t, q.F, 1, 3)
			rxUsed := q.F.Ring(0).Driver.UsedGPA() >> virtio.LogPageShift
			if v != vhostusertest.QEMU72 {
				// On 7.2 the second SET_LOG_BASE replaced this area.
				eventually(t, "used ring logged", func() bool { return marked(log)[rxUsed] })
			}

			// Cancelled: logging off, nothing waits for a reply.
			q.F.ResetSent()
			require.NoError(t, q.MigrationLogStop())
			require.Equal(t, repeat(2, "SET_FEATURES", "GET_STATUS", "SET_VRING_ADDR", "SET_VRING_ADDR"), names(q.F.Sent()))
			eventually(t, "logging off", func() bool { return !d.logOn.Load() })
			bothWays(t, q.F, 1, 2)

			// Again, to completion: the source stops its device.
			_, err = q.MigrationLogStart(512)
			require.NoError(t, err)
			bothWays(t, q.F, 1, 1)
			_, err = q.Stop()
			require.NoError(t, err)
			require.NoError(t, h.waitEnded().err)

			// The destination connects, runs the device and announces the
			// guest, once per announce round.
			q2 := vhostusertest.NewQEMU(vhostusertest.New(t, opts), v)
			q2.Pairs = 2
			require.NoError(t, q2.DialBackend(h.path))
			require.NoError(t, q2.Init())
			require.NoError(t, q2.GuestBoot())
			require.NoError(t, q2.Start())
			d2 := h.lastDevice()
			q2.F.ResetSent()
			mac := [6]byte{0x52, 0x54, 0, 0xac, 0x16, 0x02}
			require.NoError(t, q2.AnnounceMigrated(mac, 5))
			require.Equal(t, repeat(5, "SEND_RARP"), names(q2.F.Sent()))
			bothWays(t, q2.F, 1, 2) // the rings run on after the replyless SEND_RARPs
			// The rings do not wait for the socket: the RARPs are handled
			// when the session reads them, maybe after the traffic above.
			eventually(t, "SEND_RARP handled", func() bool { return d2.rarp.Load() != nil })
			require.Equal(t, mac, *d2.rarp.Load())
			requireNoSessionErrors(t, h)
		})
	}
}

// TestLauncherQEMUMemoryHotplug: memory plugged into and removed from a
// running guest with two queue pairs: current QEMU sends ADD_MEM_REG and
// REM_MEM_REG once (first queue pair), QEMU 7.2 once per pair; the
// backend takes the duplicates and the session goes on.
func TestLauncherQEMUMemoryHotplug(t *testing.T) {
	for _, v := range []vhostusertest.QEMUVersion{vhostusertest.QEMU72, vhostusertest.QEMUCurrent} {
		t.Run(v.String(), func(t *testing.T) {
			h := newHarness(t, vhostuser.Options{QueuePairs: 2})
			q := vhostusertest.NewQEMU(vhostusertest.New(t, vhostusertest.Options{Regions: 1, QueuePairs: 2}), v)
			q.Pairs = 2
			require.NoError(t, q.DialBackend(h.path))
			require.NoError(t, q.Init())
			require.NoError(t, q.GuestBoot())
			require.NoError(t, q.Start())
			bothWays(t, q.F, 1, 2)
			n := 1
			if v == vhostusertest.QEMU72 {
				n = 2
			}
			q.F.ResetSent()
			r, err := q.HotplugMemory(4 << 20)
			require.NoError(t, err)
			require.Equal(t, repeat(n, "ADD_MEM_REG+reply+fd"), names(q.F.Sent()))
			bothWays(t, q.F, 1, 2)
			q.F.ResetSent()
			require.NoError(t, q.UnplugMemory(r))
			require.Equal(t, repeat(n, "REM_MEM_REG+reply"), names(q.F.Sent()))
			bothWays(t, q.F, 1, 2)
			_, err = q.Stop()
			require.NoError(t, err)
			require.NoError(t, h.waitEnded().err)
			requireNoSessionErrors(t, h)
		})
	}
}
