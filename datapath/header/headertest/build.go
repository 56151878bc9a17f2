package headertest

import (
	"fmt"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Frame describes an Ethernet frame for Build, or an IP packet (everything
// after the Ethernet header) for Packet. At most one network layer (ARP,
// IPv4, IPv6) and one transport (TCP, UDP, ICMP) may be set; Payload
// follows the innermost header that is.
type Frame struct {
	Dst, Src  header.MAC
	VLAN      bool   // write an 802.1Q tag
	VLANTCI   uint16 // tag control information when VLAN is set
	EtherType uint16 // zero: from the network layer (IPv4 when there is none)

	ARP  *header.ARPFields
	IPv4 *IPv4Header
	IPv6 *IPv6Header

	TCP  *TCPHeader
	UDP  *UDPHeader
	ICMP *ICMPHeader

	Payload []byte
}

// IPv4Header is the IPv4 header of a Frame. Build fills the version, IHL, total
// length and header checksum.
type IPv4Header struct {
	TOS        uint8
	ID         uint16
	Flags      uint16 // header.IPv4FlagDF, header.IPv4FlagMF
	FragOffset uint16 // in bytes, a multiple of 8
	TTL        uint8  // zero: 64
	Protocol   uint8  // zero: from the transport
	Src, Dst   netip.Addr
	Options    []byte // padded by the caller to a multiple of 4
}

// IPv6Header is the fixed IPv6 header of a Frame. Build fills the payload length.
type IPv6Header struct {
	TrafficClass uint8
	FlowLabel    uint32
	NextHeader   uint8 // zero: from the transport
	HopLimit     uint8 // zero: 64
	Src, Dst     netip.Addr
}

// TCPHeader is the TCP header of a Frame. Build fills the data offset and, as
// Csum says, the checksum.
type TCPHeader struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	Options          []byte // padded by the caller to a multiple of 4
	Csum             Csum
}

// UDPHeader is the UDP header of a Frame. Build fills the length and, as Csum
// says, the checksum.
type UDPHeader struct {
	SrcPort, DstPort uint16
	Csum             Csum
}

// ICMPHeader is the ICMPv4 header of a Frame; Build fills the checksum.
type ICMPHeader struct {
	Type, Code uint8
	Rest       uint32 // bytes 4-7: identifier<<16|sequence, MTU, pointer<<24
}

// Csum says what Build writes into a TCP or UDP checksum field.
type Csum uint8

const (
	// CsumFull is the correct checksum. A UDP checksum that computes to
	// zero is sent as 0xffff (RFC 768).
	CsumFull Csum = iota
	// CsumZero leaves the field zero: UDP without a checksum (RFC 768), or
	// a TCP checksum that is wrong on purpose.
	CsumZero
	// CsumPartial is the pseudo-header sum (with the transport length), as
	// a frame with VIRTIO_NET_HDR_F_NEEDS_CSUM carries it (virtio 1.2
	// §5.1.6.2): the device completes it over the transport from CsumStart.
	CsumPartial
	// CsumPartialNoLength is the pseudo-header sum with length 0, as some
	// TSO senders seed it (the segmenter puts each segment's length in).
	CsumPartialNoLength
)

// layout returns the lengths of the headers Build writes (Ethernet,
// network, transport) and the IP protocol number of the transport.
func (f *Frame) layout() (l2, l3, l4 int, proto uint8) {
	l2 = header.EthernetMinSize
	if f.VLAN {
		l2 = header.EthernetMaxSize
	}
	switch {
	case f.ARP != nil:
		l3 = header.ARPSize
	case f.IPv4 != nil:
		l3 = header.IPv4MinSize + len(f.IPv4.Options)
	case f.IPv6 != nil:
		l3 = header.IPv6FixedSize
	}
	switch {
	case f.TCP != nil:
		l4, proto = header.TCPMinSize+len(f.TCP.Options), header.ProtoTCP
	case f.UDP != nil:
		l4, proto = header.UDPSize, header.ProtoUDP
	case f.ICMP != nil:
		l4, proto = header.ICMPv4MinSize, header.ProtoICMP
	}
	return l2, l3, l4, proto
}

// Build returns the frame: Ethernet header, then Packet.
func (f Frame) Build() []byte {
	et := f.EtherType
	if et == 0 {
		switch {
		case f.ARP != nil:
			et = header.EtherTypeARP
		case f.IPv6 != nil:
			et = header.EtherTypeIPv6
		default:
			et = header.EtherTypeIPv4
		}
	}
	l2, _, _, _ := f.layout()
	p := f.Packet()
	b := make([]byte, l2+len(p))
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: f.Dst, Src: f.Src, VLAN: f.VLAN, VLANTCI: f.VLANTCI, EtherType: et})
	copy(b[l2:], p)
	return b
}

// Packet returns what follows the Ethernet header: the network header, the
// transport header and the payload, with lengths and checksums filled in.
func (f Frame) Packet() []byte {
	_, l3, l4, proto := f.layout()
	if f.ARP != nil && l4 != 0 {
		panic("headertest: a transport header after ARP")
	}
	b := make([]byte, l3+l4+len(f.Payload))
	copy(b[l3+l4:], f.Payload)
	seg := b[l3:]
	switch {
	case f.ARP != nil:
		header.ARP(b).Encode(f.ARP)
	case f.IPv4 != nil:
		ip := f.IPv4
		f.transport(seg, header.PseudoHeaderChecksum(proto, ip.Src, ip.Dst, uint16(len(seg))),
			header.PseudoHeaderChecksum(proto, ip.Src, ip.Dst, 0))
		if ip.Protocol != 0 {
			proto = ip.Protocol
		}
		header.IPv4(b).Encode(&header.IPv4Fields{TOS: ip.TOS, TotalLength: uint16(len(b)), ID: ip.ID, Flags: ip.Flags,
			FragOffset: ip.FragOffset, TTL: or64(ip.TTL), Protocol: proto, Src: mustIs4(ip.Src), Dst: mustIs4(ip.Dst), Options: ip.Options})
	case f.IPv6 != nil:
		ip := f.IPv6
		f.transport(seg, header.PseudoHeaderChecksum(proto, ip.Src, ip.Dst, uint16(len(seg))),
			header.PseudoHeaderChecksum(proto, ip.Src, ip.Dst, 0))
		next := proto
		if ip.NextHeader != 0 {
			next = ip.NextHeader
		}
		header.IPv6(b).Encode(&header.IPv6Fields{TrafficClass: ip.TrafficClass, FlowLabel: ip.FlowLabel,
			PayloadLength: uint16(len(seg)), NextHeader: next, HopLimit: or64(ip.HopLimit), Src: ip.Src, Dst: ip.Dst})
	default:
		if l4 != 0 {
			panic("headertest: a transport header without an IP header")
		}
	}
	return b
}

// transport writes the transport header into seg (header, then the payload
// already in place) with its checksum; pseudo is the pseudo-header sum with
// the transport length, pseudo0 the one with length 0.
func (f *Frame) transport(seg []byte, pseudo, pseudo0 uint16) {
	switch {
	case f.TCP != nil:
		p := f.TCP
		th := header.TCP(seg)
		th.Encode(&header.TCPFields{SrcPort: p.SrcPort, DstPort: p.DstPort, Seq: p.Seq, Ack: p.Ack, Flags: p.Flags,
			Window: p.Window, Options: p.Options})
		th.SetChecksum(fill(p.Csum, seg, pseudo, pseudo0, false))
	case f.UDP != nil:
		u := header.UDP(seg)
		u.Encode(&header.UDPFields{SrcPort: f.UDP.SrcPort, DstPort: f.UDP.DstPort, Length: uint16(len(seg))})
		u.SetChecksum(fill(f.UDP.Csum, seg, pseudo, pseudo0, true))
	case f.ICMP != nil:
		header.ICMPv4(seg).Encode(&header.ICMPv4Fields{Type: f.ICMP.Type, Code: f.ICMP.Code, Rest: f.ICMP.Rest}, seg[header.ICMPv4MinSize:])
	}
}

// fill returns the value of a transport checksum field (zero while seg is
// summed) as c says.
func fill(c Csum, seg []byte, pseudo, pseudo0 uint16, udp bool) uint16 {
	switch c {
	case CsumZero:
		return 0
	case CsumPartial:
		return pseudo
	case CsumPartialNoLength:
		return pseudo0
	}
	s := ^header.Checksum(seg, pseudo)
	if udp && s == 0 {
		return 0xffff
	}
	return s
}

// BuildGSO returns the frame as a driver hands a GSO frame to a virtio-net
// device (virtio 1.2 §5.1.6.2): one super-frame with correct headers, and
// the header that asks for segments of mss payload bytes of gsoType
// (virtio.NetHdrGSOTCPv4, TCPv6, UDP or UDPL4) with NEEDS_CSUM from the
// transport header. A transport checksum left at CsumFull is written as
// CsumPartial, what NEEDS_CSUM asks for.
func (f Frame) BuildGSO(gsoType uint8, mss uint16) ([]byte, virtio.NetHdr) {
	var off uint16
	switch {
	case f.TCP != nil:
		t := *f.TCP
		if t.Csum == CsumFull {
			t.Csum = CsumPartial
		}
		f.TCP, off = &t, header.TCPChecksumOffset
	case f.UDP != nil:
		u := *f.UDP
		if u.Csum == CsumFull {
			u.Csum = CsumPartial
		}
		f.UDP, off = &u, header.UDPChecksumOffset
	default:
		panic(fmt.Sprintf("headertest: GSO type %d without TCP or UDP", gsoType))
	}
	l2, l3, l4, _ := f.layout()
	h := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: gsoType, GSOSize: mss,
		CsumStart: uint16(l2 + l3), CsumOffset: off, HdrLen: uint16(l2 + l3 + l4)}
	return f.Build(), h
}

// HeaderLen returns the length of the frame's headers (Ethernet, network,
// transport): where Payload starts in what Build returns.
func (f Frame) HeaderLen() int {
	l2, l3, l4, _ := f.layout()
	return l2 + l3 + l4
}

func or64(v uint8) uint8 {
	if v == 0 {
		return 64
	}
	return v
}

func mustIs4(a netip.Addr) netip.Addr {
	if !a.Is4() {
		panic(fmt.Sprintf("headertest: %v in an IPv4 header", a))
	}
	return a
}
