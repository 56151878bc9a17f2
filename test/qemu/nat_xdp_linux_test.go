//go:build linux

package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/test/netns"
)

// xdpGuestPorts is --xdp-ports in TestNATXDP.
const xdpGuestPorts = "61000-61999"

// TestNATXDP: a QEMU guest behind --uplink xdp on Host's veth (issue 10):
// DHCP, DNS, ping, UDP and a 4 MiB download and upload to the internet,
// which sees Host's own address and a port of the NAT's range, while a
// process of the host downloads from the same server over the same veth.
// vhost-arcnet leaves no XDP program and no reserved ports behind.
func TestNATXDP(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	var reserved0 string
	w := startNATWorldUplink(t, env, 4<<20, func(in *netns.Internet) []string {
		// Inet's veth must put complete checksums on the wire: see
		// netns.NS.TxChecksumOff.
		in.Inet.TxChecksumOff(t, in.InetLink)
		reserved0 = xdpReserved(t, in.Host)
		return []string{"--uplink", "xdp:" + in.HostLink, "--xdp-ports", xdpGuestPorts}
	})
	require.Contains(t, xdpReserved(t, w.Host), xdpGuestPorts, "the port range is reserved while vhost-arcnet runs")
	inet := w.InetAddr.String()

	// The host's own downloads from the same server, over the same veth,
	// for as long as the guest runs.
	var hostOK, hostBad atomic.Int64
	stop := make(chan struct{})
	hostDone := make(chan struct{})
	client := w.Host.HTTPClient(t)
	go func() {
		defer close(hostDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get(w.BlobURL)
			if err != nil {
				hostBad.Add(1)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			h := sha256.New()
			_, err = io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || hex.EncodeToString(h.Sum(nil)) != w.Blob.SHA256 {
				hostBad.Add(1)
				continue
			}
			hostOK.Add(1)
			select { // a steady trickle, not a flood of the shared cores
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	g := env.StartGuest(GuestConfig{
		Name: "xdp", Net: VhostUserNet{Socket: w.Sock},
		Test: "dhcp,nslookup:" + natInetName + ":" + inet +
			",ping:" + inet +
			",udp:" + w.UDPEcho.String() + ":5" +
			",wget:" + w.BlobURL + ":" + w.Blob.SHA256 +
			",post:" + w.UploadURL + ":1,stats,wait:done",
		Timeout: guestTimeout,
	})
	require.NoError(t, g.AwaitWait("done", stepTimeout))
	close(stop)
	<-hostDone
	c := finishGuest(t, g)

	requireLease(t, c, "1500", "3600")
	requireResolved(t, c, natInetName, inet)
	requirePingOK(t, c, inet)
	udp, ok := c.First("UDP")
	require.True(t, ok)
	require.Equal(t, "5", udp.Get("received"), "%s", udp)
	wg, ok := c.First("WGET")
	require.True(t, ok)
	require.Equal(t, "200", wg.Get("status"), "%s", wg)
	require.Equal(t, strconv.Itoa(len(w.Blob.Data)), wg.Get("bytes"), "%s", wg)
	require.Equal(t, w.Blob.SHA256, wg.Get("sha256"), "%s", wg)
	secs, _ := strconv.ParseFloat(wg.Get("secs"), 64)
	t.Logf("guest downloaded %d bytes through XDP in %.2fs (%.1f Mbit/s, TCG guest)",
		len(w.Blob.Data), secs, float64(len(w.Blob.Data))*8/1e6/max(secs, 0.01))
	ups := w.Uploads()
	require.Len(t, ups, 1)
	require.Equal(t, w.Blob.SHA256, ups[0].SHA256, "uploaded bytes changed on the way")
	peers := []string{ups[0].Peer}
	w.WebPeers.Range(func(k, _ any) bool { peers = append(peers, k.(string)); return true })
	guestSeen := 0
	for _, p := range peers {
		ap, err := netip.ParseAddrPort(p)
		require.NoError(t, err)
		require.Equal(t, w.HostAddr, ap.Addr(), "the internet saw %s", p)
		if ap.Port() >= 61000 && ap.Port() <= 61999 {
			guestSeen++
		}
	}
	require.NotZero(t, guestSeen, "no connection from the NAT's port range among %v", peers)
	t.Logf("host downloads over the same veth meanwhile: %d intact, %d failed", hostOK.Load(), hostBad.Load())
	require.NotZero(t, hostOK.Load(), "the host's own downloads")
	require.Zero(t, hostBad.Load(), "the host's own downloads")

	_, err := w.Backend.Stop()
	require.NoError(t, err)
	requireNoErrorRecords(t, w.Backend)
	l, err := w.Host.Netlink(t).LinkByName(w.HostLink)
	require.NoError(t, err)
	require.False(t, l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached, "XDP program left on %s", w.HostLink)
	require.Equal(t, reserved0, xdpReserved(t, w.Host), "reserved ports not restored")
}

// xdpReserved returns ns's net.ipv4.ip_local_reserved_ports.
func xdpReserved(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var s string
	require.NoError(t, ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
		s = strings.TrimSpace(string(b))
		return err
	}))
	return s
}
