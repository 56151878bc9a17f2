package hostif

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// vmnetHelperLine is the description line of vmnet-helper's documentation
// (docs/integration.md, v0.11), on one line as the helper prints it.
const vmnetHelperLine = `{"vmnet_write_max_packets":256,"vmnet_read_max_packets":256,"vmnet_subnet_mask":"255.255.255.0","vmnet_mtu":1500,"vmnet_end_address":"192.168.105.254","vmnet_start_address":"192.168.105.1","vmnet_interface_id":"2835E074-9892-4A79-AFFB-7E41D2605678","vmnet_max_packet_size":1514,"vmnet_nat66_prefix":"fd2d:1b24:620:47::","vmnet_mac_address":"0a:d6:36:c1:ea:f3"}`

func TestParseVMNetInfo(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       string // error substring; empty: success
		check      func(t *testing.T, i VMNetInfo)
	}{
		{name: "helper-docs", line: vmnetHelperLine + "\n", check: func(t *testing.T, i VMNetInfo) {
			want := VMNetInfo{
				MAC: header.MAC{0x0a, 0xd6, 0x36, 0xc1, 0xea, 0xf3}, MTU: 1500, MaxPacketSize: 1514,
				InterfaceID: "2835E074-9892-4A79-AFFB-7E41D2605678",
				Start:       netip.MustParseAddr("192.168.105.1"), End: netip.MustParseAddr("192.168.105.254"),
				Mask: netip.MustParseAddr("255.255.255.0"), NAT66Prefix: "fd2d:1b24:620:47::",
				ReadMaxPackets: 256, WriteMaxPackets: 256,
			}
			if i != want {
				t.Errorf("got %+v\nwant %+v", i, want)
			}
			if p := i.Prefix(); p != netip.MustParsePrefix("192.168.105.0/24") {
				t.Errorf("prefix %v", p)
			}
		}},
		{name: "bridged", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500,"net_ipv4_subnet":"x"}`,
			check: func(t *testing.T, i VMNetInfo) {
				if i.Start.IsValid() || i.Prefix().IsValid() || i.MaxPacketSize != 1514 {
					t.Errorf("got %+v", i)
				}
			}},
		{name: "tso", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500,"vmnet_max_packet_size":65549}`},
		{name: "empty", line: " \n", want: "empty"},
		{name: "not-json", line: "INFO [main] started", want: "description line"},
		{name: "array", line: `[1,2]`, want: "description line"},
		{name: "no-mac", line: `{"vmnet_mtu":1500}`, want: "no vmnet_mac_address"},
		{name: "bad-mac", line: `{"vmnet_mac_address":"zz","vmnet_mtu":1500}`, want: "not an Ethernet MAC"},
		{name: "long-mac", line: `{"vmnet_mac_address":"00:00:5e:00:53:01:02:03","vmnet_mtu":1500}`, want: "not an Ethernet MAC"},
		{name: "multicast-mac", line: `{"vmnet_mac_address":"01:00:5e:00:00:01","vmnet_mtu":1500}`, want: "not unicast"},
		{name: "zero-mac", line: `{"vmnet_mac_address":"00:00:00:00:00:00","vmnet_mtu":1500}`, want: "not unicast"},
		{name: "no-mtu", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3"}`, want: "no vmnet_mtu"},
		{name: "small-mtu", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":100}`, want: "want 576..65535"},
		{name: "string-mtu", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":"1500"}`, want: "description line"},
		{name: "small-max", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500,"vmnet_max_packet_size":1500}`, want: "vmnet_max_packet_size"},
		{name: "bad-start", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500,"vmnet_start_address":"fd00::1"}`, want: "not an IPv4"},
		{name: "bad-batch", line: `{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500,"vmnet_read_max_packets":0}`, want: "want 1..65536"},
		{name: "huge", line: `{"x":"` + strings.Repeat("a", maxVMNetInfoLine) + `"}`, want: "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := ParseVMNetInfo([]byte(tc.line))
			if wantErr(t, err, tc.want) {
				return
			}
			if tc.check != nil {
				tc.check(t, i)
			}
		})
	}
}

// FuzzParseVMNetInfo: any line either fails or gives a description that
// holds the parser's promises.
func FuzzParseVMNetInfo(f *testing.F) {
	f.Add([]byte(vmnetHelperLine))
	f.Add([]byte(`{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":1500}`))
	f.Add([]byte(`{"vmnet_mac_address":"0a:d6:36:c1:ea:f3","vmnet_mtu":9000,"vmnet_max_packet_size":65549,"vmnet_subnet_mask":"255.255.0.255","vmnet_start_address":"10.0.0.1"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		i, err := ParseVMNetInfo(line)
		if err != nil {
			return
		}
		if i.MAC.IsMulticast() || i.MAC == (header.MAC{}) || i.MTU < 576 || i.MTU > 65535 ||
			i.MaxPacketSize < i.MTU+header.EthernetMinSize || i.MaxPacketSize > 65535+header.EthernetMinSize {
			t.Fatalf("accepted %+v", i)
		}
		if p := i.Prefix(); p.IsValid() && (!p.Addr().Is4() || p.Bits() > 32) {
			t.Fatalf("prefix %v", p)
		}
	})
}

var (
	testClientMAC = header.MAC{0x0a, 0xd6, 0x36, 0xc1, 0xea, 0xf3}
	testServerMAC = header.MAC{0x5a, 0x94, 0xef, 0, 0, 1}
	testServerIP  = netip.MustParseAddr("192.168.105.1")
)

// serverFrame builds a frame from the DHCP server (port 67) to the client
// (port 68) around m.
func serverFrame(m *dhcpv4.DHCPv4, dst netip.Addr) []byte {
	p := m.ToBytes()
	ulen := header.UDPSize + len(p)
	f := make([]byte, header.EthernetMinSize+header.IPv4MinSize+ulen)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: testClientMAC, Src: testServerMAC, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[header.EthernetMinSize:]).Encode(&header.IPv4Fields{TotalLength: uint16(header.IPv4MinSize + ulen),
		TTL: 64, Protocol: header.ProtoUDP, Src: testServerIP, Dst: dst})
	u := header.UDP(f[header.EthernetMinSize+header.IPv4MinSize:])
	u.Encode(&header.UDPFields{SrcPort: dhcpServerPort, DstPort: dhcpClientPort, Length: uint16(ulen)})
	copy(u[header.UDPSize:], p)
	u.SetChecksum(^header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, testServerIP, dst, uint16(ulen))))
	return f
}

// testAck is an ACK for testClientMAC with mods applied.
func testAck(t testing.TB, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, 4}),
		dhcpv4.WithHwAddr(net.HardwareAddr(testClientMAC[:])),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(192, 168, 105, 2)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(192, 168, 105, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(192, 168, 105, 1))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 168, 105, 1))),
		dhcpv4.WithLeaseTime(600),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.OpCode = dhcpv4.OpcodeBootReply
	return m
}

func TestParseDHCPReply(t *testing.T) {
	bcast := netip.MustParseAddr("255.255.255.255")
	good := serverFrame(testAck(t), bcast)
	for _, tc := range []struct {
		name  string
		frame func() []byte
		want  string // error substring; empty: success
	}{
		{"ack", func() []byte { return good }, ""},
		{"unicast", func() []byte { return serverFrame(testAck(t), netip.MustParseAddr("192.168.105.2")) }, ""},
		{"no-udp-checksum", func() []byte {
			f := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(f[14+20+6:], 0)
			return f
		}, ""},
		{"bad-udp-checksum", func() []byte {
			f := append([]byte(nil), good...)
			f[len(f)-1] ^= 0xff
			return f
		}, "bad UDP checksum"},
		{"bad-ip-checksum", func() []byte {
			f := append([]byte(nil), good...)
			f[14+8]-- // TTL
			return f
		}, "bad IPv4 header checksum"},
		{"short-ip", func() []byte { return good[:14+20+8+10] }, "IPv4 total length"},
		{"udp-length", func() []byte {
			f := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(f[14+20+4:], 4)
			binary.BigEndian.PutUint16(f[14+20+6:], 0)
			return f
		}, "UDP length"},
		{"from-other-port", func() []byte {
			f := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(f[14+20:], 53)
			binary.BigEndian.PutUint16(f[14+20+6:], 0)
			return f
		}, "not the server port"},
		{"fragment", func() []byte {
			f := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(f[14+6:], 10)
			return f
		}, "not a DHCP client frame"},
		{"request", func() []byte {
			m := testAck(t)
			m.OpCode = dhcpv4.OpcodeBootRequest
			return serverFrame(m, bcast)
		}, "want BOOTREPLY"},
		{"other-client", func() []byte {
			return serverFrame(testAck(t, dhcpv4.WithHwAddr(net.HardwareAddr{2, 0, 0, 0, 0, 9})), bcast)
		}, "not 0a:d6"},
		{"garbage", func() []byte {
			f := append([]byte(nil), good[:14+20+8+20]...)
			binary.BigEndian.PutUint16(f[14+2:], 20+8+20)
			f[14+10], f[14+11] = 0, 0
			binary.BigEndian.PutUint16(f[14+10:], ^header.Checksum(f[14:34], 0))
			binary.BigEndian.PutUint16(f[14+20+4:], 28)
			binary.BigEndian.PutUint16(f[14+20+6:], 0)
			return f
		}, "DHCP message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseDHCPReply(tc.frame(), testClientMAC)
			if wantErr(t, err, tc.want) {
				return
			}
			if r.src != testServerMAC || r.msg.MessageType() != dhcpv4.MessageTypeAck {
				t.Errorf("reply from %v type %v", r.src, r.msg.MessageType())
			}
		})
	}
}

// FuzzParseDHCPReply: frames off the vmnet link never panic the client's
// parser or lease builder, and what is accepted is a reply for the client
// that encodes and parses again to the same transaction.
func FuzzParseDHCPReply(f *testing.F) {
	f.Add(serverFrame(testAck(f), netip.MustParseAddr("255.255.255.255")))
	f.Add(serverFrame(testAck(f, dhcpv4.WithNetmask(net.IPMask{255, 0, 255, 0}), dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(900*time.Second))),
		netip.MustParseAddr("192.168.105.2")))
	f.Add(serverFrame(testAck(f, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak)), netip.MustParseAddr("255.255.255.255")))
	c := newDHCPClient(testClientMAC, "", func([]byte) error { return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		isClient := isDHCPClientFrame(frame)
		r, err := parseDHCPReply(frame, testClientMAC)
		if err != nil {
			return
		}
		if !isClient || r.msg.OpCode != dhcpv4.OpcodeBootReply || header.MAC(r.msg.ClientHWAddr) != testClientMAC {
			t.Fatalf("accepted a frame that is not a reply for the client: %v", r.msg)
		}
		m2, err := dhcpv4.FromBytes(r.msg.ToBytes())
		if err != nil || m2.TransactionID != r.msg.TransactionID {
			t.Fatalf("round trip: %v", err)
		}
		c.handleFrame(frame) // no transaction: dropped, never blocks
		if l, err := c.lease(r); err == nil {
			if !l.Addr.Is4() || l.T1 > l.T2 || l.T2 > l.Duration || l.Duration <= 0 || !l.Prefix.Contains(l.Addr) {
				t.Fatalf("lease %+v", l)
			}
		}
	})
}

func TestDHCPLease(t *testing.T) {
	c := newDHCPClient(testClientMAC, "", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Unix(1e9, 0)
	c.clock = func() time.Time { return now }
	for _, tc := range []struct {
		name string
		mods []dhcpv4.Modifier
		want VMNetLease
		err  string
	}{
		{name: "defaults", want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/24"), Router: testServerIP,
			Duration: 600 * time.Second, T1: 300 * time.Second, T2: 525 * time.Second}},
		{name: "server-times", mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(100 * time.Second)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(200 * time.Second))},
			want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/24"), Router: testServerIP,
				Duration: 600 * time.Second, T1: 100 * time.Second, T2: 200 * time.Second}},
		{name: "t2-beyond-lease", mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(900 * time.Second))},
			want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/24"), Router: testServerIP,
				Duration: 600 * time.Second, T1: 300 * time.Second, T2: 525 * time.Second}},
		{name: "t1-after-t2", mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(550 * time.Second)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(500 * time.Second))},
			want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/24"), Router: testServerIP,
				Duration: 600 * time.Second, T1: 300 * time.Second, T2: 500 * time.Second}},
		{name: "no-mask-no-router", mods: []dhcpv4.Modifier{dhcpv4.WithoutOption(dhcpv4.OptionSubnetMask),
			dhcpv4.WithoutOption(dhcpv4.OptionRouter), dhcpv4.WithoutOption(dhcpv4.OptionIPAddressLeaseTime)},
			want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/32"),
				Duration: time.Hour, T1: 30 * time.Minute, T2: 52*time.Minute + 30*time.Second}},
		{name: "router-is-us", mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(192, 168, 105, 2), net.IPv4(192, 168, 105, 3)))},
			want: VMNetLease{Prefix: netip.MustParsePrefix("192.168.105.2/24"), Router: netip.MustParseAddr("192.168.105.3"),
				Duration: 600 * time.Second, T1: 300 * time.Second, T2: 525 * time.Second}},
		{name: "bad-mask", mods: []dhcpv4.Modifier{dhcpv4.WithNetmask(net.IPMask{255, 0, 255, 0})}, err: "contiguous"},
		{name: "no-address", mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4zero)}, err: "without a usable address"},
		{name: "multicast-address", mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4(224, 0, 0, 1))}, err: "without a usable address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := c.lease(dhcpReply{msg: testAck(t, tc.mods...), src: testServerMAC})
			if wantErr(t, err, tc.err) {
				return
			}
			want := tc.want
			want.Addr = netip.MustParseAddr("192.168.105.2")
			want.Server, want.ServerMAC, want.Obtained = testServerIP, testServerMAC, now
			if len(l.DNS) != 1 || l.DNS[0] != testServerIP {
				t.Errorf("DNS %v", l.DNS)
			}
			l.DNS = nil
			if l.Addr != want.Addr || l.Prefix != want.Prefix || l.Router != want.Router || l.Server != want.Server ||
				l.ServerMAC != want.ServerMAC || !l.Obtained.Equal(want.Obtained) || l.Duration != want.Duration ||
				l.T1 != want.T1 || l.T2 != want.T2 {
				t.Errorf("lease %+v\nwant %+v", l, want)
			}
		})
	}
}

// TestIsDHCPClientFrameAllocs: the reader's per-frame check allocates
// nothing.
func TestIsDHCPClientFrameAllocs(t *testing.T) {
	f := serverFrame(testAck(t), netip.MustParseAddr("255.255.255.255"))
	if a := testing.AllocsPerRun(1000, func() { _ = isDHCPClientFrame(f) }); a != 0 {
		t.Errorf("%v allocs, want 0", a)
	}
}
