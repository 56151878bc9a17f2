package header

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// IPv4 sizes.
const (
	IPv4MinSize = 20 // header without options
	IPv4MaxSize = 60 // IHL 15
)

// IPv4 flag bits in the flags/fragment-offset word (RFC 791 §3.1).
const (
	IPv4FlagDF uint16 = 0x4000 // don't fragment
	IPv4FlagMF uint16 = 0x2000 // more fragments
)

const (
	ipv4TOS      = 1
	ipv4TotalLen = 2
	ipv4ID       = 4
	ipv4FragOff  = 6
	ipv4TTL      = 8
	ipv4Protocol = 9
	ipv4Checksum = 10
	ipv4Src      = 12
	ipv4Dst      = 16
)

// IPv4 is an IPv4 header (RFC 791 §3.1) with its options, viewed in place;
// the slice may continue with the payload.
type IPv4 []byte

// IsValid reports whether b starts with a complete IPv4 header: version 4,
// IHL >= 5, len(b) >= IHL*4 and total length >= IHL*4. It does not require
// the whole datagram to be present (b may be a copy of the headers only);
// compare TotalLength with the frame size where that matters.
func (b IPv4) IsValid() bool {
	if len(b) < IPv4MinSize || b[0]>>4 != 4 {
		return false
	}
	hl := int(b[0]&0x0f) * 4
	return hl >= IPv4MinSize && len(b) >= hl && int(binary.BigEndian.Uint16(b[ipv4TotalLen:])) >= hl
}

// HeaderLen returns the header length in bytes (IHL*4, options included).
func (b IPv4) HeaderLen() int { return int(b[0]&0x0f) * 4 }

// TOS returns the type-of-service byte (DSCP and ECN).
func (b IPv4) TOS() uint8 { return b[ipv4TOS] }

// TotalLength returns the datagram length from the header.
func (b IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(b[ipv4TotalLen:]) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4ID:]) }

// FlagsFragmentOffset returns the raw flags and fragment offset word.
func (b IPv4) FlagsFragmentOffset() uint16 { return binary.BigEndian.Uint16(b[ipv4FragOff:]) }

// FragmentOffset returns the fragment offset in bytes.
func (b IPv4) FragmentOffset() int { return int(b.FlagsFragmentOffset()&0x1fff) * 8 }

// MoreFragments reports whether the MF flag is set.
func (b IPv4) MoreFragments() bool { return b.FlagsFragmentOffset()&IPv4FlagMF != 0 }

// DontFragment reports whether the DF flag is set.
func (b IPv4) DontFragment() bool { return b.FlagsFragmentOffset()&IPv4FlagDF != 0 }

// IsFragment reports whether the datagram is a fragment (MF set or a
// non-zero offset).
func (b IPv4) IsFragment() bool { return b.FlagsFragmentOffset()&(IPv4FlagMF|0x1fff) != 0 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[ipv4TTL] }

// Protocol returns the payload's protocol number.
func (b IPv4) Protocol() uint8 { return b[ipv4Protocol] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4Checksum:]) }

// Src returns the source address.
func (b IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4Src : ipv4Src+4])) }

// Dst returns the destination address.
func (b IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4Dst : ipv4Dst+4])) }

// Src4 returns the source address as a big-endian integer.
func (b IPv4) Src4() uint32 { return binary.BigEndian.Uint32(b[ipv4Src:]) }

// Dst4 returns the destination address as a big-endian integer.
func (b IPv4) Dst4() uint32 { return binary.BigEndian.Uint32(b[ipv4Dst:]) }

// Options returns the options (empty when IHL is 5).
func (b IPv4) Options() []byte { return b[IPv4MinSize:b.HeaderLen()] }

// Payload returns the bytes after the header, up to the total length or the
// end of b, whichever comes first.
func (b IPv4) Payload() []byte {
	end := min(int(b.TotalLength()), len(b))
	return b[b.HeaderLen():end]
}

// SetTOS sets the type-of-service byte.
func (b IPv4) SetTOS(v uint8) { b[ipv4TOS] = v }

// SetTotalLength sets the total length.
func (b IPv4) SetTotalLength(v uint16) { binary.BigEndian.PutUint16(b[ipv4TotalLen:], v) }

// SetID sets the identification field.
func (b IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(b[ipv4ID:], v) }

// SetFlagsFragmentOffset sets the raw flags and fragment offset word.
func (b IPv4) SetFlagsFragmentOffset(v uint16) { binary.BigEndian.PutUint16(b[ipv4FragOff:], v) }

// SetTTL sets the time to live.
func (b IPv4) SetTTL(v uint8) { b[ipv4TTL] = v }

// SetProtocol sets the protocol number.
func (b IPv4) SetProtocol(v uint8) { b[ipv4Protocol] = v }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[ipv4Checksum:], v) }

// SetSrc sets the source address; a must be IPv4 (As4 panics otherwise).
func (b IPv4) SetSrc(a netip.Addr) { v := a.As4(); copy(b[ipv4Src:], v[:]) }

// SetDst sets the destination address; a must be IPv4 (As4 panics otherwise).
func (b IPv4) SetDst(a netip.Addr) { v := a.As4(); copy(b[ipv4Dst:], v[:]) }

// SetSrc4 sets the source address from a big-endian integer.
func (b IPv4) SetSrc4(v uint32) { binary.BigEndian.PutUint32(b[ipv4Src:], v) }

// SetDst4 sets the destination address from a big-endian integer.
func (b IPv4) SetDst4(v uint32) { binary.BigEndian.PutUint32(b[ipv4Dst:], v) }

// ComputeChecksum returns the header checksum computed over the header with
// the checksum field taken as zero.
func (b IPv4) ComputeChecksum() uint16 {
	hl := b.HeaderLen()
	s := ChecksumCombine(Checksum(b[:ipv4Checksum], 0), Checksum(b[ipv4Checksum+2:hl], 0))
	return ^s
}

// UpdateChecksum stores ComputeChecksum in the checksum field.
func (b IPv4) UpdateChecksum() { b.SetChecksum(b.ComputeChecksum()) }

// IsChecksumValid reports whether the header checksum is correct.
func (b IPv4) IsChecksumValid() bool { return Checksum(b[:b.HeaderLen()], 0) == 0xffff }

// PseudoHeaderChecksum returns the TCP/UDP pseudo-header sum for this header
// and a transport length (RFC 793 §3.1, RFC 768).
func (b IPv4) PseudoHeaderChecksum(proto uint8, length uint16) uint16 {
	return fold64(uint64(b.Src4()) + uint64(b.Dst4()) + uint64(proto) + uint64(length))
}

// IPv4Fields are the fields Encode writes.
type IPv4Fields struct {
	TOS         uint8
	TotalLength uint16
	ID          uint16
	Flags       uint16 // IPv4FlagDF, IPv4FlagMF
	FragOffset  uint16 // in bytes, a multiple of 8
	TTL         uint8
	Protocol    uint8
	Src, Dst    netip.Addr // IPv4
	Options     []byte     // padded by the caller to a multiple of 4, at most 40 bytes
}

// Encode writes the header (with options and a correct checksum) into b and
// returns its length. b must hold IPv4MinSize+len(f.Options) bytes.
func (b IPv4) Encode(f *IPv4Fields) int {
	hl := IPv4MinSize + len(f.Options)
	b[0] = 0x40 | uint8(hl/4)
	b[ipv4TOS] = f.TOS
	binary.BigEndian.PutUint16(b[ipv4TotalLen:], f.TotalLength)
	binary.BigEndian.PutUint16(b[ipv4ID:], f.ID)
	binary.BigEndian.PutUint16(b[ipv4FragOff:], f.Flags|(f.FragOffset/8)&0x1fff)
	b[ipv4TTL] = f.TTL
	b[ipv4Protocol] = f.Protocol
	b.SetSrc(f.Src)
	b.SetDst(f.Dst)
	copy(b[IPv4MinSize:hl], f.Options)
	b.SetChecksum(0)
	b.SetChecksum(^Checksum(b[:hl], 0))
	return hl
}
