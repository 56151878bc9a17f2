package services

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
)

// checkReplyFrame verifies a frame the gateway emits: from its MAC, a
// well-formed ARP packet or an IPv4 packet from the gateway's address,
// exactly as long as its header says, carrying TCP, UDP or ICMP, every
// checksum correct.
func checkReplyFrame(t *testing.T, f []byte) {
	eth := header.Ethernet(f)
	if !eth.IsValid() || eth.Src() != testGWMAC {
		t.Fatalf("bad reply frame %x", f)
	}
	switch eth.EtherType() {
	case header.EtherTypeARP:
		if !header.ARP(eth.Payload()).IsValid() {
			t.Fatalf("bad ARP reply %x", f)
		}
	case header.EtherTypeIPv4:
		ip := headertest.CheckIPv4(t, f, headertest.ExactLength(), headertest.Src(testGW))
		if p := ip.Protocol(); p != header.ProtoTCP && p != header.ProtoUDP && p != header.ProtoICMP {
			t.Fatalf("reply of protocol %d %x", p, f)
		}
	default:
		t.Fatalf("reply of EtherType %#x", eth.EtherType())
	}
}

func seedFrames(f *testing.F) {
	src := netip.MustParseAddr("192.168.127.50")
	f.Add(arpRequestFrame([]byte{192, 168, 127, 1}))
	f.Add(icmpEchoFrame([]byte{192, 168, 127, 1}, []byte("ping")))
	d, _ := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC1[:]), dhcpv4.WithOption(dhcpv4.OptHostName("fz")))
	f.Add(udpFrame(guestMAC1, header.BroadcastMAC, zeroIP, bcastIP, 68, 67, d.ToBytes()))
	r, _ := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr(guestMAC1[:])), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{192, 168, 127, 50})))
	f.Add(udpFrame(guestMAC1, header.BroadcastMAC, zeroIP, bcastIP, 68, 67, r.ToBytes()))
	f.Add(udpFrame(guestMAC1, testGWMAC, src, testGW, 5353, 53, mustPack(question("gateway.arcnet.internal.", dns.TypeA))))
	f.Add(udpFrame(guestMAC1, testGWMAC, src, testGW, 5353, 53, mustPack(question("50.127.168.192.in-addr.arpa.", dns.TypePTR))))
	// TCP segments to the DNS port, their checksums left zero.
	tcp := func(h headertest.TCPHeader, payload []byte) []byte {
		h.SrcPort, h.DstPort, h.Window, h.Csum = 999, 53, 1000, headertest.CsumZero
		return headertest.Frame{Dst: testGWMAC, Src: guestMAC1, IPv4: &headertest.IPv4Header{Src: src, Dst: testGW},
			TCP: &h, Payload: payload}.Build()
	}
	syn := tcp(headertest.TCPHeader{Seq: 1, Flags: header.TCPFlagSYN, Options: []byte{2, 4, 5, 180}}, nil)
	q := lengthPrefixed(question("gateway.arcnet.internal.", dns.TypeA))
	seg := tcp(headertest.TCPHeader{Seq: 2, Ack: 1, Flags: header.TCPFlagACK | header.TCPFlagFIN}, q)
	f.Add(syn)
	f.Add(seg)
}

// FuzzHandleFrame feeds arbitrary frames to a gateway: it must never panic,
// and everything it sends back must be well-formed.
func FuzzHandleFrame(f *testing.F) {
	seedFrames(f)
	g, _ := newTestGateway(f, nil)
	g.dns.fwd = nil // no sockets: names outside the zone get SERVFAIL at once
	f.Fuzz(func(t *testing.T, frame []byte) {
		g.HandleFrame(frame, func(r []byte) { checkReplyFrame(t, r) })
	})
}

// FuzzDHCP feeds arbitrary DHCP payloads to the server state machine.
func FuzzDHCP(f *testing.F) {
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform} {
		m, _ := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr(guestMAC1[:])), dhcpv4.WithMessageType(typ),
			dhcpv4.WithClientIP(net.IP{192, 168, 127, 9}),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{192, 168, 127, 50})),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{192, 168, 127, 1})),
			dhcpv4.WithOption(dhcpv4.OptHostName("fuzz")))
		f.Add(m.ToBytes())
	}
	g, _ := newTestGateway(f, func(c *Config) {
		c.PoolStart = netip.MustParseAddr("192.168.127.10")
		c.PoolEnd = netip.MustParseAddr("192.168.127.20")
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		// Round trip of the library's model.
		if _, err := dhcpv4.FromBytes(req.ToBytes()); err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		var mac [6]byte
		copy(mac[:], req.ClientHWAddr)
		r, ok := g.dhcp.handle(req, mac)
		if !ok {
			return
		}
		wire := r.msg.ToBytes()
		if len(wire) > 576-28 {
			// RFC 2131 §2: clients accept 312 bytes of options, a 548-byte
			// message in a 576-byte datagram.
			t.Fatalf("reply of %d bytes exceeds what every client accepts", len(wire))
		}
		back, err := dhcpv4.FromBytes(wire)
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if back.TransactionID != req.TransactionID || back.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatalf("reply mismatch: %v", back)
		}
		if a, ok := ipv4(back.YourIPAddr); ok && !DefaultSubnet.Contains(a) {
			t.Fatalf("leased %s outside the subnet", a)
		}
	})
}

// FuzzDNS feeds arbitrary DNS messages to the server, over both
// transports: every answer parses, echoes the ID and fits the transport.
func FuzzDNS(f *testing.F) {
	for _, m := range []*dns.Msg{
		question("gateway.arcnet.internal.", dns.TypeA),
		question("1.127.168.192.in-addr.arpa.", dns.TypePTR),
		question("arcnet.internal.", dns.TypeANY),
		question("www.example.com.", dns.TypeAAAA),
	} {
		m.SetEdns0(4096, true)
		f.Add(mustPack(m), true)
		f.Add(mustPack(m), false)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c}, true)
	g, _ := newTestGateway(f, nil)
	newClientFuzz(g)
	srv := newDNSServer(g.s, g.db, g.Stats(), nil) // no forwarding: synchronous answers
	f.Fuzz(func(t *testing.T, b []byte, udp bool) {
		calls := 0
		ok := srv.query(b, udp, func(p []byte) {
			calls++
			m := new(dns.Msg)
			if err := m.Unpack(p); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if !m.Response || !bytes.Equal(p[:2], b[:2]) {
				t.Fatalf("answer ID/QR wrong: %x for %x", p[:4], b[:4])
			}
			if udp && len(p) > max(512, g.s.mtu-udpHeaders) {
				t.Fatalf("UDP answer of %d bytes", len(p))
			}
		})
		if ok != (calls == 1) {
			t.Fatalf("query returned %v with %d answers", ok, calls)
		}
	})
}

// newClientFuzz gives the fuzzed DNS server a lease with a host name.
func newClientFuzz(g *Gateway) {
	var mac [6]byte
	copy(mac[:], guestMAC1[:])
	g.db.bind(mac, netip.MustParseAddr("192.168.127.50"), "fz", g.s.clock())
}
