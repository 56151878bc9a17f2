package nat

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// flowKey identifies one direction of a flow as packets arrive at the engine,
// before translation. Addresses are 16 bytes (IPv4 in the IPv4-mapped form
// ::ffff:a.b.c.d, as netip.Addr.As16 gives), so IPv6 flows fit the same
// table later. For ICMP echo the identifier is SrcPort of a request and
// DstPort of a reply (the other port is 0), so that the key of a reply is
// the reverse of the key of its request. Side is part of the key: a packet
// from the uplink never matches a key of packets from guests.
type flowKey struct {
	Src, Dst         addr
	SrcPort, DstPort uint16
	Proto            Proto
	Side             Side
	_                [2]byte
}

// reverse returns the key of packets going the other way on the same side.
func (k *flowKey) reverse() flowKey {
	return flowKey{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto, Side: k.Side}
}

// eq reports whether k and o are equal (the generated == calls memequal
// for a 40-byte struct).
func (k *flowKey) eq(o *flowKey) bool {
	return k.Src.lo == o.Src.lo && k.Dst.lo == o.Dst.lo &&
		k.SrcPort == o.SrcPort && k.DstPort == o.DstPort && k.Proto == o.Proto && k.Side == o.Side &&
		k.Src.hi == o.Src.hi && k.Dst.hi == o.Dst.hi
}

// addr is a 16-byte address as two big-endian halves (netip.Addr's
// internal form): IPv4 is ::ffff:a.b.c.d, so lo holds 0xffff<<32 | v4.
type addr struct{ hi, lo uint64 }

// mapped returns the IPv4-mapped form of the 4 address bytes at b.
func mapped(b []byte) addr { return addr{0, 0xffff<<32 | uint64(binary.BigEndian.Uint32(b))} }

// mapped4 returns the 16-byte form of a (IPv4-mapped for IPv4).
func mapped4(a netip.Addr) addr {
	b := a.Unmap().As16()
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// v4 returns the IPv4 address of an IPv4-mapped addr.
func (a addr) v4() uint32 { return uint32(a.lo) }

// netip returns a as a netip.Addr (unmapped).
func (a addr) netip() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return netip.AddrFrom16(b).Unmap()
}

// hash mixes the key with the engine's random seed (wyhash-style 64x64->128
// multiplies). The seed keeps an attacker who picks ports and addresses from
// aiming at one probe chain of the index.
func (k *flowKey) hash(s *[6]uint64) uint64 {
	w1, w3 := k.Src.lo, k.Dst.lo
	w4 := uint64(k.SrcPort) | uint64(k.DstPort)<<16 | uint64(k.Proto)<<32 | uint64(k.Side)<<40
	a := mum(w1^s[1], w3^s[3])
	// The first 8 bytes of both addresses are zero for IPv4: skip a
	// multiply (the hash stays a function of the whole key).
	if w0, w2 := k.Src.hi, k.Dst.hi; w0|w2 != 0 {
		a ^= mum(w0^s[0], w2^s[2])
	}
	return mum(a^s[4], w4^s[5])
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Tuple is a flow direction in netip form, for introspection.
type Tuple struct {
	Proto    Proto
	Src, Dst netip.AddrPort
}

func (k *flowKey) tuple() Tuple {
	return Tuple{Proto: k.Proto,
		Src: netip.AddrPortFrom(k.Src.netip(), k.SrcPort),
		Dst: netip.AddrPortFrom(k.Dst.netip(), k.DstPort)}
}

// csumDelta returns the one's complement sum of ~old + new over the 16-bit
// words of both addresses (addr) and of both ports (port) when a packet with
// key from is rewritten to key to (RFC 1624 §3: the delta of a fixed rewrite
// is computed once per flow direction and added per packet).
func csumDelta(from, to *flowKey) (addr, port uint16) {
	var s uint64
	for _, w := range [4][2]uint64{{from.Src.hi, to.Src.hi}, {from.Src.lo, to.Src.lo}, {from.Dst.hi, to.Dst.hi}, {from.Dst.lo, to.Dst.lo}} {
		for sh := 0; sh < 64; sh += 16 {
			s += uint64(^uint16(w[0]>>sh)) + uint64(uint16(w[1]>>sh))
		}
	}
	p := uint64(^from.SrcPort) + uint64(to.SrcPort) + uint64(^from.DstPort) + uint64(to.DstPort)
	return fold(s), fold(p)
}

func fold(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// add is one's complement addition of two 16-bit sums.
func add(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// adjust applies a precomputed delta to a complemented checksum field
// (RFC 1624 eqn. 3).
func adjust(hc, delta uint16) uint16 { return ^add(^hc, delta) }
