package datapath

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Offloaded frames from frame-socket peers.
//
// A frame socket carries bare Ethernet frames: no virtio-net header says
// whether a frame is a GSO super-frame or carries a partial checksum. Yet
// libkrun sends exactly those when krunkit runs a virtio-net device with
// offloading=on: krunkit (src/virtio.rs) then offers the guest
// COMPAT_NET_FEATURES (CSUM, GUEST_CSUM, GUEST_TSO4, GUEST_UFO, HOST_TSO4,
// HOST_UFO), and libkrun's unixgram and unixstream backends
// (src/devices/src/virtio/net/unixgram.rs, unixstream.rs: write_frame)
// send what the guest put after its virtio-net header, with the header
// dropped. A Linux guest then transmits TCP segments of up to 64 KiB whose
// checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL, Linux
// include/net/tcp.h __tcp_v4_send_check), and UDP datagrams larger than the
// MTU, unfragmented. In the other direction libkrun gives the guest a
// zeroed virtio-net header (read_frame: write_virtio_net_hdr), so a frame
// it receives must carry complete checksums and fit the MTU.
//
// What a frame socket accepts, and how it is recognised (inboundOffload),
// for an Ethernet frame with at most one VLAN tag carrying IPv4 without
// fragmentation or IPv6 without extension headers, and TCP or UDP:
//
//   - a super-frame: an IP packet longer than the port's MTU. A TCP one
//     becomes GSO_TCPV4/GSO_TCPV6 (ECN with CWR set) with gso_size the MTU
//     less the IP and TCP headers; a UDP one becomes GSO_UDP (UFO) with
//     gso_size the MTU less the IP header (and, for IPv6, the fragment
//     header). Its checksum field is rewritten to the pseudo-header sum
//     and the frame marked NEEDS_CSUM: whatever the sender left there, the
//     checksums of the segments come out right.
//   - a partial checksum: a packet whose TCP or UDP checksum field holds
//     exactly the one's complement sum of its pseudo-header (RFC 9293
//     §3.1, RFC 768, RFC 8200 §8.1) becomes NEEDS_CSUM with csum_start at
//     the transport header (virtio 1.2 §5.1.6.2). A packet with a complete
//     checksum that happens to equal that sum (one in 65536) is completed
//     to the same value, so the guess costs nothing when it is wrong.
//
// The switch then segments or completes them for every receiver that does
// not take the offload (segment.go, offload.go), exactly as for a vhost-user
// guest's frames. Any other frame longer than the MTU is dropped
// (drop_too_big): nothing downstream could take it.

// Offload outcome of inboundOffload.
const (
	offloadNone = iota // an ordinary frame, no metadata
	offloadSet         // metadata set in the header
	offloadDrop        // too big and not segmentable: drop
)

// inboundOffload looks at a frame a frame-socket peer sent and sets h to
// its offload metadata (see above), rewriting the checksum field of a
// super-frame in place. mtu is the largest IP packet the port passes on
// unsegmented. h must be zero on entry.
func inboundOffload(frame []byte, mtu int, h *virtio.NetHdr) int {
	eth := header.Ethernet(frame)
	if !eth.IsValid() {
		return offloadNone // the switch drops it as malformed
	}
	l3 := eth.HeaderLen()
	big := len(frame)-l3 > mtu
	var (
		proto   uint8
		l4      int
		l4len   int
		v6      bool
		ipHdr   int
		tcpFlag uint8
	)
	switch eth.EtherType() {
	case header.EtherTypeIPv4:
		ip := header.IPv4(frame[l3:])
		if !ip.IsValid() || ip.IsFragment() || int(ip.TotalLength()) > len(ip) {
			return tooBig(big)
		}
		ipHdr = ip.HeaderLen()
		proto, l4, l4len = ip.Protocol(), l3+ipHdr, int(ip.TotalLength())-ipHdr
	case header.EtherTypeIPv6:
		ip := header.IPv6(frame[l3:])
		if !ip.IsValid() || header.IPv6FixedSize+int(ip.PayloadLength()) > len(ip) {
			return tooBig(big)
		}
		ipHdr, v6 = header.IPv6FixedSize, true
		proto, l4, l4len = ip.NextHeader(), l3+header.IPv6FixedSize, int(ip.PayloadLength())
	default:
		return tooBig(big)
	}
	var csumOff int
	switch proto {
	case header.ProtoTCP:
		tcp := header.TCP(frame[l4 : l4+l4len])
		if !tcp.IsValid() {
			return tooBig(big)
		}
		csumOff, tcpFlag = header.TCPChecksumOffset, tcp.Flags()
	case header.ProtoUDP:
		if l4len < header.UDPSize {
			return tooBig(big)
		}
		csumOff = udpChecksumOffset
	default:
		return tooBig(big)
	}
	seed := pseudoSum(frame[l3:], v6, proto, l4len)
	field := frame[l4+csumOff : l4+csumOff+2]
	if !big {
		if binary.BigEndian.Uint16(field) != seed || l3+ipHdr+l4len != len(frame) {
			// Not partial; or bytes after the IP packet (Ethernet
			// padding), which a checksum completed to the end of the
			// frame (virtio 1.2 §5.1.6.2) would wrongly cover. A
			// sender of partial checksums does not pad: padding is
			// what a NIC adds on the wire.
			return offloadNone
		}
		h.Flags = virtio.NetHdrFNeedsCsum
		h.CsumStart, h.CsumOffset = uint16(l4), uint16(csumOff)
		return offloadSet
	}
	if l3+ipHdr+l4len != len(frame) {
		return offloadDrop // a super-frame has no padding
	}
	var gso int
	if proto == header.ProtoTCP {
		gso = mtu - ipHdr - header.TCP(frame[l4:]).HeaderLen()
		h.GSOType = virtio.NetHdrGSOTCPv4
		if v6 {
			h.GSOType = virtio.NetHdrGSOTCPv6
		}
		if tcpFlag&header.TCPFlagCWR != 0 {
			h.GSOType |= virtio.NetHdrGSOECN
		}
		h.HdrLen = uint16(l4 + header.TCP(frame[l4:]).HeaderLen())
	} else {
		gso = mtu - ipHdr
		if v6 {
			gso -= ipv6FragHdrLen
		}
		h.GSOType = virtio.NetHdrGSOUDP
		h.HdrLen = uint16(l4 + header.UDPSize)
	}
	if gso < 8 {
		*h = virtio.NetHdr{}
		return offloadDrop
	}
	binary.BigEndian.PutUint16(field, seed)
	h.GSOSize = uint16(gso)
	h.Flags = virtio.NetHdrFNeedsCsum
	h.CsumStart, h.CsumOffset = uint16(l4), uint16(csumOff)
	return offloadSet
}

// udpChecksumOffset is the offset of the UDP checksum (RFC 768).
const udpChecksumOffset = 6

func tooBig(big bool) int {
	if big {
		return offloadDrop
	}
	return offloadNone
}

// pseudoSum returns the folded pseudo-header sum of the IP packet ip
// (header validated by the caller) for transport length l4len.
func pseudoSum(ip []byte, v6 bool, proto uint8, l4len int) uint16 {
	var s uint64
	if v6 {
		for i := 8; i < 40; i += 4 {
			s += uint64(binary.BigEndian.Uint32(ip[i:]))
		}
	} else {
		s = uint64(binary.BigEndian.Uint32(ip[12:])) + uint64(binary.BigEndian.Uint32(ip[16:]))
	}
	s += uint64(proto) + uint64(l4len)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
