//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// dhcp runs DISCOVER/OFFER/REQUEST/ACK with host name hostname and returns
// the address; a NAK to the REQUEST is returned as an invalid address.
func (g *testGuest) dhcp(mac header.MAC, hostname string, requested netip.Addr) netip.Addr {
	g.t.Helper()
	bcast, any4 := netip.AddrFrom4([4]byte{255, 255, 255, 255}), netip.IPv4Unspecified()
	host := dhcpv4.WithOption(dhcpv4.OptHostName(hostname))
	if requested.IsValid() {
		// INIT-REBOOT: ask for the address held before.
		req, err := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr(mac[:])), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(requested.AsSlice())), host)
		require.NoError(g.t, err)
		g.send(testUDPFrame(mac, header.BroadcastMAC, any4, bcast, 68, 67, req.ToBytes()))
		ans, err := dhcpv4.FromBytes(g.recvUDP(68))
		require.NoError(g.t, err)
		if ans.MessageType() == dhcpv4.MessageTypeNak {
			return netip.Addr{}
		}
		a, _ := netip.AddrFromSlice(ans.YourIPAddr.To4())
		return a
	}
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(mac[:]), host)
	require.NoError(g.t, err)
	g.send(testUDPFrame(mac, header.BroadcastMAC, any4, bcast, 68, 67, disc.ToBytes()))
	offer, err := dhcpv4.FromBytes(g.recvUDP(68))
	require.NoError(g.t, err)
	req, err := dhcpv4.NewRequestFromOffer(offer, host)
	require.NoError(g.t, err)
	g.send(testUDPFrame(mac, header.BroadcastMAC, any4, bcast, 68, 67, req.ToBytes()))
	ack, err := dhcpv4.FromBytes(g.recvUDP(68))
	require.NoError(g.t, err)
	require.Equal(g.t, dhcpv4.MessageTypeAck, ack.MessageType())
	a, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return a
}

// lookup asks the gateway's DNS for name's A record; it returns the rcode
// and the first address.
func (g *testGuest) lookup(mac header.MAC, name string) (int, string) {
	g.t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	qb, err := q.Pack()
	require.NoError(g.t, err)
	g.send(testUDPFrame(mac, header.MAC(services.DefaultMAC), g.ip, netip.MustParseAddr("192.168.127.1"), 5353, 53, qb))
	var ans dns.Msg
	require.NoError(g.t, ans.Unpack(g.recvUDP(5353)))
	if len(ans.Answer) == 0 {
		return ans.Rcode, ""
	}
	return ans.Rcode, ans.Answer[0].(*dns.A).A.String()
}

// The control API of a running run() (--uplink none) with a Go vhost-user
// frontend as the guest: its port and lease are listed after it attached
// and did DHCP; a reservation added at run time moves it at its next DHCP
// exchange; a DNS record added at run time is answered to it through the
// gateway, and removed is gone; forwards need an uplink; the socket is the
// owner's only and gone after exit.
func TestControlRun(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock")
	cfg, err := parseFlags([]string{"--socket", sock, "--uplink", "none", "--lease-file", "none",
		"--dns-upstream", "127.0.0.1:9", "--control", ctl}, io.Discard)
	require.NoError(t, err)
	logs, stop := startRun(t, cfg)
	require.Equal(t, ctl, logs.wait(t, "control API")["socket"])
	logs.wait(t, "listening")
	fi, err := os.Stat(ctl)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the control socket is the owner's only")

	f := vhostusertest.New(t, vhostusertest.Options{Timeout: 5 * time.Second})
	require.NoError(t, f.Dial(sock))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 256))
	g := &testGuest{t: t, f: f}
	g.ip = g.dhcp(testGuestMAC, "vm1", netip.Addr{})
	require.True(t, g.ip.IsValid())

	get := func(url string, v any) {
		t.Helper()
		code, b := call(t, ctl, "GET", url, "")
		require.Equal(t, 200, code, string(b))
		require.NoError(t, json.Unmarshal(b, v))
	}
	var ps apiPorts
	for !f.TxDone(0) {
		time.Sleep(time.Millisecond)
	}
	// The port counts a batch after handing it on (the answers may come
	// back first).
	require.Eventually(t, func() bool {
		get("/v1/ports", &ps)
		return len(ps.Ports) == 1 && ps.Ports[0].Counters.RxPackets == uint64(g.sent)
	}, 5*time.Second, time.Millisecond)
	p := ps.Ports[0]
	require.Equal(t, "guest0", p.Name)
	require.True(t, p.Active)
	require.Equal(t, sock, p.Socket)
	require.Equal(t, "server", p.Role)
	require.Equal(t, testGuestMAC.String(), p.MAC, "the MAC the switch learnt from the guest")
	require.Equal(t, g.ip.String(), p.Address)
	require.Equal(t, "vm1", p.Hostname)
	require.Contains(t, p.Features, "VERSION_1")
	require.Contains(t, p.Features, "MRG_RXBUF")
	require.Equal(t, featureList(mustParseHex(t, p.FeatureBits)), p.Features)
	require.NotZero(t, mustParseHex(t, p.FeatureBits)&virtio.FVersion1)
	require.Equal(t, 1, p.QueuePairs)
	require.Equal(t, 1, p.MaxPairs)
	require.Equal(t, uint64(g.sent), p.Counters.RxPackets)
	require.Equal(t, uint64(g.received), p.Counters.TxPackets)
	require.Equal(t, []apiQueueCounters{{Queue: 0, RxPackets: p.Counters.RxPackets, RxBytes: p.Counters.RxBytes,
		TxPackets: p.Counters.TxPackets, TxBytes: p.Counters.TxBytes}}, p.Queues, "one queue pair: the port's counters")

	var ls apiLeases
	get("/v1/leases", &ls)
	require.Equal(t, []apiLease{{Address: g.ip.String(), MAC: testGuestMAC.String(), Hostname: "vm1", State: "bound",
		ExpiresIn: ls.Leases[0].ExpiresIn}}, ls.Leases)
	require.InDelta(t, 3600, ls.Leases[0].ExpiresIn, 5)

	// A reservation moves the guest at its next exchange.
	res := netip.MustParseAddr("192.168.127.77")
	var out, errb bytes.Buffer
	require.Equal(t, 0, ctlCommand([]string{"--control", ctl, "reserve", "add", testGuestMAC.String() + "=" + res.String()}, &out, &errb), errb.String())
	require.False(t, g.dhcp(testGuestMAC, "vm1", g.ip).IsValid(), "the old address is refused (NAK)")
	g.ip = g.dhcp(testGuestMAC, "vm1", netip.Addr{})
	require.Equal(t, res, g.ip)
	get("/v1/leases", &ls)
	require.Len(t, ls.Leases, 1)
	require.Equal(t, res.String(), ls.Leases[0].Address)
	require.True(t, ls.Leases[0].Reserved)

	// A DNS record is answered through the gateway, and is gone once removed.
	rc, _ := g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, dns.RcodeNameError, rc)
	require.Equal(t, 0, ctlCommand([]string{"--control", ctl, "dns", "add", "files=192.168.127.20"}, &out, &errb), errb.String())
	rc, a := g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, dns.RcodeSuccess, rc)
	require.Equal(t, "192.168.127.20", a)
	_, a = g.lookup(testGuestMAC, "vm1.arcnet.internal.")
	require.Equal(t, res.String(), a, "the guest's own name follows its new lease")
	require.Equal(t, 0, ctlCommand([]string{"--control", ctl, "dns", "rm", "files"}, &out, &errb), errb.String())
	rc, _ = g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, dns.RcodeNameError, rc)
	require.Equal(t, "files.arcnet.internal", logs.wait(t, "DNS record removed")["name"])

	// Forwards need an uplink that leaves the host.
	errb.Reset()
	require.Equal(t, 1, ctlCommand([]string{"--control", ctl, "forward", "add", "tcp:8080:vm1:80"}, &out, &errb))
	require.Contains(t, errb.String(), "port forwards need an uplink that leaves the host: this vhost-arcnet runs with --uplink none (use --uplink tap)")

	// The guest goes: its port is listed as ended, with its counters.
	f.Disconnect()
	logs.wait(t, "guest port detached")
	get("/v1/ports", &ps)
	require.Len(t, ps.Ports, 1)
	require.False(t, ps.Ports[0].Active)
	require.Equal(t, uint64(g.sent), ps.Ports[0].Counters.RxPackets)

	stop()
	_, err = os.Lstat(ctl)
	require.True(t, os.IsNotExist(err), "the control socket is removed at exit")
}

func mustParseHex(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 0, 64)
	require.NoError(t, err)
	return v
}

// A forward added through the API listens on the host at once and relays
// a host client's connection toward the NAT address, with the NAT engine
// forwarding its port to the guest; removed, its listener is closed (new
// connections are refused), its relayed connection ends and the engine
// forgets the port.
//
// The uplink here is a sink, not a TAP (this runs without root): the
// relay's target, the NAT address, is a stand-in listener on 127.0.0.2
// that plays "the NAT address and the guest behind it". The path through
// a real TAP to a guest is test/uplink's TestInboundForward and
// TestControlForwardTAP.
func TestControlForwardFollows(t *testing.T) {
	standIn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on the loopback: %v", err)
	}
	defer standIn.Close()
	port := uint16(standIn.Addr().(*net.TCPAddr).Port)
	a, n := controlState(t, netip.MustParseAddr("127.0.0.2"))
	ctl := serveControl(t, a)
	spec := "tcp:127.0.0.1:" + strconv.Itoa(int(port)) + ":192.168.127.2:8080"

	code, b := call(t, ctl, "POST", "/v1/forwards", `{"spec": "`+spec+`"}`)
	require.Equal(t, 201, code, string(b))
	var fw apiForward
	require.NoError(t, json.Unmarshal(b, &fw))
	require.Equal(t, spec, fw.Spec)
	require.Equal(t, "api", fw.Origin)
	require.Equal(t, "192.168.127.2:8080", fw.Target)
	require.Contains(t, n.eng.Forwards(), nat.Forward{Proto: nat.TCP, Port: port, Guest: netip.MustParseAddrPort("192.168.127.2:8080")})

	client, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), 5*time.Second)
	require.NoError(t, err)
	defer client.Close()
	_, err = client.Write([]byte("hello guest"))
	require.NoError(t, err)
	require.NoError(t, standIn.(*net.TCPListener).SetDeadline(time.Now().Add(5*time.Second)))
	relayed, err := standIn.Accept()
	require.NoError(t, err, "the connection follows the forward to the NAT address")
	defer relayed.Close()
	buf := make([]byte, 11)
	require.NoError(t, relayed.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(relayed, buf)
	require.NoError(t, err)
	require.Equal(t, "hello guest", string(buf))
	_, err = relayed.Write([]byte("hi"))
	require.NoError(t, err)
	require.NoError(t, client.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(client, buf[:2])
	require.NoError(t, err)
	require.Equal(t, "hi", string(buf[:2]))

	var fs apiForwards
	code, b = call(t, ctl, "GET", "/v1/forwards", "")
	require.Equal(t, 200, code)
	require.NoError(t, json.Unmarshal(b, &fs))
	require.Len(t, fs.Forwards, 1)
	require.Equal(t, uint64(1), fs.Forwards[0].Accepted)
	require.Equal(t, uint64(1), fs.Forwards[0].Active)

	code, b = call(t, ctl, "DELETE", "/v1/forwards/"+spec, "")
	require.Equal(t, 200, code, string(b))
	_, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), 5*time.Second)
	require.True(t, errors.Is(err, syscall.ECONNREFUSED), "after removal a connection is refused: %v", err)
	_, err = relayed.Read(buf)
	require.ErrorIs(t, err, io.EOF, "the relayed connection ended")
	for _, f := range n.eng.Forwards() {
		require.NotEqual(t, port, f.Port, "the NAT engine forgot the port")
	}
	code, b = call(t, ctl, "GET", "/v1/forwards", "")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"forwards": []}`, string(b))

	// The tick's resync does not bring it back.
	n.syncForwards()
	require.Empty(t, n.eng.Forwards())
}
