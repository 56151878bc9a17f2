package xdp

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	ht "github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

var (
	natAddr  = netip.MustParseAddr("10.77.0.2")
	otherNIC = netip.MustParseAddr("10.77.0.3")
	remote   = netip.MustParseAddr("192.0.2.9")
	nicMAC   = header.MAC{0x02, 0, 0, 0, 0, 2}
	peerMAC  = header.MAC{0x02, 0, 0, 0, 0, 1}
)

const (
	testPortMin = 61000
	testPortMax = 61999
)

// loadTestProgram loads the program for natAddr and the test port range,
// or skips where the kernel or the user cannot.
func loadTestProgram(t testing.TB) *Program {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading an XDP program needs root")
	}
	p, err := LoadProgram(ProgramOptions{Addr: natAddr, PortMin: testPortMin, PortMax: testPortMax})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// in is an IPv4 frame from the remote to dst.
func in(dst netip.Addr, f ht.Frame) []byte {
	f.Dst, f.Src = nicMAC, peerMAC
	if f.IPv4 == nil {
		f.IPv4 = &ht.IPv4Header{}
	}
	if !f.IPv4.Src.IsValid() {
		f.IPv4.Src = remote
	}
	f.IPv4.Dst = dst
	return f.Build()
}

// quoted is the first 28 bytes (IPv4 header and 8 transport bytes) of a
// packet the NAT sent from src: what an ICMP error quotes (RFC 792).
func quoted(src netip.Addr, f ht.Frame) []byte {
	if f.IPv4 == nil {
		f.IPv4 = &ht.IPv4Header{}
	}
	f.IPv4.Src, f.IPv4.Dst = src, remote
	return f.Packet()[:28]
}

func icmpError(typ, code uint8, quote []byte) ht.Frame {
	return ht.Frame{ICMP: &ht.ICMPHeader{Type: typ, Code: code}, Payload: quote}
}

func echo(typ uint8, id uint16) *ht.ICMPHeader {
	return &ht.ICMPHeader{Type: typ, Rest: uint32(id)<<16 | 1}
}

// TestProgramVerdicts runs the program with BPF_PROG_TEST_RUN on golden
// frames. Its XSKMAP is empty here, so a frame it would redirect gives
// XDP_DROP (the fallback of bpf_redirect_map: ours, but no socket on the
// queue); TestProgramRedirect checks the redirect itself with a socket.
func TestProgramVerdicts(t *testing.T) {
	p := loadTestProgram(t)
	const mine, pass = ActionDrop, ActionPass
	tcp := func(port uint16) *ht.TCPHeader { return &ht.TCPHeader{SrcPort: 443, DstPort: port, Flags: 0x12} }
	udp := func(port uint16) *ht.UDPHeader { return &ht.UDPHeader{SrcPort: 53, DstPort: port} }
	outTCP := func(port uint16) ht.Frame {
		return ht.Frame{TCP: &ht.TCPHeader{SrcPort: port, DstPort: 443, Flags: 0x02}}
	}
	outUDP := func(port uint16) ht.Frame { return ht.Frame{UDP: &ht.UDPHeader{SrcPort: port, DstPort: 53}} }
	arp := func(op uint16, target netip.Addr) []byte {
		return ht.Frame{Dst: nicMAC, Src: peerMAC, ARP: &header.ARPFields{Op: op, SenderMAC: peerMAC,
			SenderIP: remote, TargetMAC: nicMAC, TargetIP: target}}.Build()
	}
	full := in(natAddr, ht.Frame{TCP: tcp(61000), Payload: make([]byte, 100)})
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Action
	}{
		// Ours: the NAT's flows.
		{"tcp port min", in(natAddr, ht.Frame{TCP: tcp(testPortMin)}), mine},
		{"tcp port max", in(natAddr, ht.Frame{TCP: tcp(testPortMax)}), mine},
		{"tcp with payload", full, mine},
		{"udp in range", in(natAddr, ht.Frame{UDP: udp(61500), Payload: []byte("reply")}), mine},
		{"ipv4 options, tcp in range", in(natAddr, ht.Frame{IPv4: &ht.IPv4Header{Options: []byte{1, 1, 1, 0}}, TCP: tcp(61001)}), mine},
		{"dont fragment set", in(natAddr, ht.Frame{IPv4: &ht.IPv4Header{Flags: header.IPv4FlagDF}, UDP: udp(61002)}), mine},
		{"icmp echo reply, id in range", in(natAddr, ht.Frame{ICMP: echo(0, 61234)}), mine},
		{"port unreachable quoting udp", in(natAddr, icmpError(3, 3, quoted(natAddr, outUDP(61500)))), mine},
		{"frag needed quoting tcp", in(natAddr, icmpError(3, 4, quoted(natAddr, outTCP(61999)))), mine},
		{"time exceeded quoting tcp", in(natAddr, icmpError(11, 0, quoted(natAddr, outTCP(61000)))), mine},
		{"parameter problem quoting udp", in(natAddr, icmpError(12, 0, quoted(natAddr, outUDP(61003)))), mine},
		{"time exceeded quoting echo request", in(natAddr, icmpError(11, 0, quoted(natAddr, ht.Frame{ICMP: echo(8, 61004)}))), mine},

		// The host's: other ports, addresses, protocols.
		{"tcp port below range", in(natAddr, ht.Frame{TCP: tcp(testPortMin - 1)}), pass},
		{"tcp port above range", in(natAddr, ht.Frame{TCP: tcp(testPortMax + 1)}), pass},
		{"tcp ssh", in(natAddr, ht.Frame{TCP: tcp(22)}), pass},
		{"udp port below range", in(natAddr, ht.Frame{UDP: udp(123)}), pass},
		{"udp other address", in(otherNIC, ht.Frame{UDP: udp(61500)}), pass},
		{"tcp other address", in(otherNIC, ht.Frame{TCP: tcp(61500)}), pass},
		{"udp broadcast", in(netip.MustParseAddr("255.255.255.255"), ht.Frame{UDP: udp(61500)}), pass},
		{"first fragment", in(natAddr, ht.Frame{IPv4: &ht.IPv4Header{Flags: header.IPv4FlagMF}, UDP: udp(61500)}), pass},
		{"later fragment", in(natAddr, ht.Frame{IPv4: &ht.IPv4Header{FragOffset: 1480, Protocol: 17}, Payload: []byte{0xee, 0x48, 0xee, 0x48, 0, 8, 0, 0}}), pass},
		{"vlan tagged", func() []byte {
			f := ht.Frame{Dst: nicMAC, Src: peerMAC, VLAN: true, VLANTCI: 5, IPv4: &ht.IPv4Header{Src: remote, Dst: natAddr}, TCP: tcp(61000)}
			return f.Build()
		}(), pass},
		{"ipv6 udp", ht.Frame{Dst: nicMAC, Src: peerMAC, IPv6: &ht.IPv6Header{Src: netip.MustParseAddr("2001:db8::9"),
			Dst: netip.MustParseAddr("2001:db8::2")}, UDP: udp(61500)}.Build(), pass},
		{"gre", in(natAddr, ht.Frame{IPv4: &ht.IPv4Header{Protocol: 47}, Payload: make([]byte, 8)}), pass},
		{"icmp echo request, id in range", in(natAddr, ht.Frame{ICMP: echo(8, 61234)}), pass},
		{"icmp echo reply, id out of range", in(natAddr, ht.Frame{ICMP: echo(0, 1)}), pass},
		{"icmp timestamp reply", in(natAddr, ht.Frame{ICMP: &ht.ICMPHeader{Type: 14, Rest: 61234 << 16}, Payload: make([]byte, 12)}), pass},
		{"error quoting another source", in(natAddr, icmpError(3, 3, quoted(otherNIC, outUDP(61500)))), pass},
		{"error quoting a port out of range", in(natAddr, icmpError(3, 3, quoted(natAddr, outUDP(40000)))), pass},
		{"error quoting an echo reply", in(natAddr, icmpError(3, 3, quoted(natAddr, ht.Frame{ICMP: echo(0, 61004)}))), pass},
		{"error quoting a later fragment", in(natAddr, icmpError(3, 3, quoted(natAddr,
			ht.Frame{IPv4: &ht.IPv4Header{FragOffset: 8, Protocol: 17}, Payload: []byte{0xee, 0x48, 0, 53, 0, 8, 0, 0}}))), pass},
		{"error quoting truncated", in(natAddr, icmpError(3, 3, quoted(natAddr, outUDP(61500))[:24])), pass},
		{"error quoting nothing", in(natAddr, icmpError(3, 3, nil)), pass},
		{"arp request for the nic", arp(header.ARPRequest, natAddr), pass},
		{"arp request for another", arp(header.ARPRequest, otherNIC), pass},
		{"arp reply to the nic", arp(header.ARPReply, natAddr), pass},

		// Malformed or short: the kernel's to judge.
		// (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.)
		{"ethernet header alone", full[:14], pass},
		{"ipv4 header cut", full[:14+19], pass},
		{"tcp ports cut", full[:14+20+3], pass},
		{"ipv4 version 5", func() []byte { b := clone(full); b[14] = 0x55; return b }(), pass},
		{"ipv4 ihl 4", func() []byte { b := clone(full); b[14] = 0x44; return b }(), pass},
		{"ihl beyond the frame", func() []byte { b := clone(full[:14+24]); b[14] = 0x4f; return b }(), pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Run(tc.frame)
			require.NoError(t, err)
			require.Equal(t, tc.want, got, "mine is %v (no socket), pass is %v", mine, pass)
		})
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestLoadProgramOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  ProgramOptions
	}{
		{"no address", ProgramOptions{PortMin: 1, PortMax: 2}},
		{"ipv6 address", ProgramOptions{Addr: netip.MustParseAddr("2001:db8::1"), PortMin: 1, PortMax: 2}},
		{"port min 0", ProgramOptions{Addr: natAddr, PortMin: 0, PortMax: 2}},
		{"min above max", ProgramOptions{Addr: natAddr, PortMin: 3, PortMax: 2}},
		{"too many queues", ProgramOptions{Addr: natAddr, PortMin: 1, PortMax: 2, Queues: maxQueues + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadProgram(tc.opt)
			require.Error(t, err)
		})
	}
}
