//go:build linux

package qemu

import (
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRestartKeepsDownload: a download in flight survives a SIGKILL of
// vhost-arcnet. A QEMU guest (chardev reconnect=1) downloads 1 MiB from a
// server of the internet namespace that sends it at 128 KiB/s through the
// TAP uplink and NAT. More than one snapshot interval of the NAT flows
// (2 s) after the download began, vhost-arcnet is killed with SIGKILL and
// started again with the same flags. The new process restores the flow from
// --nat-state-file (its default, next to the socket) before its TAP passes
// traffic, so the server's next retransmission finds the flow and reaches
// the guest: the same request completes, with the right SHA-256. (Without
// the state file the guest, which only receives, sends nothing that would
// open the flow again, and the server's segments are dropped as no_flow.)
func TestRestartKeepsDownload(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	w := startNATWorld(t, env, 1<<20, "--lease-file", env.Path("leases.json"))

	// The slow download server, beside the world's web server.
	var dl slowDownload
	dl.data = w.Blob.Data
	l := w.Inet.ListenTCP(t, net.JoinHostPort(w.InetAddr.String(), "0"))
	srv := &http.Server{Handler: &dl, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	url := "http://" + l.Addr().String() + "/slow.bin"

	g := env.StartGuest(GuestConfig{
		Name: "dlkill", Net: VhostUserNet{Socket: w.Sock, Reconnect: 1},
		Test:    "dhcp,wait:go,wget:" + url + ":" + w.Blob.SHA256 + ",stats,wait:done",
		Knobs:   []string{"wget_s=120"},
		Timeout: 3 * guestTimeout,
	})
	require.NoError(t, g.AwaitWait("go", stepTimeout))
	require.NoError(t, g.Wake("go"))

	// Kill once the download has run for more than one snapshot interval
	// (and is still far from done).
	deadline := time.Now().Add(stepTimeout)
	for {
		started := dl.started.Load()
		if started != 0 && time.Since(time.Unix(0, started)) >= 2*time.Second+time.Second {
			break
		}
		require.True(t, time.Now().Before(deadline), "the download did not start")
		time.Sleep(10 * time.Millisecond)
	}
	atKill := dl.sent.Load()
	require.Less(t, atKill, int64(len(dl.data))/2, "the download is almost done before the kill: too fast to test")
	be1 := w.Backend
	killed, err := be1.Kill(10 * time.Second)
	require.NoError(t, err)
	t.Logf("killed %s with SIGKILL %v into the download, at %d of %d bytes", be1.Name,
		killed.Sub(time.Unix(0, dl.started.Load())).Round(time.Millisecond), atKill, len(dl.data))

	be2 := w.restartBackend(env, "after-kill")
	_, _, err = be2.WaitRecord(func(r LogRecord) bool {
		return r.Msg() == "guest port running" && r.String("port") == guest0
	}, 0, 30*time.Second)
	require.NoError(t, err, "QEMU did not reconnect")
	restored, ok := firstRecord(be2, "nat flows restored")
	require.True(t, ok, "no msg=\"nat flows restored\"")
	require.GreaterOrEqual(t, restored.Num("flows"), uint64(1), "%v", restored)

	_, err = g.WaitRecord(func(r Record) bool { return r.Tag == "WGET" }, stepTimeout+time.Minute)
	require.NoError(t, err, "the download did not end after the restart")
	wg, ok := g.Console().First("WGET")
	require.True(t, ok)
	require.Equal(t, "200", wg.Get("status"), "%s", wg)
	require.Equal(t, w.Blob.SHA256, wg.Get("sha256"), "the download across the kill: %s", wg)
	require.EqualValues(t, 1, dl.requests.Load(), "one request: the connection lived through the kill")
	done := time.Unix(0, dl.finished.Load())
	t.Logf("the %d-byte download killed at %d bytes completed over the same connection %v after the kill (%d NAT flows restored)",
		len(dl.data), atKill, done.Sub(killed).Round(time.Millisecond), restored.Num("flows"))
	finishGuest(t, g)
	_, err = be2.Stop()
	require.NoError(t, err)
	requireNoErrorRecords(t, be2)
}

// slowDownload serves data at slowDownChunk bytes a slowDownTick (128
// KiB/s), so that a download is under way when a test kills vhost-arcnet.
type slowDownload struct {
	data     []byte
	requests atomic.Int64
	started  atomic.Int64 // Unix ns of the first byte of the first request
	sent     atomic.Int64 // bytes written to the connection
	finished atomic.Int64 // Unix ns of the last byte
}

const (
	slowDownChunk = 16 << 10
	slowDownTick  = 125 * time.Millisecond
)

func (s *slowDownload) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	rw.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
	rw.Header().Set("Content-Type", "application/octet-stream")
	rw.WriteHeader(http.StatusOK)
	s.started.CompareAndSwap(0, time.Now().UnixNano())
	fl, _ := rw.(http.Flusher)
	for off := 0; off < len(s.data); off += slowDownChunk {
		n, err := rw.Write(s.data[off:min(off+slowDownChunk, len(s.data))])
		s.sent.Add(int64(n))
		if err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		time.Sleep(slowDownTick)
	}
	s.finished.Store(time.Now().UnixNano())
}
