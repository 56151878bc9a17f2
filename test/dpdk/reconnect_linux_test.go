package dpdk

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/stretchr/testify/require"
)

// TestVirtioUserServerReconnect: DPDK's virtio_user as the vhost-user
// server (server=1) keeps its rings running while vhost-arcnet (--connect)
// is stopped and a new one connects. On split rings it then sends
// SET_VRING_BASE 0 with its avail index far ahead: the new backend starts
// at the used index (virtio.Queue resyncBase) instead of breaking the
// queue, and frames flow again, both ways. Packed rings virtio_user resets
// on reconnect.
func TestVirtioUserServerReconnect(t *testing.T) {
	requireDPDK(t)
	for _, packed := range []bool{false, true} {
		for _, d := range []struct{ name, uplink, mode string }{
			{"f2b", "sink", "txonly"},
			{"b2f", "source", "rxonly"},
		} {
			name := "split/" + d.name
			if packed {
				name = "packed/" + d.name
			}
			t.Run(name, func(t *testing.T) {
				dir := workDir(t)
				cs := cpus(t)
				sock := filepath.Join(dir, "fe.sock")
				devargs := ""
				args := []string{"--uplink", d.uplink}
				if packed {
					devargs = ",packed_vq=1"
					args = append(args, "--packed-rings")
				}
				fe := startTestpmd(t, dir, testpmdOpts{
					name: "fe",
					vdev: fmt.Sprintf("net_virtio_user0,path=%s,queues=1,server=1%s", sock, devargs),
					mode: d.mode,
					cpu:  cs[len(cs)-1],
				})
				dumpOnFailure(t, fe)
				require.Eventually(t, func() bool { return IsSocket(sock) }, startTimeout, 50*time.Millisecond,
					"virtio_user made no server socket")
				var counted []uint64
				for i := 1; i <= 2; i++ {
					be := connectArcnet(t, dir, i, sock, args...)
					dumpOnFailure(t, be.Proc)
					time.Sleep(flowTime)
					exitErr, err := be.Stop(syscall.SIGINT)
					require.NoError(t, err)
					require.NoError(t, exitErr, "vhost-arcnet %d exit status after SIGINT", i)
					ps, err := be.lastPortStats("guest0")
					require.NoError(t, err)
					t.Logf("vhost-arcnet %d: %v", i, ps)
					require.Zero(t, ps.Drops["queue_broken"], "vhost-arcnet %d: a queue broke", i)
					n := ps.RxPackets // frames from the frontend
					if d.name == "b2f" {
						n = ps.TxPackets
					}
					require.NotZero(t, n, "vhost-arcnet %d moved no frame", i)
					counted = append(counted, n)
					if i == 2 && !packed {
						// The one that had to start at the used index.
						require.True(t, strings.Contains(be.Log(), "starting at the used index"),
							"vhost-arcnet 2 logged no resync of a split ring")
					}
				}
				_, err := fe.Stop(syscall.SIGINT)
				require.NoError(t, err)
				t.Logf("frames per backend: %v", counted)
			})
		}
	}
}

// connectArcnet starts vhost-arcnet number i connecting to a frontend's
// vhost-user server socket (--connect) and waits until its guest port
// runs.
func connectArcnet(t *testing.T, dir string, i int, sock string, args ...string) *arcnet {
	t.Helper()
	argv := append([]string{backend.RequireBinary(t), "--connect", sock, "--log-format", "json", "--log-level", "info"}, args...)
	p := startProc(t, fmt.Sprintf("vhost-arcnet-%d", i), filepath.Join(dir, fmt.Sprintf("arcnet-%d.log", i)), nil, argv...)
	a := &arcnet{Proc: p, socket: sock}
	err := a.WaitFor(`msg="guest port running"`, startTimeout, func(log string) bool {
		recs, _ := ParseJSONLog([]byte(log))
		for _, r := range recs {
			if r.Msg() == "guest port running" {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("%v\nvhost-arcnet log:\n%s", err, a.Log())
	}
	return a
}
