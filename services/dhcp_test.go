package services

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// client plays one guest's DHCP client over frames.
type client struct {
	t   *testing.T
	g   *Gateway
	mac header.MAC
	out *frames
	xid uint32
}

func newClient(t *testing.T, g *Gateway, mac header.MAC) *client {
	return &client{t: t, g: g, mac: mac, out: newFrames()}
}

func (c *client) msg(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	c.xid++
	var xid dhcpv4.TransactionID
	binary.BigEndian.PutUint32(xid[:], c.xid)
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(xid),
		dhcpv4.WithHwAddr(net.HardwareAddr(c.mac[:])),
		dhcpv4.WithMessageType(typ),
	}, mods...)...)
	require.NoError(c.t, err)
	return m
}

// send delivers m from src to dst (broadcast MAC if dst is broadcast).
func (c *client) send(m *dhcpv4.DHCPv4, src, dst netip.Addr) {
	dmac := header.BroadcastMAC
	if dst != bcastIP {
		dmac = testGWMAC
	}
	c.g.HandleFrame(udpFrame(c.mac, dmac, src, dst, 68, 67, m.ToBytes()), c.out.reply)
}

// recv takes the reply frame, checks its UDP/IP framing, parses it.
func (c *client) recv() (*dhcpv4.DHCPv4, parsedUDP) {
	c.t.Helper()
	p := parseUDPFrame(c.t, c.out.next(c.t))
	require.Equal(c.t, testGWMAC, p.srcMAC)
	require.Equal(c.t, testGW, p.src)
	require.Equal(c.t, uint16(67), p.sport)
	require.Equal(c.t, uint16(68), p.dport)
	m, err := dhcpv4.FromBytes(p.payload)
	require.NoError(c.t, err)
	require.Equal(c.t, dhcpv4.OpcodeBootReply, m.OpCode)
	require.Equal(c.t, net.HardwareAddr(c.mac[:]), m.ClientHWAddr)
	return m, p
}

// dora runs DISCOVER/OFFER/REQUEST/ACK and returns the leased address.
func (c *client) dora(mods ...dhcpv4.Modifier) netip.Addr {
	c.t.Helper()
	c.send(c.msg(dhcpv4.MessageTypeDiscover, mods...), zeroIP, bcastIP)
	offer, _ := c.recv()
	require.Equal(c.t, dhcpv4.MessageTypeOffer, offer.MessageType())
	c.send(c.msg(dhcpv4.MessageTypeRequest, append(mods,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))...), zeroIP, bcastIP)
	ack, _ := c.recv()
	require.Equal(c.t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(c.t, ack.YourIPAddr.Equal(offer.YourIPAddr))
	a, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return a
}

func ip4(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func TestDHCPDiscoverOfferRequestAck(t *testing.T) {
	g, _ := newTestGateway(t, func(c *Config) { c.MTU = 1400; c.LeaseTime = 10 * time.Minute })
	c := newClient(t, g, guestMAC1)

	c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptHostName("Alpha"))), zeroIP, bcastIP)
	offer, p := c.recv()
	require.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	yi, _ := netip.AddrFromSlice(offer.YourIPAddr.To4())
	require.True(t, DefaultSubnet.Contains(yi) && yi != testGW, "offered %s", yi)
	// RFC 2131 §4.1: no broadcast bit, no ciaddr: unicast to yiaddr at chaddr.
	require.Equal(t, guestMAC1, p.dstMAC)
	require.Equal(t, yi, p.dst)

	// Every configuration option of issue 3.
	require.True(t, offer.ServerIdentifier().Equal(ip4(testGW)))
	require.Equal(t, net.IPMask{255, 255, 255, 0}, offer.SubnetMask())
	require.Equal(t, []net.IP{ip4(testGW)}, offer.Router())
	require.Equal(t, []net.IP{ip4(testGW)}, offer.DNS())
	require.Equal(t, "arcnet.internal", offer.DomainName())
	require.Equal(t, []string{"arcnet.internal"}, offer.DomainSearch().Labels)
	require.Equal(t, []byte{0x05, 0x78}, offer.GetOneOption(dhcpv4.OptionInterfaceMTU))
	require.Equal(t, 10*time.Minute, offer.IPAddressLeaseTime(0))
	require.Equal(t, 5*time.Minute, offer.IPAddressRenewalTime(0))
	require.Equal(t, 10*time.Minute*7/8, offer.IPAddressRebindingTime(0))
	_, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.False(t, ok, "an offer is not a lease")

	c.send(c.msg(dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4(testGW))),
		dhcpv4.WithOption(dhcpv4.OptHostName("Alpha"))), zeroIP, bcastIP)
	ack, _ := c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(t, ack.YourIPAddr.Equal(offer.YourIPAddr))
	require.Equal(t, 10*time.Minute, ack.IPAddressLeaseTime(0))

	got, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.True(t, ok)
	require.Equal(t, yi, got)
	mac, ok := g.LookupIP(yi)
	require.True(t, ok)
	require.Equal(t, net.HardwareAddr(guestMAC1[:]), mac)
	ls := g.Leases()
	require.Len(t, ls, 1)
	require.Equal(t, LeaseBound, ls[0].State)
	require.Equal(t, "alpha", ls[0].Hostname)
	st := g.Stats()
	require.Equal(t, uint64(1), st.Get(DHCPOffers))
	require.Equal(t, uint64(1), st.Get(DHCPAcks))
	require.Equal(t, uint64(2), st.Get(FramesOut))
}

func TestDHCPBroadcastFlag(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithBroadcast(true)), zeroIP, bcastIP)
	_, p := c.recv()
	require.Equal(t, header.BroadcastMAC, p.dstMAC)
	require.Equal(t, bcastIP, p.dst)
}

func TestDHCPRenewRebindAndRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	clk := testclock.New(testEpoch)
	mk := func() *Gateway {
		g, err := NewGateway(Config{LeaseFile: file, Clock: clk.Now, Logger: quietLog, DNSUpstreams: noUpstream, LeaseTime: time.Hour})
		require.NoError(t, err)
		return g
	}
	g := mk()
	a := newClient(t, g, guestMAC1).dora(dhcpv4.WithOption(dhcpv4.OptHostName("alpha")))
	require.NoError(t, g.Close())

	// The file is valid JSON with the lease.
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var lf leaseFile
	require.NoError(t, json.Unmarshal(raw, &lf))
	require.Len(t, lf.Leases, 1)
	require.Equal(t, a.String(), lf.Leases[0].Addr)
	require.Equal(t, "bound", lf.Leases[0].State)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".leases.json.tmp-*"))
	require.Empty(t, matches, "temporary files left behind")

	// Restart, half the lease later: the guest renews by unicast to the
	// gateway (RENEWING) and keeps its address.
	clk.Advance(30 * time.Minute)
	g = mk()
	defer g.Close()
	got, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.True(t, ok, "lease loaded")
	require.Equal(t, a, got)
	c := newClient(t, g, guestMAC1)
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip4(a))), a, testGW)
	ack, p := c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(t, ack.YourIPAddr.Equal(ip4(a)))
	require.Equal(t, a, p.dst, "RFC 2131 §4.1: unicast to ciaddr")
	require.Equal(t, guestMAC1, p.dstMAC)
	require.Equal(t, clk.Now().Add(time.Hour), g.Leases()[0].Expires)

	// REBINDING: broadcast with ciaddr, also ACKed to ciaddr.
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip4(a))), a, bcastIP)
	ack, p = c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.Equal(t, a, p.dst)

	// Its name survived too.
	r := ask(t, g, question("alpha.arcnet.internal.", dns.TypeA), true)
	require.Len(t, r.Answer, 1)
	require.Equal(t, a.String(), r.Answer[0].(*dns.A).A.String())

	// Another guest gets another address: the old binding is known, not
	// merely granted because it was free.
	b := newClient(t, g, guestMAC2).dora()
	require.NotEqual(t, a, b)

	// The first guest reboots (INIT-REBOOT) and asks for its address.
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a)))), zeroIP, bcastIP)
	ack, _ = c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(t, ack.YourIPAddr.Equal(ip4(a)))
}

func TestDHCPRenewUnknownLeaseIsGranted(t *testing.T) {
	// No lease file (or a lost one): a renewing guest keeps a free address.
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	a := netip.MustParseAddr("192.168.127.77")
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip4(a))), a, testGW)
	ack, _ := c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(t, ack.YourIPAddr.Equal(ip4(a)))

	// Another guest renewing the same address is refused.
	c2 := newClient(t, g, guestMAC2)
	c2.send(c2.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(ip4(a))), a, testGW)
	nak, p := c2.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
	require.Equal(t, header.BroadcastMAC, p.dstMAC, "RFC 2131 §4.1: NAK is broadcast")
	require.Equal(t, bcastIP, p.dst)
	require.True(t, nak.YourIPAddr.IsUnspecified())
}

func TestDHCPNakWrongNetwork(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{10, 0, 0, 5}))), zeroIP, bcastIP)
	nak, _ := c.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
	require.Equal(t, uint64(1), g.Stats().Get(DHCPNaks))
	// The gateway's own address is never leased.
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(testGW)))), zeroIP, bcastIP)
	nak, _ = c.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
}

func TestDHCPPoolExhaustion(t *testing.T) {
	g, clk := newTestGateway(t, func(c *Config) {
		c.PoolStart = netip.MustParseAddr("192.168.127.10")
		c.PoolEnd = netip.MustParseAddr("192.168.127.11")
		c.LeaseTime = time.Minute
	})
	a := newClient(t, g, guestMAC1).dora()
	b := newClient(t, g, guestMAC2).dora()
	require.ElementsMatch(t, []netip.Addr{netip.MustParseAddr("192.168.127.10"), netip.MustParseAddr("192.168.127.11")}, []netip.Addr{a, b})

	c := newClient(t, g, guestMAC3)
	c.send(c.msg(dhcpv4.MessageTypeDiscover), zeroIP, bcastIP)
	c.out.none(t) // no offer
	require.Equal(t, uint64(1), g.Stats().Get(DHCPPoolExhausted))
	c.send(c.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a)))), zeroIP, bcastIP)
	nak, _ := c.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
	require.Equal(t, uint64(2), g.Stats().Get(DHCPPoolExhausted))

	// Once a lease expires, its address goes to the waiting guest.
	clk.Advance(2 * time.Minute)
	got := c.dora()
	require.Contains(t, []netip.Addr{a, b}, got)
	_, ok := g.LookupMAC(net.HardwareAddr(guestMAC3[:]))
	require.True(t, ok)
}

func TestDHCPReservation(t *testing.T) {
	res := netip.MustParseAddr("192.168.127.200")
	g, _ := newTestGateway(t, func(c *Config) {
		r, err := ParseReservation(net.HardwareAddr(guestMAC2[:]).String() + "=" + res.String())
		require.NoError(t, err)
		c.Reservations = []Reservation{r}
		c.PoolStart = netip.MustParseAddr("192.168.127.199")
		c.PoolEnd = netip.MustParseAddr("192.168.127.200")
	})
	// Another guest asking for the reserved address gets something else.
	c1 := newClient(t, g, guestMAC1)
	c1.send(c1.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(res)))), zeroIP, bcastIP)
	offer, _ := c1.recv()
	require.True(t, offer.YourIPAddr.Equal(net.IP{192, 168, 127, 199}))
	c1.send(c1.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(res)))), zeroIP, bcastIP)
	nak, _ := c1.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())

	// The reserved guest gets its address, whatever it asks for.
	c2 := newClient(t, g, guestMAC2)
	c2.send(c2.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{192, 168, 127, 199}))), zeroIP, bcastIP)
	offer, _ = c2.recv()
	require.True(t, offer.YourIPAddr.Equal(ip4(res)))
	c2.send(c2.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{192, 168, 127, 199}))), zeroIP, bcastIP)
	nak, _ = c2.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType(), "a reserved client is steered to its reservation")
	require.Equal(t, res, c2.dora())

	// Bad reservations are configuration errors.
	for _, bad := range []string{"52:54:00:00:00:09=10.0.0.1", "52:54:00:00:00:09=192.168.127.1", "nonsense", "52:54:00:00:00:09"} {
		r, err := ParseReservation(bad)
		if err != nil {
			continue
		}
		_, err = NewGateway(Config{Reservations: []Reservation{r}, Logger: quietLog})
		require.Error(t, err, bad)
	}
}

func TestDHCPDecline(t *testing.T) {
	g, clk := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	a := c.dora()
	gen := g.LeaseGeneration()
	c.send(c.msg(dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4(testGW)))), zeroIP, bcastIP)
	c.out.none(t)
	require.Equal(t, uint64(1), g.Stats().Get(DHCPDeclines))
	require.NotEqual(t, gen, g.LeaseGeneration())
	_, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.False(t, ok)
	b := c.dora()
	require.NotEqual(t, a, b, "declined address is quarantined")
	ls := g.Leases()
	require.Len(t, ls, 2)
	require.Equal(t, LeaseDeclined, ls[0].State)
	require.Nil(t, ls[0].MAC)

	// A second decline frees the first quarantine: one per guest.
	c.send(c.msg(dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(b)))), zeroIP, bcastIP)
	ls = g.Leases()
	require.Len(t, ls, 1)
	require.Equal(t, b, ls[0].Addr)
	require.Equal(t, LeaseDeclined, ls[0].State)
	b = c.dora()

	// A guest cannot decline an address that is not its own.
	c2 := newClient(t, g, guestMAC2)
	c2.send(c2.msg(dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(b)))), zeroIP, bcastIP)
	got, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.True(t, ok)
	require.Equal(t, b, got)

	// After the quarantine the address is free again.
	clk.Advance(declineHold + time.Second)
	c2.send(c2.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a)))), zeroIP, bcastIP)
	ack, _ := c2.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
}

func TestDHCPRelease(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	a := c.dora(dhcpv4.WithOption(dhcpv4.OptHostName("rel")))
	c.send(c.msg(dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip4(a)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4(testGW)))), a, testGW)
	c.out.none(t)
	require.Equal(t, uint64(1), g.Stats().Get(DHCPReleases))
	_, ok := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.False(t, ok)
	r := ask(t, g, question("rel.arcnet.internal.", dns.TypeA), true)
	require.Equal(t, dns.RcodeNameError, r.Rcode, "a released guest's name is gone")
	require.Equal(t, a, c.dora(), "the client gets its previous address back")

	// A release for someone else's address is ignored.
	c2 := newClient(t, g, guestMAC2)
	c2.send(c2.msg(dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip4(a))), a, testGW)
	_, ok = g.LookupMAC(net.HardwareAddr(guestMAC1[:]))
	require.True(t, ok)
}

func TestDHCPInform(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	ci := netip.MustParseAddr("192.168.127.5")
	c.send(c.msg(dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(ip4(ci))), ci, testGW)
	ack, p := c.recv()
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	require.True(t, ack.YourIPAddr.IsUnspecified(), "RFC 2131 §4.3.5: no yiaddr")
	require.False(t, ack.Options.Has(dhcpv4.OptionIPAddressLeaseTime), "RFC 2131 §4.3.5: no lease time")
	require.Equal(t, ci, p.dst)
	require.Equal(t, []net.IP{ip4(testGW)}, ack.DNS())
	require.Equal(t, "arcnet.internal", ack.DomainName())
	require.Empty(t, g.Leases(), "INFORM allocates nothing")
	require.Equal(t, uint64(1), g.Stats().Get(DHCPInforms))
}

func TestDHCPOtherServerSelected(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	c.send(c.msg(dhcpv4.MessageTypeDiscover), zeroIP, bcastIP)
	offer, _ := c.recv()
	c.send(c.msg(dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{192, 168, 127, 254}))), zeroIP, bcastIP)
	c.out.none(t)
	require.Empty(t, g.Leases(), "the offer is withdrawn")
}

func TestDHCPRejectsSpoofAndGarbage(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	c := newClient(t, g, guestMAC1)
	m := c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(net.HardwareAddr(guestMAC2[:])))
	c.send(m, zeroIP, bcastIP)
	c.out.none(t)
	require.Equal(t, uint64(1), g.Stats().Drops(DropDHCPSpoofed))

	m = c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IP{10, 1, 1, 1}))
	c.send(m, zeroIP, bcastIP)
	c.out.none(t)
	require.Equal(t, uint64(1), g.Stats().Drops(DropDHCPIgnored))

	m = c.msg(dhcpv4.MessageTypeOffer) // a server message from a guest
	c.send(m, zeroIP, bcastIP)
	m = c.msg(dhcpv4.MessageTypeNone)
	m.Options.Del(dhcpv4.OptionDHCPMessageType)
	c.send(m, zeroIP, bcastIP)
	g.HandleFrame(udpFrame(guestMAC1, header.BroadcastMAC, zeroIP, bcastIP, 68, 67, []byte("short")), c.out.reply)
	c.out.none(t)
	require.Equal(t, uint64(3), g.Stats().Drops(DropDHCPMalformed))
}

func TestDHCPOptionEncoding(t *testing.T) {
	// Option 119 is RFC 1035 label encoding, uncompressed.
	l, err := rfc1035label.FromBytes([]byte("\x06arcnet\x08internal\x00"))
	require.NoError(t, err)
	require.Equal(t, []string{"arcnet.internal"}, l.Labels)
	g, _ := newTestGateway(t, func(c *Config) { c.Domain = "Lab.Example." })
	require.Equal(t, []byte("\x03lab\x07example\x00"), g.dhcp.search)
}

func TestLeaseFileRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "l.json")
	require.NoError(t, os.WriteFile(file, []byte("{not json"), 0o600))
	_, err := NewGateway(Config{LeaseFile: file, Logger: quietLog})
	require.Error(t, err)

	// Records that no longer fit the configuration are skipped, not fatal.
	lf := leaseFile{Version: 1, Leases: []leaseFileRecord{
		{MAC: "52:54:00:00:00:01", Addr: "10.9.9.9", State: "bound", Expires: time.Now().Add(time.Hour)},
		{MAC: "52:54:00:00:00:02", Addr: "192.168.127.20", State: "bound", Expires: time.Now().Add(time.Hour)},
		{MAC: "52:54:00:00:00:03", Addr: "192.168.127.20", State: "bound", Expires: time.Now().Add(time.Hour)},
		{MAC: "junk", Addr: "192.168.127.21", State: "bound"},
		{MAC: "52:54:00:00:00:04", Addr: "192.168.127.22", State: "weird"},
	}}
	b, _ := json.Marshal(lf)
	require.NoError(t, os.WriteFile(file, b, 0o600))
	g, err := NewGateway(Config{LeaseFile: file, Logger: quietLog})
	require.NoError(t, err)
	defer g.Close()
	ls := g.Leases()
	require.Len(t, ls, 1)
	require.Equal(t, "192.168.127.20", ls[0].Addr.String())

	_, err = NewGateway(Config{LeaseFile: filepath.Join(dir, "missing-dir", "l.json"), Logger: quietLog})
	require.Error(t, err, "an unwritable lease file is reported at start")
}

func TestSanitizeHostname(t *testing.T) {
	for in, want := range map[string]string{
		"Alpha":             "alpha",
		"web-1.example.com": "web-1",
		"-bad":              "",
		"bad-":              "",
		"with space":        "",
		"gateway":           "",
		"HOST":              "",
		"":                  "",
		"ünï":               "",
		"a23456789012345678901234567890123456789012345678901234567890123":  "a23456789012345678901234567890123456789012345678901234567890123",
		"a234567890123456789012345678901234567890123456789012345678901234": "",
	} {
		require.Equal(t, want, sanitizeHostname(in), in)
	}
}

// TestDHCPLeaseGivenLogged: a new binding is one info line ("dhcp lease
// given" with MAC, address and host name); the client's next DORA for the
// same address (a renewal of its binding) logs nothing at info level.
func TestDHCPLeaseGivenLogged(t *testing.T) {
	var logs bytes.Buffer
	g, _ := newTestGateway(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	c := newClient(t, g, header.MAC{0x52, 0x54, 0, 0, 0, 0x42})
	a := c.dora()
	require.Equal(t, 1, strings.Count(logs.String(), "dhcp lease given"), "%s", logs.String())
	require.Contains(t, logs.String(), "addr="+a.String())
	require.Contains(t, logs.String(), "mac=52:54:00:00:00:42")
	require.Equal(t, a, c.dora())
	require.Equal(t, 1, strings.Count(logs.String(), "dhcp lease given"), "the same binding again is not news")
}
