package header

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// refChecksum is a byte-at-a-time RFC 1071 sum, the reference for Checksum.
func refChecksum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		init := uint16(r.Uint32())
		require.Equal(t, refChecksum(b, init), Checksum(b, init), "len %d", n)
	}
	all := make([]byte, 1000)
	for i := range all {
		all[i] = 0xff
	}
	require.Equal(t, refChecksum(all, 0xffff), Checksum(all, 0xffff))
}

func TestRFC1071Example(t *testing.T) {
	// RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	require.Equal(t, uint16(0xddf2), Checksum(b, 0))
}

// TestIncrementalUpdate checks RFC 1624 eqn. 3 against full recomputation on
// random data, for 16- and 32-bit fields, complemented and partial sums.
func TestIncrementalUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		n := 4 + 2*r.IntN(30)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(8) == 0 {
			clear(b) // exercise the zero edge
			b[0] = 1
		}
		sum := Checksum(b, 0)
		hc := ^sum
		off := 2 * r.IntN(n/2-1)
		if r.IntN(2) == 0 {
			old := binary.BigEndian.Uint16(b[off:])
			nw := uint16(r.Uint32())
			binary.BigEndian.PutUint16(b[off:], nw)
			if Checksum(b, 0) == 0 {
				continue
			}
			require.Equal(t, ^Checksum(b, 0), UpdateChecksum16(hc, old, nw))
			require.Equal(t, Checksum(b, 0), UpdateSum16(sum, old, nw))
		} else {
			old := binary.BigEndian.Uint32(b[off:])
			nw := r.Uint32()
			if r.IntN(4) == 0 {
				nw = 0
			}
			binary.BigEndian.PutUint32(b[off:], nw)
			if Checksum(b, 0) == 0 {
				continue // all-zero data: the one case where +0 and -0 differ
			}
			require.Equal(t, ^Checksum(b, 0), UpdateChecksum32(hc, old, nw))
			require.Equal(t, Checksum(b, 0), UpdateSum32(sum, old, nw))
		}
	}
}

func TestEthernet(t *testing.T) {
	b := make([]byte, 64)
	dst, src := MAC{1, 2, 3, 4, 5, 6}, MAC{0x52, 0x54, 0, 0, 0, 1}
	n := Ethernet(b).Encode(&EthernetFields{Dst: dst, Src: src, EtherType: EtherTypeIPv4})
	require.Equal(t, EthernetMinSize, n)
	e := Ethernet(b)
	require.True(t, e.IsValid())
	require.Equal(t, dst, e.Dst())
	require.Equal(t, src, e.Src())
	require.False(t, e.HasVLAN())
	require.Equal(t, EtherTypeIPv4, e.EtherType())
	require.Equal(t, 50, len(e.Payload()))

	n = e.Encode(&EthernetFields{Dst: BroadcastMAC, Src: src, VLAN: true, VLANTCI: 0x2064, EtherType: EtherTypeARP})
	require.Equal(t, EthernetMaxSize, n)
	require.True(t, e.HasVLAN())
	require.Equal(t, uint16(0x064), e.VLANID())
	require.Equal(t, EtherTypeARP, e.EtherType())
	require.True(t, e.Dst().IsBroadcast())
	require.True(t, e.Dst().IsMulticast())
	require.Equal(t, "ff:ff:ff:ff:ff:ff", e.Dst().String())
	e.SetEtherType(EtherTypeIPv6)
	require.Equal(t, EtherTypeIPv6, e.EtherType())
	require.False(t, Ethernet(b[:16]).IsValid())
	require.False(t, Ethernet(b[:13]).IsValid())
}

func TestARP(t *testing.T) {
	b := make([]byte, ARPSize)
	f := ARPFields{Op: ARPReply, SenderMAC: MAC{1, 2, 3, 4, 5, 6}, SenderIP: netip.MustParseAddr("192.168.127.1"),
		TargetMAC: MAC{6, 5, 4, 3, 2, 1}, TargetIP: netip.MustParseAddr("192.168.127.2")}
	ARP(b).Encode(&f)
	a := ARP(b)
	require.True(t, a.IsValid())
	require.Equal(t, f.Op, a.Op())
	require.Equal(t, f.SenderMAC, a.SenderMAC())
	require.Equal(t, f.SenderIP, a.SenderIP())
	require.Equal(t, f.TargetMAC, a.TargetMAC())
	require.Equal(t, f.TargetIP, a.TargetIP())
	b[5] = 16
	require.False(t, a.IsValid())
}

func TestIPv4TCPUDPICMP(t *testing.T) {
	src, dst := netip.MustParseAddr("192.168.127.2"), netip.MustParseAddr("203.0.113.9")
	b := make([]byte, 200)
	opts := []byte{1, 1, 1, 0} // NOP NOP NOP EOL
	hl := IPv4(b).Encode(&IPv4Fields{TotalLength: 100, ID: 7, Flags: IPv4FlagMF, FragOffset: 16, TTL: 64,
		Protocol: ProtoTCP, Src: src, Dst: dst, Options: opts})
	ip := IPv4(b)
	require.Equal(t, 24, hl)
	require.True(t, ip.IsValid())
	require.True(t, ip.IsChecksumValid())
	require.Equal(t, ip.ComputeChecksum(), ip.Checksum())
	require.Equal(t, src, ip.Src())
	require.Equal(t, dst, ip.Dst())
	require.Equal(t, uint16(100), ip.TotalLength())
	require.Equal(t, 16, ip.FragmentOffset())
	require.True(t, ip.MoreFragments())
	require.True(t, ip.IsFragment())
	require.False(t, ip.DontFragment())
	require.Equal(t, opts, ip.Options())
	require.Equal(t, 76, len(ip.Payload()))
	require.Equal(t, uint8(64), ip.TTL())
	require.Equal(t, uint16(7), ip.ID())

	seg := ip.Payload()
	th := TCP(seg)
	n := th.Encode(&TCPFields{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 2, Flags: TCPFlagSYN | TCPFlagACK, Window: 65535,
		Options: []byte{2, 4, 5, 0xb4}})
	require.Equal(t, 24, n)
	require.True(t, th.IsValid())
	th.SetChecksum(^Checksum(seg, ip.PseudoHeaderChecksum(ProtoTCP, uint16(len(seg)))))
	require.Equal(t, uint16(0xffff), Checksum(seg, PseudoHeaderChecksum(ProtoTCP, src, dst, uint16(len(seg)))))
	require.Equal(t, uint16(40000), th.SrcPort())
	require.Equal(t, uint16(443), th.DstPort())
	require.Equal(t, TCPFlagSYN|TCPFlagACK, th.Flags())
	require.Equal(t, 52, len(th.Payload()))

	u := UDP(seg)
	u.Encode(&UDPFields{SrcPort: 53, DstPort: 5353, Length: 30})
	require.True(t, u.IsValid())
	require.Equal(t, 22, len(u.Payload()))
	require.Equal(t, uint16(53), u.SrcPort())

	ic := ICMPv4(seg[:20])
	n = ic.Encode(&ICMPv4Fields{Type: ICMPv4Echo, Rest: 0x12340001}, []byte("hello world!"))
	require.Equal(t, 20, n)
	require.True(t, ic.IsEcho())
	require.False(t, ic.IsError())
	require.Equal(t, uint16(0x1234), ic.Ident())
	require.Equal(t, uint16(1), ic.Seq())
	require.Equal(t, ic.ComputeChecksum(), ic.Checksum())
	require.Equal(t, uint16(0xffff), Checksum(ic, 0))

	// An error built in place around a datagram.
	buf := make([]byte, 100)
	copy(buf[28:], b[:hl+8])
	ICMPv4(buf[20:]).Encode(&ICMPv4Fields{Type: ICMPv4DstUnreachable, Code: ICMPv4FragNeeded, Rest: 1400}, buf[28:28+hl+8])
	e := ICMPv4(buf[20 : 28+hl+8])
	require.True(t, e.IsError())
	require.Equal(t, uint16(1400), e.MTU())
	require.True(t, IPv4(e.Payload()).IsValid())
	require.Equal(t, uint16(0xffff), Checksum(e, 0))

	require.False(t, IPv4(b[:23]).IsValid())
	b[0] = 0x44
	require.False(t, ip.IsValid())
}

func TestIPv6(t *testing.T) {
	b := make([]byte, 60)
	src, dst := netip.MustParseAddr("fd00::2"), netip.MustParseAddr("2001:db8::1")
	IPv6(b).Encode(&IPv6Fields{TrafficClass: 0xb8, FlowLabel: 0x12345, PayloadLength: 20, NextHeader: ProtoUDP, HopLimit: 64, Src: src, Dst: dst})
	v := IPv6(b)
	require.True(t, v.IsValid())
	require.Equal(t, uint8(0xb8), v.TrafficClass())
	require.Equal(t, uint32(0x12345), v.FlowLabel())
	require.Equal(t, ProtoUDP, v.NextHeader())
	require.Equal(t, uint8(64), v.HopLimit())
	require.Equal(t, src, v.Src())
	require.Equal(t, dst, v.Dst())
	require.Equal(t, 20, len(v.Payload()))
	require.NotEqual(t, PseudoHeaderChecksum(ProtoUDP, src, dst, 20), PseudoHeaderChecksum(ProtoUDP, dst, dst, 20))
}

func TestZeroAllocs(t *testing.T) {
	b := make([]byte, 128)
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	n := testing.AllocsPerRun(100, func() {
		hl := IPv4(b).Encode(&IPv4Fields{TotalLength: 48, TTL: 64, Protocol: ProtoUDP, Src: src, Dst: dst})
		u := UDP(b[hl:])
		u.Encode(&UDPFields{SrcPort: 1, DstPort: 2, Length: 28})
		u.SetChecksum(^Checksum(b[hl:48], PseudoHeaderChecksum(ProtoUDP, src, dst, 28)))
		_ = IPv4(b).IsValid() && IPv4(b).Src() == src && UDP(b[hl:]).IsValid()
	})
	require.Zero(t, n)
}
