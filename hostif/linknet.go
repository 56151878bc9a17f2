package hostif

import (
	"errors"
	"fmt"
	"net/netip"
)

// DefaultLinkNet is the link network a created TAP gets when none is given:
// 198.19.255.252/30, in the RFC 2544 §C.2.2 benchmarking space
// (198.18.0.0/15, RFC 6890 §2.2.2), which is unlikely to collide with a real
// network. The host's end is 198.19.255.253, the NAT address 198.19.255.254.
var DefaultLinkNet = netip.MustParsePrefix("198.19.255.252/30")

// linkNetAddrs returns the host's end and the NAT address of a link network
// in create mode: its first and second usable addresses. A /31 has no
// network or broadcast address (RFC 3021 §2.1), so both of its addresses are
// usable; a /32 has room for one end only.
func linkNetAddrs(p netip.Prefix) (host, nat netip.Addr, err error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("link network %v is not an IPv4 prefix: choose another with --uplink-net", p)
	}
	p = p.Masked()
	switch {
	case p.Bits() > 31:
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("link network %v has room for one address only: use a /30 or a /31 with --uplink-net", p)
	case p.Bits() == 31:
		return p.Addr(), p.Addr().Next(), nil
	}
	host = p.Addr().Next()
	return host, host.Next(), nil
}

// mustHost returns the host's end of the valid link network p.
func mustHost(p netip.Prefix) netip.Addr {
	h, _, _ := linkNetAddrs(p)
	return h
}

// natAddrFor returns the NAT address on an existing link network whose host
// end is host: the first usable address of the prefix that is not host.
func natAddrFor(p netip.Prefix, host netip.Addr) (netip.Addr, error) {
	if !p.IsValid() || !p.Addr().Is4() || !p.Contains(host) {
		return netip.Addr{}, fmt.Errorf("address %v/%d is not an IPv4 address of its prefix", host, p.Bits())
	}
	p = p.Masked()
	first, last := p.Addr(), lastAddr(p)
	if p.Bits() < 31 {
		// The network and broadcast addresses are not usable (RFC 919 §7,
		// RFC 1122 §3.2.1.3).
		first, last = first.Next(), last.Prev()
	}
	for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if a != host {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("has no usable address besides the host's")
}

// lastAddr returns the last address of the IPv4 prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	if p.Bits() == 0 {
		host = ^uint32(0)
	}
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// routeInfo is one IPv4 route of the host's main table, as far as the
// collision check needs it.
type routeInfo struct {
	Dst netip.Prefix
	Dev string
}

// overlappingRoute returns the first route of routes whose destination
// overlaps p, ignoring default routes (every prefix is inside 0.0.0.0/0).
func overlappingRoute(p netip.Prefix, routes []routeInfo) (routeInfo, bool) {
	for _, r := range routes {
		if r.Dst.IsValid() && r.Dst.Bits() > 0 && r.Dst.Overlaps(p) {
			return r, true
		}
	}
	return routeInfo{}, false
}
