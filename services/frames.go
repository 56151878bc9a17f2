package services

import (
	"net/netip"
	"sync"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// frameBufSize is the size of pooled reply buffers: an MTU-1500 frame fits.
const frameBufSize = 2048

// framePool holds reply buffers so that ARP and ICMP replies allocate
// nothing in steady state.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, frameBufSize)
	return &b
}}

// frameBuf returns a buffer of n bytes and the pool handle to give back
// with putFrameBuf (nil for a buffer too big for the pool).
func frameBuf(n int) ([]byte, *[]byte) {
	if n > frameBufSize {
		return make([]byte, n), nil
	}
	p := framePool.Get().(*[]byte)
	return (*p)[:n], p
}

func putFrameBuf(p *[]byte) {
	if p != nil {
		framePool.Put(p)
	}
}

// emit hands one reply frame to the caller's reply function and counts it.
func (g *Gateway) emit(reply func([]byte), f []byte) {
	g.stats.inc(FramesOut)
	reply(f)
}

// encodeIPv4 writes the Ethernet and IPv4 headers of a reply from the
// gateway into f and returns the offset of the IPv4 payload. f must hold
// 14+20+payloadLen bytes.
func (g *Gateway) encodeIPv4(f []byte, dstMAC header.MAC, dst netip.Addr, proto uint8, payloadLen int) int {
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: dstMAC, Src: g.s.mac, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[header.EthernetMinSize:]).Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinSize + payloadLen),
		ID:          uint16(g.ipID.Add(1)),
		TTL:         64,
		Protocol:    proto,
		Src:         g.s.gw,
		Dst:         dst,
	})
	return header.EthernetMinSize + header.IPv4MinSize
}

// sendUDP builds one UDP datagram from the gateway (checksum computed in
// full, RFC 768) and hands it to reply. payload must fit one IPv4 packet.
func (g *Gateway) sendUDP(reply func([]byte), dstMAC header.MAC, dst netip.Addr, srcPort, dstPort uint16, payload []byte) {
	ulen := header.UDPSize + len(payload)
	if header.IPv4MinSize+ulen > 0xffff {
		return
	}
	f, h := frameBuf(header.EthernetMinSize + header.IPv4MinSize + ulen)
	off := g.encodeIPv4(f, dstMAC, dst, header.ProtoUDP, ulen)
	u := header.UDP(f[off:])
	u.Encode(&header.UDPFields{SrcPort: srcPort, DstPort: dstPort, Length: uint16(ulen)})
	copy(u[header.UDPSize:], payload)
	c := ^header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, g.s.gw, dst, uint16(ulen)))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	u.SetChecksum(c)
	g.emit(reply, f)
	putFrameBuf(h)
}
