package nat

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// flowKey identifies one direction of a flow as packets arrive at the engine,
// before translation: 16 bytes, so that both directions of a flow and its
// per-packet state share one 64-byte flow record (table.go). For ICMP echo
// the identifier is SrcPort of a request and DstPort of a reply (the other
// port is 0), so that the key of a reply is the reverse of the key of its
// request. Side is part of the key: a packet from the uplink never matches a
// key of packets from guests.
//
// The engine translates IPv4 only (RFC 3022 NAPT); an IPv6 translator
// (NAT66/NPTv6) would get its own table with 16-byte addresses rather than
// double the size of every IPv4 flow.
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

// words returns the key as two 64-bit words (the padding excluded).
func (k *flowKey) words() (uint64, uint64) {
	return uint64(k.Src)<<32 | uint64(k.Dst), word1(k.Side, k.Proto, k.SrcPort, k.DstPort)
}

// word1 is the second word of the key with these fields (words; parse
// builds it straight from the headers).
func word1(side Side, p Proto, sport, dport uint16) uint64 {
	return uint64(sport) | uint64(dport)<<16 | uint64(p)<<32 | uint64(side)<<40
}

// keyOf returns the key whose words are w0, w1.
func keyOf(w0, w1 uint64) flowKey {
	return flowKey{Src: addr(w0 >> 32), Dst: addr(w0), SrcPort: uint16(w1), DstPort: uint16(w1 >> 16),
		Proto: Proto(w1 >> 32), Side: Side(w1 >> 40)}
}

// setWords sets k to keyOf(w0, w1) field by field: built as a value and
// then copied, the copy's 16-byte load would wait for the narrow stores
// that built it to reach the cache (a store it cannot forward from).
func (k *flowKey) setWords(w0, w1 uint64) {
	k.Src, k.Dst = addr(w0>>32), addr(w0)
	k.SrcPort, k.DstPort, k.Proto, k.Side = uint16(w1), uint16(w1>>16), Proto(w1>>32), Side(w1>>40)
}

// keyIsWords reports whether direction d of f has the key with words w0, w1.
func keyIsWords(f *flow, d uint32, w0, w1 uint64) bool {
	return f.kw[d][0].Load() == w0 && f.kw[d][1].Load() == w1
}

// addr is an IPv4 address as a big-endian integer.
type addr uint32

// mapped returns the IPv4 address at b.
func mapped(b []byte) addr { return addr(binary.BigEndian.Uint32(b)) }

// mapped4 returns the IPv4 address a (IPv4-mapped IPv6 addresses are
// unmapped; the configuration accepts IPv4 only).
func mapped4(a netip.Addr) addr {
	b := a.Unmap().As4()
	return addr(binary.BigEndian.Uint32(b[:]))
}

// v4 returns a as an integer.
func (a addr) v4() uint32 { return uint32(a) }

// netip returns a as a netip.Addr.
func (a addr) netip() netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(a))
	return netip.AddrFrom4(b)
}

// hash mixes the key with the engine's random seed (wyhash-style 64x64->128
// multiplies). The seed keeps an attacker who picks ports and addresses from
// aiming at one probe chain of the index.
func (k *flowKey) hash(s *[6]uint64) uint64 {
	w0, w1 := k.words()
	return hashWords(w0, w1, s)
}

// hashWords is hash of the key with words w0, w1.
func hashWords(w0, w1 uint64, s *[6]uint64) uint64 {
	return mum(mum(w0^s[0], w1^s[1])^s[2], s[3])
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

// csumDeltaWords returns the one's complement sum of ~old + new over the
// 16-bit words of both addresses (addr) and of both ports (port) when a
// packet with key f (as words, flowKey.words) is rewritten to key t (RFC
// 1624 §3: the delta of a fixed rewrite is computed once per flow direction
// and added per packet). The sums do not depend on the order of the 16-bit
// words, so the delta to a reversed key can be taken from the key itself
// (setKeysWords).
func csumDeltaWords(f0, f1, t0, t1 uint64) (addr, port uint16) {
	return fold(sum16x4(^f0) + sum16x4(t0)), fold(sum16x4(uint64(^uint32(f1))) + sum16x4(uint64(uint32(t1))))
}

// sum16x4 returns the plain sum of the four 16-bit words of w.
func sum16x4(w uint64) uint64 {
	return w&0xffff + w>>16&0xffff + w>>32&0xffff + w>>48
}

// replyWords returns the key replies to a packet translated to key t
// arrive with, as words, from t's words: the addresses swap halves, the
// ports swap and side replaces the side. The new flow path works on words
// so that no key is built with narrow stores and then copied whole (a copy
// whose wide load cannot take its bytes from those stores waits for them
// to reach the cache).
func replyWords(w0, w1 uint64, side Side) (uint64, uint64) {
	return bits.RotateLeft64(w0, 32),
		w1>>16&0xffff | w1&0xffff<<16 | w1&(0xff<<32) | uint64(side)<<40
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
