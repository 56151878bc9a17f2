package xdp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	ht "github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// openOnInternet opens the uplink on the Host end of a netns.Internet
// (veth inet0, 203.0.113.1, default route via Inet's 203.0.113.2), with
// the ports lo..hi.
func openOnInternet(t *testing.T, inet *netns.Internet, lo, hi uint16) *Uplink {
	t.Helper()
	var u *Uplink
	err := inet.Host.Do(func() (err error) {
		u, err = Open(Options{Interface: inet.HostLink, PortMin: lo, PortMax: hi})
		return err
	})
	require.NoError(t, err)
	return u
}

// hostReserved returns the Host namespace's reserved ports.
func hostReserved(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var s string
	require.NoError(t, ns.Do(func() error {
		b, err := os.ReadFile(reservedPortsFile)
		s = strings.TrimSpace(string(b))
		return err
	}))
	return s
}

func xdpAttached(t *testing.T, ns *netns.NS, name string) bool {
	t.Helper()
	l, err := ns.Netlink(t).LinkByName(name)
	require.NoError(t, err)
	return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
}

// TestUplinkVeth: the uplink on a veth whose peer is in another namespace
// sends and receives the NAT's frames, the host keeps the rest (a host
// socket on the same address is reached at the same time), the next hop's
// MAC comes from the kernel, and Close leaves nothing behind.
func TestUplinkVeth(t *testing.T) {
	inet := netns.NewInternet(t)
	before := hostReserved(t, inet.Host)
	u := openOnInternet(t, inet, 61000, 61099)
	closed := false
	t.Cleanup(func() {
		if !closed {
			u.Close()
		}
	})
	t.Logf("mode %v, zero-copy %v, queues %d", u.Mode(), u.ZeroCopy(), u.Queues())
	require.Equal(t, inet.HostAddr, u.NATAddr())
	require.True(t, xdpAttached(t, inet.Host, inet.HostLink))
	require.Contains(t, hostReserved(t, inet.Host), "61000-61099")

	// With a socket in the XSKMAP, BPF_PROG_TEST_RUN sees the redirect
	// itself (TestProgramVerdicts sees its fallback, XDP_DROP).
	mine := ht.Frame{Dst: u.MAC(), Src: peerMAC, IPv4: &ht.IPv4Header{Src: inet.InetAddr, Dst: u.NATAddr()},
		UDP: &ht.UDPHeader{SrcPort: 53, DstPort: 61050}}
	act, err := u.prog.Run(mine.Build())
	require.NoError(t, err)
	require.Equal(t, ActionRedirect, act)
	mine.UDP.DstPort = 61100
	act, err = u.prog.Run(mine.Build())
	require.NoError(t, err)
	require.Equal(t, ActionPass, act)

	peer := datapathtest.NewCapture("router")
	u.SetPeer(peer)
	var mu sync.Mutex
	var hop netip.Addr
	var hopMAC header.MAC
	gotMAC := make(chan struct{}, 1)
	u.Start(func(a netip.Addr, m header.MAC) {
		mu.Lock()
		hop, hopMAC = a, m
		mu.Unlock()
		if m != (header.MAC{}) {
			select {
			case gotMAC <- struct{}{}:
			default:
			}
		}
	})
	// The kernel resolves the gateway for us (nothing has talked to it yet).
	u.ResolveNextHop()
	select {
	case <-gotMAC:
	case <-time.After(10 * time.Second):
		t.Fatal("the next hop's MAC never came from the kernel's neighbour table")
	}
	inetLink, err := inet.Inet.Netlink(t).LinkByName(inet.InetLink)
	require.NoError(t, err)
	mu.Lock()
	require.Equal(t, inet.InetAddr, hop)
	require.Equal(t, header.MAC(inetLink.Attrs().HardwareAddr), hopMAC)
	mac := hopMAC
	mu.Unlock()

	// A stale entry for the gateway is re-resolved: the host itself sends
	// nothing to it, so without the uplink's request the kernel would
	// leave it stale.
	require.NoError(t, inet.Host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/neigh/"+inet.HostLink+"/delay_first_probe_time", []byte("1"), 0)
	}))
	hostNL := inet.Host.Netlink(t)
	require.NoError(t, hostNL.NeighSet(&netlink.Neigh{LinkIndex: u.ifindex, Family: netlink.FAMILY_V4, State: netlink.NUD_STALE,
		IP: net.IP(inet.InetAddr.AsSlice()), HardwareAddr: net.HardwareAddr(mac[:])}))
	require.Eventually(t, func() bool {
		ns, err := hostNL.NeighList(u.ifindex, netlink.FAMILY_V4)
		require.NoError(t, err)
		for _, n := range ns {
			if n.IP.Equal(net.IP(inet.InetAddr.AsSlice())) && n.State&netlink.NUD_REACHABLE != 0 {
				return true
			}
		}
		return false
	}, 15*time.Second, 50*time.Millisecond, "the stale gateway entry was not re-resolved")

	// Out: a UDP datagram from the NAT's port, written through AF_XDP, with a
	// partial checksum the uplink completes (the peer's kernel drops bad ones).
	srv := inet.Inet.ListenUDP(t, netip.AddrPortFrom(inet.InetAddr, 7777).String())
	f := ht.Frame{Dst: mac, Src: u.MAC(), IPv4: &ht.IPv4Header{Src: u.NATAddr(), Dst: inet.InetAddr},
		UDP: &ht.UDPHeader{SrcPort: 61000, DstPort: 7777, Csum: ht.CsumPartial}, Payload: []byte("out through AF_XDP")}
	b := f.Build()
	u.Send([]datapath.Frame{{Hdr: virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6},
		Segs: [][]byte{b[:20], b[20:]}, Len: len(b)}})
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := srv.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	require.Equal(t, "out through AF_XDP", string(buf[:n]))
	require.Equal(t, netip.AddrPortFrom(u.NATAddr(), 61000), from)

	// Sending allocates nothing per batch (the guest TX workers' hot path).
	batch := []datapath.Frame{{Segs: [][]byte{b}, Len: len(b)}}
	if allocs := testing.AllocsPerRun(50, func() { u.Send(batch) }); allocs != 0 {
		t.Errorf("Send: %v allocations per batch, want 0", allocs)
	}

	// In: the reply to that port goes to the uplink's peer, not the host.
	_, err = srv.WriteToUDPAddrPort([]byte("back to the NAT"), from)
	require.NoError(t, err)
	rec := peer.Wait(t, 5*time.Second, func(r ht.Record) bool {
		return bytes.HasSuffix(r.Data, []byte("back to the NAT"))
	})
	require.Equal(t, u.MAC(), header.MAC(rec.Data[0:6]))

	// The host at the same time: a host socket on the same address, a port
	// outside the range, gets its datagram through the kernel.
	hostSock := inet.Host.ListenUDP(t, netip.AddrPortFrom(inet.HostAddr, 5000).String())
	inetSock := inet.Inet.DialUDP(t, netip.AddrPortFrom(inet.HostAddr, 5000).String())
	_, err = inetSock.Write([]byte("for the host"))
	require.NoError(t, err)
	hostSock.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err = hostSock.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	require.Equal(t, "for the host", string(buf[:n]))
	// And a TCP connection of the host's own to the peer.
	echo := inet.TCPEcho(t, 0)
	c, err := inet.Host.DialTCP(t, echo.String(), 5*time.Second)
	require.NoError(t, err)
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	require.False(t, local >= 61000 && local <= 61099, "the host picked reserved port %d", local)
	_, err = c.Write([]byte("host tcp"))
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = c.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "host tcp", string(buf[:n]))

	// Refused by Send: GSO frames (the switch segments those), runts.
	u.Send([]datapath.Frame{{Hdr: virtio.NetHdr{GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1000}, Segs: [][]byte{b}, Len: len(b)},
		{Segs: [][]byte{b[:10]}, Len: 10}})
	require.Equal(t, uint64(2), u.Stats().Drops(datapath.DropMalformed))

	st, err := u.SocketStats()
	require.NoError(t, err)
	require.Zero(t, st.RxInvalid+st.TxInvalid, "%+v", st)
	require.NoError(t, u.Close())
	closed = true
	require.False(t, xdpAttached(t, inet.Host, inet.HostLink), "the program is still attached")
	require.Equal(t, before, hostReserved(t, inet.Host), "reserved ports not restored")
	u.Send([]datapath.Frame{{Segs: [][]byte{b}, Len: len(b)}}) // after Close: dropped, no crash
}

// TestOpenErrors: environment problems are one clear error each.
func TestOpenErrors(t *testing.T) {
	inet := netns.NewInternet(t)
	open := func(ns *netns.NS, o Options) error {
		return ns.Do(func() error {
			u, err := Open(o)
			if err == nil {
				u.Close()
			}
			return err
		})
	}
	err := open(inet.Host, Options{Interface: "nosuch0"})
	require.ErrorContains(t, err, "interface nosuch0 does not exist")

	// Inet has no default route: no gateway.
	err = open(inet.Inet, Options{Interface: inet.InetLink})
	require.ErrorContains(t, err, "default route")

	err = open(inet.Host, Options{Interface: inet.HostLink, PortMin: 5, PortMax: 4})
	require.ErrorContains(t, err, "port range")

	// A second uplink on the same NIC: the first one's program is there.
	u := openOnInternet(t, inet, 61000, 61001)
	defer u.Close()
	err = open(inet.Host, Options{Interface: inet.HostLink})
	require.ErrorContains(t, err, "already has an XDP program")
	require.NoError(t, u.Close())

	// Last: a link set down loses its routes.
	require.NoError(t, inet.Host.Netlink(t).LinkSetDown(mustLink(t, inet.Host, inet.HostLink)))
	err = open(inet.Host, Options{Interface: inet.HostLink})
	require.ErrorContains(t, err, "is down")
}

func mustLink(t *testing.T, ns *netns.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.Netlink(t).LinkByName(name)
	require.NoError(t, err)
	return l
}

// TestRxRingFor: receive rings of 4096 entries (20 MiB of UMEM a socket)
// while the device's sockets stay within 16384 receive chunks, smaller ones
// for devices with more queues, never below 1024.
func TestRxRingFor(t *testing.T) {
	for _, c := range []struct {
		queues int
		want   uint32
	}{{1, 4096}, {4, 4096}, {5, 2048}, {8, 2048}, {9, 1024}, {16, 1024}, {256, 1024}} {
		require.Equal(t, c.want, rxRingFor(c.queues), "%d queues", c.queues)
	}
}
