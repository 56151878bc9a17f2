package router

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/nat"
)

// icmpError sends the guest that sent frame f (whose first bytes are head:
// Ethernet and IPv4 as received) an ICMP error from the gateway: type typ,
// code, and rest in bytes 4-7 (the next-hop MTU of "fragmentation needed",
// RFC 1191 §4). It quotes the offending datagram's IP header and as much
// of what follows as the head copy holds, within 576 bytes (RFC 1812
// §4.3.2.3). No error is sent about an ICMP error, a non-first fragment or
// a packet from an address that is not a guest's (RFC 1812 §4.3.2.7), nor
// beyond the rate limit. It reports whether an error was queued.
func (r *Router) icmpError(b *batch, f *datapath.Frame, head []byte, typ, code uint8, rest uint32) bool {
	ip := header.IPv4(head[header.EthernetMinSize:])
	src := ip.Src4()
	if !r.inSubnet(src) || src == r.gw4 || ip.FragmentOffset() != 0 {
		return false
	}
	if ip.Protocol() == header.ProtoICMP {
		if ic := ip.Payload(); len(ic) >= 1 && header.ICMPv4(ic).IsError() {
			return false
		}
	}
	if !r.icmp.allow() {
		r.stats.ICMPRateLimited.Add(1)
		return false
	}
	buf := b.genBuf()
	if buf == nil {
		return false
	}
	quote := head[header.EthernetMinSize:]
	quote = quote[:min(len(quote), int(ip.TotalLength()), icmpQuoteMax)]
	const hdrs = header.EthernetMinSize + header.IPv4MinSize
	n := hdrs + header.ICMPv4MinSize + len(quote)
	header.Ethernet(buf).Encode(&header.EthernetFields{Dst: header.MAC(head[6:12]), Src: r.opt.GatewayMAC,
		EtherType: header.EtherTypeIPv4})
	header.IPv4(buf[header.EthernetMinSize:]).Encode(&header.IPv4Fields{
		TotalLength: uint16(n - header.EthernetMinSize), TTL: 64, Protocol: header.ProtoICMP,
		Src: r.opt.GatewayAddr, Dst: ip.Src()})
	header.ICMPv4(buf[hdrs:]).Encode(&header.ICMPv4Fields{Type: typ, Code: code, Rest: rest}, quote)
	b.lan = append(b.lan, datapath.Frame{Segs: b.genSegs(buf[:n]), Len: n, Queue: f.Queue})
	return true
}

// echoReply answers an ICMP echo request to the NAT address itself (RFC
// 1122 §3.2.2.6), so that the host can ping vhost-arcnet's end of the link.
// ip is the head copy of frame f from the IPv4 header on. It reports whether
// the packet was an echo request to the router (answered or dropped here);
// other ICMP goes on to the NAT engine.
func (r *Router) echoReply(b *batch, f *datapath.Frame, ip header.IPv4) bool {
	hl := ip.HeaderLen()
	if len(ip) < hl+header.ICMPv4MinSize || ip[hl] != header.ICMPv4Echo || ip.IsFragment() {
		return false
	}
	// The head copy may hold more than the datagram (Ethernet padding):
	// the reply is cut at the total length, which must leave room for
	// the ICMP header (RFC 792: an echo message is at least 8 bytes).
	if int(ip.TotalLength()) < hl+header.ICMPv4MinSize {
		r.stats.Drop(In, DropMalformed, 1)
		return true
	}
	n := header.EthernetMinSize + int(ip.TotalLength())
	buf := b.genBuf()
	if n > f.Len || n > genSize || buf == nil {
		r.stats.Drop(In, DropReason(nat.ReasonUnsupported), 1)
		return true
	}
	k := 0
	for _, s := range f.Segs {
		k += copy(buf[k:n], s)
	}
	src := header.MAC(buf[6:12])
	copy(buf[0:6], src[:])
	copy(buf[6:12], r.opt.UplinkMAC[:])
	rip := header.IPv4(buf[header.EthernetMinSize:n])
	from := rip.Src()
	rip.SetSrc(r.opt.ExternalAddr)
	rip.SetDst(from)
	rip.SetTTL(64)
	rip.UpdateChecksum()
	ic := header.ICMPv4(rip[hl:])
	ic.SetType(header.ICMPv4EchoReply)
	ic.SetChecksum(header.UpdateChecksum16(ic.Checksum(), uint16(header.ICMPv4Echo)<<8, uint16(header.ICMPv4EchoReply)<<8))
	b.up = append(b.up, datapath.Frame{Segs: b.genSegs(buf[:n]), Len: n, Queue: f.Queue})
	r.stats.EchoReplies.Add(1)
	return true
}

// handleARP answers an ARP request for the external address from the
// uplink (RFC 826 "Packet Reception") and learns the next hop's MAC from
// any ARP packet it sends.
func (r *Router) handleARP(b *batch, f *datapath.Frame, head []byte) {
	a := header.ARP(head[header.EthernetMinSize:])
	if !a.IsValid() || a.SenderMAC().IsMulticast() {
		r.stats.Drop(In, DropMalformed, 1)
		return
	}
	sender := a.SenderMAC()
	if hop := be32(head[header.EthernetMinSize+14:]); hop == r.hop4.Load() && sender != (header.MAC{}) {
		if k := macKey(sender) | macValid; r.nextHopMAC.Load() != k {
			r.nextHopMAC.Store(k)
			r.log.Info("router: next hop resolved", "addr", a.SenderIP(), "mac", sender.String())
		}
	}
	if a.Op() != header.ARPRequest || be32(head[header.EthernetMinSize+24:]) != r.ext4 {
		return
	}
	buf := b.genBuf()
	if buf == nil {
		return
	}
	n := header.EthernetMinSize + header.ARPSize
	header.Ethernet(buf).Encode(&header.EthernetFields{Dst: sender, Src: r.opt.UplinkMAC, EtherType: header.EtherTypeARP})
	header.ARP(buf[header.EthernetMinSize:]).Encode(&header.ARPFields{Op: header.ARPReply,
		SenderMAC: r.opt.UplinkMAC, SenderIP: r.opt.ExternalAddr, TargetMAC: sender, TargetIP: a.SenderIP()})
	b.up = append(b.up, datapath.Frame{Segs: b.genSegs(buf[:n]), Len: n, Queue: f.Queue})
	r.stats.ARPReplies.Add(1)
}

// resolveNextHop asks for the next hop's MAC (an ARP request on the
// uplink, or Options.ResolveNextHop), at most once per arpInterval.
func (r *Router) resolveNextHop(b *batch) {
	now := time.Now().UnixNano()
	last := r.lastARP.Load()
	if now-last < int64(arpInterval) || !r.lastARP.CompareAndSwap(last, now) {
		return
	}
	if r.opt.ResolveNextHop != nil {
		r.opt.ResolveNextHop()
		return
	}
	var hop [4]byte
	binary.BigEndian.PutUint32(hop[:], r.hop4.Load())
	buf := b.genBuf()
	if buf == nil {
		return
	}
	n := header.EthernetMinSize + header.ARPSize
	header.Ethernet(buf).Encode(&header.EthernetFields{Dst: header.BroadcastMAC, Src: r.opt.UplinkMAC,
		EtherType: header.EtherTypeARP})
	header.ARP(buf[header.EthernetMinSize:]).Encode(&header.ARPFields{Op: header.ARPRequest,
		SenderMAC: r.opt.UplinkMAC, SenderIP: r.opt.ExternalAddr, TargetIP: addr4(hop)})
	b.up = append(b.up, datapath.Frame{Segs: b.genSegs(buf[:n]), Len: n})
	r.stats.ARPRequests.Add(1)
}

// genSegs returns a one-element scatter list of p, from the batch's spare
// slices (the gen buffers share the segs of slots beyond the packets).
func (b *batch) genSegs(p []byte) [][]byte {
	s := b.gsegs[b.ngen-1][:1]
	s[0] = p
	return s
}

func addr4(b [4]byte) netip.Addr { return netip.AddrFrom4(b) }
