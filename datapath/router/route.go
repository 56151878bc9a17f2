package router

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// routable reports whether a frame whose first bytes are head (the switch's
// checked copy) is one to route: IPv4 to the gateway's MAC, for a unicast
// address outside the guest subnet. Everything else is the gateway's own
// business (ARP, DHCP, DNS, ICMP to the gateway, broadcasts).
func (r *Router) routable(head []byte) bool {
	if len(head) < header.EthernetMinSize+header.IPv4MinSize {
		return false
	}
	if header.MAC(head[0:6]) != r.opt.GatewayMAC ||
		binary.BigEndian.Uint16(head[12:]) != header.EtherTypeIPv4 || head[14]>>4 != 4 {
		return false
	}
	dst := binary.BigEndian.Uint32(head[14+16:])
	return !r.inSubnet(dst) && dst != 0xffffffff && dst>>28 != 0xe // not limited broadcast, not multicast
}

// outbound routes one batch (at most MaxBatch frames) from the switch.
func (r *Router) outbound(b *batch, frames []datapath.Frame) {
	var bytes uint64
	k := 0
	for i := range frames {
		f := &frames[i]
		bytes += uint64(f.Len)
		if len(f.Segs) == 0 || !r.routable(f.Segs[0]) {
			b.local = append(b.local, *f)
			continue
		}
		hl := b.head(k, f)
		h := b.heads[k][:]
		ip := header.IPv4(h[header.EthernetMinSize:hl])
		if !ip.IsValid() {
			r.stats.Drop(Out, DropMalformed, 1)
			continue
		}
		if d := ip.Dst4(); d>>24 == 127 || d>>24 == 0 {
			// RFC 1122 §3.2.1.3: loopback and "this network" addresses
			// never appear outside a host; the host's loopback is not the
			// guests' to reach (ARCHITECTURE.md "Rules that hold everywhere").
			r.stats.Drop(Out, DropReason(nat.ReasonAddress), 1)
			if r.loopbackLog.allow() {
				r.log.Warn("router: a guest's packet to a loopback or this-network address refused; "+
					"the next are counted (router_out_drop_address) and logged at most once a minute",
					"src", ip.Src(), "dst", ip.Dst(), "src_mac", header.MAC(h[6:12]).String())
			}
			continue
		}
		if ip.TTL() <= 1 {
			// RFC 1812 §5.3.1: a router MUST NOT forward a packet whose
			// TTL it would decrement to zero; it sends time exceeded.
			r.stats.Drop(Out, DropTTL, 1)
			if r.icmpError(b, f, h[:hl], header.ICMPv4TimeExceeded, 0, 0) {
				r.stats.ICMPTimeExceeded.Add(1)
			}
			continue
		}
		if size := r.segmentSize(ip, f); size > r.opt.MTU {
			r.stats.Drop(Out, DropMTU, 1)
			// RFC 1191 §4 / RFC 1812 §5.2.7.1: with DF set (TSO segments
			// always have it on Linux) the router says the next-hop MTU.
			if ip.DontFragment() || f.Hdr.GSOType != virtio.NetHdrGSONone {
				if r.icmpError(b, f, h[:hl], header.ICMPv4DstUnreachable, header.ICMPv4FragNeeded, uint32(r.opt.MTU)) {
					r.stats.ICMPFragNeeded.Add(1)
				}
			}
			continue
		}
		if src := ip.Src4(); r.inSubnet(src) {
			r.neigh.learn(src, header.MAC(h[6:12]))
		}
		decTTL(ip)
		b.add(k, i, hl, f)
		k++
	}
	r.lan.stats.TxPackets.Add(uint64(len(frames)))
	r.lan.stats.TxBytes.Add(bytes)
	if len(b.local) > 0 {
		r.opt.Local.Send(b.local)
	}
	r.translate(b, k, Out)
	var hop header.MAC
	hopOK := false
	if v := r.nextHopMAC.Load(); v != 0 {
		hop, hopOK = keyMAC(v&^macValid), true
	}
	var translated, hairpin, routedBytes uint64
	for j := range k {
		p := &b.pkts[j]
		f := &frames[b.orig[j]]
		h := b.heads[j][:]
		replaced := p.Verdict != nat.Drop && p.Reason != nat.ReasonNone
		n := header.EthernetMinSize + len(p.Buf)
		switch p.Verdict {
		case nat.ToUplink:
			if !hopOK {
				r.stats.Drop(Out, DropNoNeighbour, 1)
				r.resolveNextHop(b)
				continue
			}
			copy(h[0:6], hop[:])
			copy(h[6:12], r.opt.UplinkMAC[:])
			b.up = b.emitFrame(b.up, j, n, f, replaced)
			translated++
			routedBytes += uint64(b.up[len(b.up)-1].Len)
		case nat.ToGuest:
			if replaced {
				r.logRefusal(p, true)
			}
			if !r.toGuest(b, j, f, Out, replaced) {
				continue
			}
			if !replaced {
				translated++
				hairpin++
			}
		default:
			r.stats.Drop(Out, DropReason(p.Reason), 1)
			r.logRefusal(p, false)
		}
	}
	r.stats.Translated[Out].Add(translated)
	r.stats.Hairpin.Add(hairpin)
	r.stats.Bytes[Out].Add(routedBytes)
	r.sendUp(b.up, Out)
	r.sendLAN(b.lan)
	b.done(k)
}

// segmentSize returns the size of the largest IPv4 packet frame f becomes
// on the wire: its IPv4 total length, or for a GSO frame the headers plus
// gso_size (each segment's size).
func (r *Router) segmentSize(ip header.IPv4, f *datapath.Frame) int {
	if f.Hdr.GSOType == virtio.NetHdrGSONone {
		return f.Len - header.EthernetMinSize
	}
	l4 := ip.HeaderLen()
	th := header.UDPSize
	if ip.Protocol() == header.ProtoTCP {
		th = 20
		if len(ip) >= l4+13 {
			th = int(ip[l4+12]>>4) * 4
		}
	}
	return l4 + th + int(f.Hdr.GSOSize)
}

// inbound routes one batch (at most MaxBatch frames) from the uplink.
func (r *Router) inbound(b *batch, frames []datapath.Frame) {
	var bytes uint64
	k := 0
	for i := range frames {
		f := &frames[i]
		bytes += uint64(f.Len)
		hl := b.head(k, f)
		h := b.heads[k][:]
		if hl < header.EthernetMinSize {
			r.stats.Drop(In, DropMalformed, 1)
			continue
		}
		dst := header.MAC(h[0:6])
		if dst != r.opt.UplinkMAC && !dst.IsBroadcast() {
			if dst.IsMulticast() {
				r.stats.Drop(In, DropReason(nat.ReasonUnsupported), 1)
			} else {
				r.stats.Drop(In, DropMalformed, 1)
			}
			continue
		}
		switch binary.BigEndian.Uint16(h[12:]) {
		case header.EtherTypeARP:
			r.handleARP(b, f, h[:hl])
			continue
		case header.EtherTypeIPv4:
		default:
			r.stats.Drop(In, DropReason(nat.ReasonUnsupported), 1)
			continue
		}
		ip := header.IPv4(h[header.EthernetMinSize:hl])
		if !ip.IsValid() {
			r.stats.Drop(In, DropMalformed, 1)
			continue
		}
		if ip.Protocol() == header.ProtoICMP && ip.Dst4() == r.ext4 && r.echoReply(b, f, ip) {
			continue
		}
		if ip.TTL() <= 1 {
			r.stats.Drop(In, DropTTL, 1)
			continue
		}
		decTTL(ip)
		b.add(k, i, hl, f)
		k++
	}
	r.up.stats.TxPackets.Add(uint64(len(frames)))
	r.up.stats.TxBytes.Add(bytes)
	r.translate(b, k, In)
	var translated, routedBytes uint64
	for j := range k {
		p := &b.pkts[j]
		f := &frames[b.orig[j]]
		h := b.heads[j][:]
		replaced := p.Verdict != nat.Drop && p.Reason != nat.ReasonNone
		n := header.EthernetMinSize + len(p.Buf)
		switch p.Verdict {
		case nat.ToGuest:
			if !r.toGuest(b, j, f, In, replaced) {
				continue
			}
			translated++
			routedBytes += uint64(b.lan[len(b.lan)-1].Len)
		case nat.ToUplink:
			// A refusal answered toward the sender (ICMP administratively
			// prohibited): back where the packet came from.
			copy(h[0:6], h[6:12])
			copy(h[6:12], r.opt.UplinkMAC[:])
			b.up = b.emitFrame(b.up, j, n, f, replaced)
		default:
			r.stats.Drop(In, DropReason(p.Reason), 1)
		}
	}
	r.stats.Translated[In].Add(translated)
	r.stats.Bytes[In].Add(routedBytes)
	r.sendLAN(b.lan)
	r.sendUp(b.up, In)
	b.done(k)
}

// toGuest addresses translated packet j (of frame f) to the guest that owns
// its destination, from the gateway's MAC, and queues it for the switch. It
// reports false (counted in direction d) if no MAC is known for the guest.
func (r *Router) toGuest(b *batch, j int, f *datapath.Frame, d Direction, replaced bool) bool {
	p := &b.pkts[j]
	mac, ok := r.guestMAC(binary.BigEndian.Uint32(p.Buf[16:]))
	if !ok {
		r.stats.Drop(d, DropNoNeighbour, 1)
		return false
	}
	h := b.heads[j][:]
	copy(h[0:6], mac[:])
	copy(h[6:12], r.opt.GatewayMAC[:])
	b.lan = b.emitFrame(b.lan, j, header.EthernetMinSize+len(p.Buf), f, replaced)
	return true
}

// add queues frame i (whose first hl bytes are in head buffer k) as packet
// k for the NAT engine.
func (b *batch) add(k, i, hl int, f *datapath.Frame) {
	b.hls[k] = hl
	b.orig[k] = i
	b.pkts[k] = nat.Packet{Buf: b.heads[k][header.EthernetMinSize:hl], Flags: natFlags(&f.Hdr)}
}

// translate runs the batch's first k packets through the NAT engine, from
// the guests (Out) or the uplink (In).
func (r *Router) translate(b *batch, k int, d Direction) {
	if k == 0 {
		return
	}
	r.stats.Packets[d].Add(uint64(k))
	side := nat.Guest
	if d == In {
		side = nat.Uplink
	}
	r.opt.NAT.Translate(side, b.pkts[:k])
}

// guestMAC returns the MAC of guest address a (big-endian), from the
// neighbour cache or, once, from Options.Neighbour.
func (r *Router) guestMAC(a uint32) (header.MAC, bool) {
	if m, ok := r.neigh.lookup(a); ok {
		return m, true
	}
	if r.opt.Neighbour == nil || !r.inSubnet(a) {
		return header.MAC{}, false
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	m, ok := r.opt.Neighbour(addr4(b))
	if ok {
		r.neigh.learn(a, m)
	}
	return m, ok
}
