//go:build linux

package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRestartAfterKill (issue 13, "Restart"): vhost-arcnet --uplink tap
// --masquerade --lease-file is killed with SIGKILL while a QEMU guest
// (chardev reconnect=1) pings a server of the internet namespace through
// it ten times a second. Nothing of vhost-arcnet's own clean-up runs. A
// second instance is started with the same flags: QEMU reconnects, the
// guest's ping goes on from the same address (the lease was on disk before
// the kill, and anti-spoofing lets the guest's frames through only for a
// leased address), and new connections work: a ping of the gateway, a
// 1 MiB download through the TAP uplink and NAT with its SHA-256, UDP echo.
// The guest never asks for a new lease. Logged: how long the guest was cut
// off (the longest ping round trip, the pings lost, and the time from the
// kill to the new port's start).
func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	const (
		hostname = "crash-guest"
		pings    = 200 // at 0.1 s: 20 s, the kill and the restart inside
		interval = 100 * time.Millisecond
	)
	leases := env.Path("leases.json")
	w := startNATWorld(t, env, 1<<20, "--lease-file", leases)
	inet := w.InetAddr.String()
	g := env.StartGuest(GuestConfig{
		Name: "crash", Net: VhostUserNet{Socket: w.Sock, Reconnect: 1},
		Test: "dhcp,wget:" + w.BlobURL + ":" + w.Blob.SHA256 + ",wait:go," +
			"ping:" + inet + ":" + strconv.Itoa(pings) + ",ping:@gw,wget:" + w.BlobURL + ":" + w.Blob.SHA256 +
			",udp:" + w.UDPEcho.String() + ":3,wait:tcp,post:" + w.SlowUploadURL + ":1,stats,wait:done",
		Knobs:   []string{"hostname=" + hostname, "ping_i=0.1", "ping_w=5"},
		Timeout: 3 * guestTimeout,
	})
	require.NoError(t, g.AwaitWait("go", stepTimeout))
	ip := requireLease(t, g.Console(), "1500", "3600")
	mark, markLines := len(g.Console().Records), len(g.Console().Lines)
	requireLeaseFile(t, leases, g.MAC, ip.String(), hostname)

	// Traffic in flight: the guest's pings go through the router and the
	// NAT (translated out, replies translated in) when the kill comes.
	be1 := w.Backend
	base, err := be1.NetStats()
	require.NoError(t, err)
	require.NoError(t, g.Wake("go"))
	before, err := be1.WaitNetStats(func(s netStats) bool {
		return s.Gateway["router_in_translated"] >= base.Gateway["router_in_translated"]+10
	}, statsTimeout)
	require.NoError(t, err, "the guest's pings did not flow before the kill")
	killed, err := be1.Kill(10 * time.Second)
	require.NoError(t, err)
	answered := before.Gateway["router_in_translated"] - base.Gateway["router_in_translated"]
	t.Logf("killed %s (pid %d) with SIGKILL after %d pings answered through the NAT", be1.Name, be1.Pid(), answered)
	// What the killed process left on disk is the lease, whole.
	requireLeaseFile(t, leases, g.MAC, ip.String(), hostname)

	be2 := w.restartBackend(env, "after-kill")
	listening := time.Since(killed)
	_, _, err = be2.WaitRecord(func(r LogRecord) bool {
		return r.Msg() == "guest port running" && r.String("port") == guest0
	}, 0, 30*time.Second)
	require.NoError(t, err, "QEMU did not reconnect")
	running := time.Since(killed)
	loaded, ok := firstRecord(be2, "dhcp leases loaded")
	require.True(t, ok, "no msg=\"dhcp leases loaded\"")
	require.EqualValues(t, 1, loaded.Num("leases"), "%v", loaded)
	require.EqualValues(t, 0, loaded.Num("skipped"), "%v", loaded)

	require.NoError(t, g.AwaitWait("tcp", stepTimeout), "after the restart")
	c := g.Console()
	ps := c.All("PING")
	require.Len(t, ps, 2)
	sent, err := ps[0].Uint("sent")
	require.NoError(t, err)
	recv, err := ps[0].Uint("received")
	require.NoError(t, err)
	require.EqualValues(t, pings, sent, "%s", ps[0])
	// Pings answered after the kill: the ping that was in flight through
	// the killed process's NAT went on, from the same address, through the
	// new one.
	after, err := be2.WaitNetStats(func(s netStats) bool { return s.Gateway["router_in_translated"] > 0 }, statsTimeout)
	require.NoError(t, err)
	// (A ping or two may be answered between the counters and the kill.)
	require.Greater(t, recv, answered+pings/4, "few pings answered after the restart: %s", ps[0])
	// The cut-off: a ping sent while no backend ran waits in the
	// transmit ring (QEMU gives the new backend the ring where the old
	// one left it) or is lost; the longest round trip and the lost pings
	// say how long the guest was cut off.
	maxRTT := pingMaxRTT(t, c.Lines[markLines:])
	t.Logf("guest cut off for about %v: longest ping round trip %v, %d of %d pings at %v lost; "+
		"kill to listening %v, to the guest port running again %v",
		max(maxRTT, time.Duration(sent-recv)*interval).Round(time.Millisecond), maxRTT.Round(time.Millisecond), sent-recv, sent, interval,
		listening.Round(time.Millisecond), running.Round(time.Millisecond))
	require.Equal(t, netGateway, ps[1].Get("target"))
	require.NotEqual(t, "0", ps[1].Get("received"), "%s", ps[1])
	wg := c.All("WGET")
	require.Len(t, wg, 2)
	for _, r := range wg {
		require.Equal(t, "200", r.Get("status"), "%s", r)
		require.Equal(t, w.Blob.SHA256, r.Get("sha256"), "%s", r)
	}
	udp, ok := c.First("UDP")
	require.True(t, ok)
	require.Equal(t, "3", udp.Get("received"), "%s", udp)
	require.Empty(t, (&Console{Records: c.Records[mark:]}).All("DHCP"), "udhcpc events after the first lease: the guest asked again")

	require.Zero(t, after.Ports[guest0].Drops["spoof"], "the leased address was not known after the restart")
	require.Zero(t, after.Gateway["dhcp_discovers"], "the guest had to start over")
	require.Zero(t, after.Gateway["dhcp_requests"], "the guest asked for its lease again")
	requireNoErrorRecords(t, be2)

	// A TCP connection in flight: the guest uploads the 1 MiB it
	// downloaded to the internet namespace, which reads at 320 KiB/s; the
	// second instance is killed a quarter of the way. The third picks the
	// connection up from the guest's next segment (its NAT keeps the
	// guest's port, the host's masquerade still knows the flow): the same
	// request completes, intact. (A download picks up too, from the NAT
	// flows the killed process saved: TestRestartKeepsDownload.)
	require.NoError(t, g.Wake("tcp"))
	quarter := int64(len(w.Blob.Data) / 4)
	deadline := time.Now().Add(stepTimeout)
	for w.Slow.sent.Load() < quarter {
		require.True(t, time.Now().Before(deadline), "the slow upload did not start")
		time.Sleep(10 * time.Millisecond)
	}
	atKill := w.Slow.sent.Load()
	_, err = be2.Kill(10 * time.Second)
	require.NoError(t, err)
	be3 := w.restartBackend(env, "after-second-kill")
	_, _, err = be3.WaitRecord(func(r LogRecord) bool {
		return r.Msg() == "guest port running" && r.String("port") == guest0
	}, 0, 30*time.Second)
	require.NoError(t, err, "QEMU did not reconnect the second time")
	require.NoError(t, g.AwaitWait("done", stepTimeout), "after the second restart")
	post, ok := g.Console().First("POST")
	require.True(t, ok)
	require.Equal(t, "200", post.Get("status"), "%s", post)
	require.Contains(t, post.Get("reply"), "sha256="+w.Blob.SHA256, "the upload across the kill: %s", post)
	require.EqualValues(t, 1, w.Slow.requests.Load(), "one request: the connection lived through the kill")
	t.Logf("a %d-byte upload killed at %d bytes completed over the same connection in %ss",
		len(w.Blob.Data), atKill, post.Get("secs"))
	finishGuest(t, g)
	_, err = be3.Stop()
	require.NoError(t, err)
	requireNoErrorRecords(t, be3)
	// The killed process left its nftables table (replaced by the second,
	// which removed it at exit) and its TAP (gone with its fd).
	require.Empty(t, w.tapLinks(t), "TAP left in %s", w.Host.Name)
	require.NotContains(t, w.nftTables(t), masqTable, "nftables table left in %s", w.Host.Name)
}

// firstRecord returns be's first log record with message msg.
func firstRecord(be *Backend, msg string) (LogRecord, bool) {
	for _, r := range be.Records() {
		if r.Msg() == msg {
			return r, true
		}
	}
	return LogRecord{}, false
}

// pingMaxRTT returns the longest round trip of the first busybox ping
// summary ("round-trip min/avg/max = 1.3/33.0/1025.4 ms") in lines.
func pingMaxRTT(t *testing.T, lines []Line) time.Duration {
	t.Helper()
	for _, l := range lines {
		_, v, ok := strings.Cut(l.Text, "round-trip min/avg/max = ")
		if !ok {
			continue
		}
		f := strings.Split(strings.TrimSuffix(strings.TrimSpace(v), " ms"), "/")
		require.Len(t, f, 3, "%s", l.Text)
		ms, err := strconv.ParseFloat(f[2], 64)
		require.NoError(t, err, "%s", l.Text)
		return time.Duration(ms * float64(time.Millisecond))
	}
	t.Fatal("no ping summary on the console")
	return 0
}

// slowServer takes an upload at about 320 KiB/s, so that it is still under
// way when a test does something to the path it takes.
type slowServer struct {
	requests atomic.Int64
	sent     atomic.Int64 // bytes read from the connection
}

// slowChunk bytes every slowTick: 320 KiB/s.
const (
	slowChunk = 16 << 10
	slowTick  = 50 * time.Millisecond
)

// take reads a POST body at slowChunk bytes a slowTick and answers
// "sha256=HEX bytes=N" of it.
func (s *slowServer) take(rw http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	h := sha256.New()
	buf := make([]byte, slowChunk)
	total := 0
	for {
		n, err := io.ReadFull(r.Body, buf)
		h.Write(buf[:n])
		s.sent.Add(int64(n))
		total += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		time.Sleep(slowTick)
	}
	fmt.Fprintf(rw, "sha256=%s bytes=%d\n", hex.EncodeToString(h.Sum(nil)), total)
}
