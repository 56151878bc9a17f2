package datapath

import (
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// Anti-spoofing: what a port that does not allow spoofing may send (see
// the Trust section at the top of switch.go).

// EtherTypes of stacked VLAN tags (IEEE 802.1Q-2018 §9.5 C-tag, S-tag, and
// the pre-standard 0x9100).
const (
	etherTypeQinQ   = 0x88a8
	etherTypeQinQv1 = 0x9100
)

// UDP port of a DHCP server (RFC 2131 §4.1) and the IGMP protocol number.
const (
	dhcpServerPort = 67
	protoIGMP      = 2
)

// checkSource applies anti-spoofing to a frame from sp whose private copy
// of the first bytes is head and source MAC src.
func (s *Switch) checkSource(sp *SwitchPort, sc *scratch, head []byte, src uint64, checkIP bool, now int64) verdict {
	if own := sp.own.Load(); own == 0 {
		if !s.claim(sp, src) {
			return spoofed
		}
	} else if own&^ownValid != src {
		return spoofed
	}
	eth := header.Ethernet(head)
	if !eth.IsValid() {
		return malformed
	}
	l3 := head[eth.HeaderLen():]
	switch eth.EtherType() {
	case header.EtherTypeVLAN, etherTypeQinQ, etherTypeQinQv1:
		return spoofed // a second tag: the frame's IPv4 header would go unchecked
	case header.EtherTypeARP:
		a := header.ARP(l3)
		if !a.IsValid() {
			return malformed
		}
		if macKey(l3[8:14]) != src {
			return spoofed // sender hardware address (RFC 826)
		}
		if !checkIP {
			return pass
		}
		sip := uint32(l3[14])<<24 | uint32(l3[15])<<16 | uint32(l3[16])<<8 | uint32(l3[17])
		if sip == 0 { // an ARP probe (RFC 5227 §2.1.1)
			return pass
		}
		if s.leaseOK(sc, src, sip, now) {
			return pass
		}
		return spoofed
	case header.EtherTypeIPv4:
		if !checkIP {
			return pass
		}
		ip := header.IPv4(l3)
		if !ip.IsValid() {
			return malformed
		}
		sip := ip.Src4()
		if sip == 0 {
			if zeroSourceAllowed(ip) {
				return pass
			}
			return spoofed
		}
		if s.leaseOK(sc, src, sip, now) {
			return pass
		}
		return spoofed
	}
	return pass
}

// zeroSourceAllowed reports whether an IPv4 packet from 0.0.0.0 is one a
// host without an address sends: DHCP to a server (RFC 2131 §4.1, "this
// host on this network") or an IGMP report (RFC 3376 §4.2.13).
func zeroSourceAllowed(ip header.IPv4) bool {
	hl := ip.HeaderLen()
	switch ip.Protocol() {
	case header.ProtoUDP:
		return !ip.IsFragment() && len(ip) >= hl+4 && uint16(ip[hl+2])<<8|uint16(ip[hl+3]) == dhcpServerPort
	case protoIGMP:
		return ip[16]&0xf0 == 0xe0 // to a multicast group (224.0.0.0/4)
	}
	return false
}

// leaseRecheck is how often a frame whose source address does not match
// the cached lease makes the switch ask the lease table again, although
// the lease generation has not moved: a lease table may bind an address
// without moving it (an expired lease renewed), and that must not lock the
// guest out.
const leaseRecheck = int64(time.Second)

// leaseOK reports whether ip is the IPv4 address leased to mac. Answers
// are cached in the scratch (per port and queue) until the lease generation
// moves or, for a mismatch, for leaseRecheck.
func (s *Switch) leaseOK(sc *scratch, mac uint64, ip uint32, now int64) bool {
	if !sc.leaseValid || sc.leaseMAC != mac {
		s.askLease(sc, mac, now)
	}
	if sc.leaseOK && sc.leaseIP == ip {
		return true
	}
	if now-sc.leaseAt < leaseRecheck {
		return false
	}
	s.askLease(sc, mac, now)
	return sc.leaseOK && sc.leaseIP == ip
}

// askLease asks the lease table for mac's address and caches the answer.
func (s *Switch) askLease(sc *scratch, mac uint64, now int64) {
	a, ok := s.leases.LeasedIP(header.MAC(macBytes(mac)))
	ok = ok && a.Is4()
	var ip uint32
	if ok {
		b := a.As4()
		ip = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	sc.leaseMAC, sc.leaseIP, sc.leaseOK, sc.leaseValid, sc.leaseAt = mac, ip, ok, true, now
}

// warnSpoof logs the first spoofed frame of a port; later ones are only
// counted.
func (s *Switch) warnSpoof(sp *SwitchPort, src uint64, head []byte) {
	if sp.warned.Load() || sp.warned.Swap(true) {
		return
	}
	attrs := []any{"port", sp.port.Name(), "src_mac", header.MAC(macBytes(src)).String()}
	if own, ok := sp.MAC(); ok {
		attrs = append(attrs, "own_mac", own.String())
	}
	if eth := header.Ethernet(head); eth.IsValid() && eth.EtherType() == header.EtherTypeIPv4 {
		if ip := header.IPv4(head[eth.HeaderLen():]); ip.IsValid() {
			attrs = append(attrs, "src_ip", ip.Src().String())
		}
	}
	s.log.Warn("frame with a source address the port does not own dropped (anti-spoofing); further drops are only counted", attrs...)
}
