package headertest

import "net/netip"

// RefChecksum returns the RFC 1071 one's-complement sum of b (not its
// complement), starting from initial, the slow and obvious way: a byte at a
// time, the high byte of each 16-bit word first, the carries folded at the
// end. It is the reference the checks use, independent of header.Checksum.
func RefChecksum(b []byte, initial uint16) uint16 {
	s := uint64(initial)
	for i, v := range b {
		if i%2 == 0 {
			s += uint64(v) << 8
		} else {
			s += uint64(v)
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo returns the pseudo-header sum (RFC 793 §3.1, RFC 768, RFC 8200
// §8.1) by RefChecksum over the pseudo-header written out in bytes.
func refPseudo(proto uint8, src, dst netip.Addr, length int) uint16 {
	var b []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, 0, proto, byte(length>>8), byte(length))
	} else {
		s, d := src.As16(), dst.As16()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
	}
	return RefChecksum(b, 0)
}
