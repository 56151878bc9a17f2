package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// translateICMPError rewrites an ICMP error (RFC 792; RFC 5508 §4 for NATs)
// about a packet of a known flow: the embedded header is translated back to
// what its sender saw (addresses, ports or echo identifier, the embedded IP
// and transport checksums), and so is the one outer address that names the
// embedded packet's sender. The ICMP checksum follows every changed word by
// RFC 1624 updates, so the part of the embedded datagram that is not in the
// buffer is not needed.
func (e *Engine) translateICMPError(from Side, p *Packet, m *meta, now int64) {
	b := p.Buf
	ihl := int(b[0]&0x0f) * 4
	ic := b[ihl:]
	emb := ic[8:]
	if len(emb) < 20 || emb[0]>>4 != 4 {
		p.Reason = ReasonICMPError
		return
	}
	eihl := int(emb[0]&0x0f) * 4
	if eihl < 20 || len(emb) < eihl+8 || be16(emb[6:])&0x1fff != 0 {
		p.Reason = ReasonICMPError
		return
	}
	el := emb[eihl:]
	ek := &m.key
	*ek = flowKey{Src: mapped(emb[12:]), Dst: mapped(emb[16:]), Side: from}
	echoReq := false
	switch emb[9] {
	case 6, 17:
		ek.Proto = Proto(emb[9])
		ek.SrcPort, ek.DstPort = be16(el), be16(el[2:])
	case 1:
		ek.Proto = ICMP
		switch el[0] {
		case 8:
			ek.SrcPort = be16(el[4:])
			echoReq = true
		case 0:
			ek.DstPort = be16(el[4:])
		default:
			p.Reason = ReasonICMPError
			return
		}
	default:
		p.Reason = ReasonICMPError
		return
	}
	// The embedded packet went the other way: look up its reverse.
	rk := ek.reverse()
	r := e.tab.lookup(&rk, rk.hash(&e.tab.seed))
	if r == 0 {
		p.Reason = ReasonICMPError
		return
	}
	f := e.tab.flow(r >> 1)
	if e.kill(f, now) {
		e.reclaim(r >> 1)
		e.stats.Expired++
		p.Reason = ReasonICMPError
		return
	}
	nk := f.key((r & 1) ^ 1) // the embedded packet as its sender sent it
	// The outer address that names the embedded packet's sender.
	outerOff, oldOuter, newOuter := 16, be32(b[16:]), nk.Src.v4()
	if from == Guest {
		outerOff, oldOuter, newOuter = 12, be32(b[12:]), nk.Dst.v4()
		if oldOuter != be32(emb[16:]) {
			p.Reason = ReasonICMPError // the guest is not the embedded packet's destination
			return
		}
	} else if oldOuter != be32(emb[12:]) {
		p.Reason = ReasonICMPError
		return
	}

	icsum := be16(ic[2:])
	ecsum := be16(emb[10:])
	oldE := ecsum
	var l4csum uint16
	l4off := -1
	switch {
	case ek.Proto == TCP && len(el) >= 18:
		l4off = 16
	case ek.Proto == UDP && be16(el[6:]) != 0:
		l4off = 6
	case ek.Proto == ICMP:
		l4off = 2
	}
	if l4off >= 0 {
		l4csum = be16(el[l4off:])
	}
	oldL4 := l4csum
	for _, a := range [2]struct {
		off int
		v   uint32
	}{{12, nk.Src.v4()}, {16, nk.Dst.v4()}} {
		old := be32(emb[a.off:])
		binary.BigEndian.PutUint32(emb[a.off:], a.v)
		ecsum = header.UpdateChecksum32(ecsum, old, a.v)
		icsum = header.UpdateChecksum32(icsum, old, a.v)
		if ek.Proto != ICMP { // the pseudo-header
			l4csum = header.UpdateChecksum32(l4csum, old, a.v)
		}
	}
	put16(emb[10:], ecsum)
	icsum = header.UpdateChecksum16(icsum, oldE, ecsum)
	set := func(off int, v uint16) {
		old := be16(el[off:])
		put16(el[off:], v)
		icsum = header.UpdateChecksum16(icsum, old, v)
		l4csum = header.UpdateChecksum16(l4csum, old, v)
	}
	if ek.Proto == ICMP {
		if echoReq {
			set(4, nk.SrcPort)
		} else {
			set(4, nk.DstPort)
		}
	} else {
		set(0, nk.SrcPort)
		set(2, nk.DstPort)
	}
	if l4off >= 0 {
		if ek.Proto == UDP && l4csum == 0 {
			l4csum = 0xffff
		}
		put16(el[l4off:], l4csum)
		icsum = header.UpdateChecksum16(icsum, oldL4, l4csum)
	}
	put16(ic[2:], icsum)
	binary.BigEndian.PutUint32(b[outerOff:], newOuter)
	put16(b[10:], header.UpdateChecksum32(be16(b[10:]), oldOuter, newOuter))
	if nk.Side == Guest {
		p.Verdict = ToGuest
	} else {
		p.Verdict = ToUplink
	}
	e.stats.ICMPErrors++
}

// refuse answers a packet that may not open a flow: dropped, or with
// RefuseICMP replaced in place by an ICMP destination unreachable,
// "communication administratively prohibited" (RFC 1812 §5.2.7.1), carrying
// the packet's IP header and first 8 bytes of payload (RFC 792). The reply
// needs cap(p.Buf) >= 28 + IP header + 8; without room the packet is dropped.
func (e *Engine) refuse(from Side, p *Packet, reason Reason) {
	p.Reason = reason
	p.Verdict = Drop
	if e.cfg.Refusal != RefuseICMP {
		return
	}
	b := p.Buf
	n := int(b[0]&0x0f)*4 + 8
	if cap(b) < 28+n || len(b) < n {
		return
	}
	out := b[:28+n]
	copy(out[28:], b[:n])
	src := netip.AddrFrom4([4]byte(out[28+16 : 28+20])) // the refused packet's destination
	if from == Uplink {
		src = e.cfg.External
	} else if e.cfg.Router.IsValid() {
		src = e.cfg.Router
	}
	header.IPv4(out).Encode(&header.IPv4Fields{TotalLength: uint16(28 + n), TTL: 64, Protocol: header.ProtoICMP,
		Src: src, Dst: netip.AddrFrom4([4]byte(out[28+12 : 28+16]))})
	header.ICMPv4(out[20:]).Encode(&header.ICMPv4Fields{Type: header.ICMPv4DstUnreachable,
		Code: header.ICMPv4AdminProhibited}, out[28:])
	p.Buf = out
	p.Flags = 0
	if from == Guest {
		p.Verdict = ToGuest
	} else {
		p.Verdict = ToUplink
	}
	e.stats.Drops[reason]++
	e.stats.RefusalReplies++
}
