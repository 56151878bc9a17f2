package header

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Checksum returns the 16-bit one's complement sum (RFC 1071 §1) of b, added
// to initial, folded but not complemented. An odd final byte is summed as if
// followed by a zero byte. The Internet checksum of b is ^Checksum(b, 0).
func Checksum(b []byte, initial uint16) uint16 {
	var acc, carry uint64
	acc = uint64(initial)
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), 0)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), carry)
		acc += carry
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += carry
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += carry
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += carry
	}
	return fold64(acc)
}

// fold64 folds a 64-bit one's complement accumulator to 16 bits.
func fold64(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// ChecksumCombine returns the one's complement sum of a and b (RFC 1071
// §2(A): the sum is commutative and associative, so partial sums combine).
func ChecksumCombine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// PseudoHeaderChecksum returns the one's complement sum of the pseudo-header
// used by TCP and UDP (RFC 793 §3.1, RFC 768; RFC 8200 §8.1 for IPv6): both
// addresses, the protocol number and the transport length. src and dst must
// be of the same family; an IPv4-mapped IPv6 address counts as IPv4.
func PseudoHeaderChecksum(proto uint8, src, dst netip.Addr, length uint16) uint16 {
	var s uint64
	if src.Unmap().Is4() {
		a, b := src.As4(), dst.As4()
		s = uint64(binary.BigEndian.Uint32(a[:])) + uint64(binary.BigEndian.Uint32(b[:]))
	} else {
		a, b := src.As16(), dst.As16()
		for i := 0; i < 16; i += 4 {
			s += uint64(binary.BigEndian.Uint32(a[i:])) + uint64(binary.BigEndian.Uint32(b[i:]))
		}
	}
	s += uint64(proto) + uint64(length)
	return fold64(s)
}

// UpdateChecksum16 returns the checksum field hc after a 16-bit word of the
// covered data changed from old to new, by RFC 1624 §3 eqn. 3:
// HC' = ~(~HC + ~m + m'). Unlike eqn. 2 it never turns a valid checksum into
// 0xffff (-0); a result of 0 is what a full recomputation gives too.
func UpdateChecksum16(hc, old, new uint16) uint16 {
	return ^UpdateSum16(^hc, old, new)
}

// UpdateChecksum32 is UpdateChecksum16 for a 32-bit field (an IPv4 address),
// treated as two 16-bit words.
func UpdateChecksum32(hc uint16, old, new uint32) uint16 {
	return ^UpdateSum32(^hc, old, new)
}

// UpdateSum16 returns the one's complement sum sum after one summed 16-bit
// word changed from old to new: sum + ~old + new. It updates a field that
// holds an uncomplemented sum, such as the pseudo-header sum of a packet
// whose transport checksum is left to the device (virtio 1.2 §5.1.6.2,
// VIRTIO_NET_HDR_F_NEEDS_CSUM; Linux CHECKSUM_PARTIAL).
func UpdateSum16(sum, old, new uint16) uint16 {
	s := uint32(sum) + uint32(^old) + uint32(new)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s + s>>16)
}

// UpdateSum32 is UpdateSum16 for a 32-bit field.
func UpdateSum32(sum uint16, old, new uint32) uint16 {
	s := uint64(sum) + uint64(^old>>16) + uint64(^old&0xffff) + uint64(new>>16) + uint64(new&0xffff)
	return fold64(s)
}
