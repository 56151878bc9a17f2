package headertest

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// A Check is one assertion CheckIPv4 makes after the checksums, or
// (UDPChecksumOptional, Fragments) a change to what it asserts about them.
type Check struct {
	fn  func(t testing.TB, eth header.Ethernet, ip header.IPv4)
	opt options
}

// options are what UDPChecksumOptional and Fragments change.
type options struct {
	udpSumOptional bool
	fragments      bool
}

// TransportCheck is one assertion about the transport header and payload
// of a packet; TCP, UDP and ICMP run them.
type TransportCheck func(t testing.TB, proto uint8, seg []byte)

// CheckIPv4 checks that frame is an Ethernet frame (with or without an
// 802.1Q tag) that carries IPv4, verifies the packet as CheckIPv4Packet does
// and returns the IPv4 view.
func CheckIPv4(t testing.TB, frame []byte, checks ...Check) header.IPv4 {
	t.Helper()
	eth := header.Ethernet(frame)
	require.True(t, eth.IsValid(), "Ethernet header")
	require.Equal(t, header.EtherTypeIPv4, eth.EtherType(), "EtherType")
	ip := header.IPv4(eth.Payload())
	checkIPv4(t, eth, ip, checks)
	return ip
}

// CheckIPv4Packet checks that b is an IPv4 packet, not a fragment, whose
// header checksum verifies, whose total length fits in b, and whose
// transport checksum (TCP, UDP, ICMP) verifies; the checksums of the
// datagram an ICMP error quotes are verified the same way when the quote is
// complete. Then it runs checks in order. It returns the IPv4 view.
func CheckIPv4Packet(t testing.TB, b []byte, checks ...Check) header.IPv4 {
	t.Helper()
	ip := header.IPv4(b)
	checkIPv4(t, nil, ip, checks)
	return ip
}

func checkIPv4(t testing.TB, eth header.Ethernet, ip header.IPv4, checks []Check) {
	t.Helper()
	var opt options
	for _, c := range checks {
		opt.udpSumOptional = opt.udpSumOptional || c.opt.udpSumOptional
		opt.fragments = opt.fragments || c.opt.fragments
	}
	checkSums(t, ip, opt)
	for _, c := range checks {
		if c.fn != nil {
			c.fn(t, eth, ip)
		}
	}
}

// checkSums verifies every checksum of the IPv4 packet ip.
func checkSums(t testing.TB, ip header.IPv4, opt options) {
	t.Helper()
	require.True(t, ip.IsValid(), "IPv4 header")
	require.Equal(t, uint16(0xffff), RefChecksum(ip[:ip.HeaderLen()], 0), "IPv4 header checksum")
	require.LessOrEqual(t, int(ip.TotalLength()), len(ip), "IPv4 total length")
	if ip.IsFragment() {
		require.True(t, opt.fragments, "IPv4 fragment")
		return // the transport checksum covers the reassembled datagram
	}
	l := ip[ip.HeaderLen():ip.TotalLength()]
	switch ip.Protocol() {
	case header.ProtoTCP:
		require.Equal(t, uint16(0xffff), RefChecksum(l, refPseudo(header.ProtoTCP, ip.Src(), ip.Dst(), len(l))), "TCP checksum")
	case header.ProtoUDP:
		if opt.udpSumOptional && len(l) >= header.UDPSize && header.UDP(l).Checksum() == 0 {
			return
		}
		require.Equal(t, uint16(0xffff), RefChecksum(l, refPseudo(header.ProtoUDP, ip.Src(), ip.Dst(), len(l))), "UDP checksum")
	case header.ProtoICMP:
		require.Equal(t, uint16(0xffff), RefChecksum(l, 0), "ICMP checksum")
		if ic := header.ICMPv4(l); ic.IsValid() && ic.IsError() {
			emb := header.IPv4(ic.Payload())
			if emb.IsValid() && int(emb.TotalLength()) == len(emb) {
				checkSums(t, emb, opt)
			}
		}
	}
}

// UDPChecksumOptional lets a UDP checksum be zero, "no checksum" (RFC 768):
// a non-zero one must still verify. By default a zero checksum fails.
func UDPChecksumOptional() Check { return Check{opt: options{udpSumOptional: true}} }

// Fragments lets the packet be a fragment (MF set or a non-zero offset),
// whose transport checksum is not checked: it covers the reassembled
// datagram. By default a fragment fails.
func Fragments() Check { return Check{opt: options{fragments: true}} }

func check(fn func(t testing.TB, eth header.Ethernet, ip header.IPv4)) Check { return Check{fn: fn} }

// EthDst checks the Ethernet destination address.
func EthDst(m header.MAC) Check {
	return check(func(t testing.TB, eth header.Ethernet, _ header.IPv4) {
		t.Helper()
		require.NotNil(t, eth, "Ethernet header")
		require.Equal(t, m, eth.Dst(), "Ethernet destination")
	})
}

// EthSrc checks the Ethernet source address.
func EthSrc(m header.MAC) Check {
	return check(func(t testing.TB, eth header.Ethernet, _ header.IPv4) {
		t.Helper()
		require.NotNil(t, eth, "Ethernet header")
		require.Equal(t, m, eth.Src(), "Ethernet source")
	})
}

// Src checks the IPv4 source address.
func Src(a netip.Addr) Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, a, ip.Src(), "IPv4 source")
	})
}

// Dst checks the IPv4 destination address.
func Dst(a netip.Addr) Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, a, ip.Dst(), "IPv4 destination")
	})
}

// TTL checks the time to live.
func TTL(v uint8) Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, v, ip.TTL(), "TTL")
	})
}

// Protocol checks the protocol number.
func Protocol(p uint8) Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, p, ip.Protocol(), "IPv4 protocol")
	})
}

// ExactLength checks that the packet ends where its total length says: no
// padding or trailing bytes after it.
func ExactLength() Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, len(ip), int(ip.TotalLength()), "IPv4 total length is the packet's length")
	})
}

// TCP checks that the packet carries a complete TCP header and runs checks
// on it.
func TCP(checks ...TransportCheck) Check {
	return transport(header.ProtoTCP, func(seg []byte) bool { return header.TCP(seg).IsValid() }, checks)
}

// UDP checks that the packet carries a UDP header whose length is the
// datagram's, and runs checks on it.
func UDP(checks ...TransportCheck) Check {
	return transport(header.ProtoUDP, func(seg []byte) bool {
		u := header.UDP(seg)
		return u.IsValid() && int(u.Length()) == len(u)
	}, checks)
}

// ICMP checks that the packet carries an ICMPv4 header and runs checks on
// it.
func ICMP(checks ...TransportCheck) Check {
	return transport(header.ProtoICMP, func(seg []byte) bool { return header.ICMPv4(seg).IsValid() }, checks)
}

func transport(proto uint8, valid func([]byte) bool, checks []TransportCheck) Check {
	return check(func(t testing.TB, _ header.Ethernet, ip header.IPv4) {
		t.Helper()
		require.Equal(t, proto, ip.Protocol(), "IPv4 protocol")
		seg := ip.Payload()
		require.True(t, valid(seg), "transport header of protocol %d", proto)
		for _, c := range checks {
			c(t, proto, seg)
		}
	})
}

// SrcPort checks the TCP or UDP source port.
func SrcPort(p uint16) TransportCheck {
	return func(t testing.TB, _ uint8, seg []byte) {
		t.Helper()
		require.Equal(t, p, header.UDP(seg).SrcPort(), "source port")
	}
}

// DstPort checks the TCP or UDP destination port.
func DstPort(p uint16) TransportCheck {
	return func(t testing.TB, _ uint8, seg []byte) {
		t.Helper()
		require.Equal(t, p, header.UDP(seg).DstPort(), "destination port")
	}
}

// TCPFlags checks the TCP flags.
func TCPFlags(f uint8) TransportCheck {
	return func(t testing.TB, _ uint8, seg []byte) {
		t.Helper()
		require.Equal(t, f, header.TCP(seg).Flags(), "TCP flags")
	}
}

// ICMPType checks the ICMP type and code.
func ICMPType(typ, code uint8) TransportCheck {
	return func(t testing.TB, _ uint8, seg []byte) {
		t.Helper()
		ic := header.ICMPv4(seg)
		require.Equal(t, [2]uint8{typ, code}, [2]uint8{ic.Type(), ic.Code()}, "ICMP type and code")
	}
}

// Payload checks the bytes after the transport header.
func Payload(want []byte) TransportCheck {
	return func(t testing.TB, proto uint8, seg []byte) {
		t.Helper()
		var got []byte
		switch proto {
		case header.ProtoTCP:
			got = header.TCP(seg).Payload()
		case header.ProtoUDP:
			got = seg[header.UDPSize:]
		default:
			got = seg[header.ICMPv4MinSize:]
		}
		require.Equal(t, want, got, "transport payload")
	}
}
