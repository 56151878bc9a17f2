package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv6FixedSize is the size of the IPv6 fixed header (RFC 8200 §3).
const IPv6FixedSize = 40

// IPv6 is the IPv6 fixed header (RFC 8200 §3), viewed in place. Extension
// headers are not parsed.
type IPv6 []byte

// IsValid reports whether b holds a complete fixed header with version 6.
func (b IPv6) IsValid() bool { return len(b) >= IPv6FixedSize && b[0]>>4 == 6 }

// TrafficClass returns the traffic class.
func (b IPv6) TrafficClass() uint8 { return uint8(binary.BigEndian.Uint16(b[0:]) >> 4) }

// FlowLabel returns the 20-bit flow label.
func (b IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(b[0:]) & 0xfffff }

// PayloadLength returns the payload length (extension headers included).
func (b IPv6) PayloadLength() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// NextHeader returns the type of the header after the fixed header.
func (b IPv6) NextHeader() uint8 { return b[6] }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[7] }

// Src returns the source address.
func (b IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(b[8:24])) }

// Dst returns the destination address.
func (b IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(b[24:40])) }

// Payload returns the bytes after the fixed header, up to the payload length
// or the end of b.
func (b IPv6) Payload() []byte {
	end := min(IPv6FixedSize+int(b.PayloadLength()), len(b))
	return b[IPv6FixedSize:end]
}

// SetPayloadLength sets the payload length.
func (b IPv6) SetPayloadLength(v uint16) { binary.BigEndian.PutUint16(b[4:], v) }

// SetNextHeader sets the next header type.
func (b IPv6) SetNextHeader(v uint8) { b[6] = v }

// SetHopLimit sets the hop limit.
func (b IPv6) SetHopLimit(v uint8) { b[7] = v }

// SetSrc sets the source address.
func (b IPv6) SetSrc(a netip.Addr) { v := a.As16(); copy(b[8:24], v[:]) }

// SetDst sets the destination address.
func (b IPv6) SetDst(a netip.Addr) { v := a.As16(); copy(b[24:40], v[:]) }

// IPv6Fields are the fields Encode writes.
type IPv6Fields struct {
	TrafficClass  uint8
	FlowLabel     uint32
	PayloadLength uint16
	NextHeader    uint8
	HopLimit      uint8
	Src, Dst      netip.Addr
}

// Encode writes the fixed header into b (at least IPv6FixedSize bytes) and
// returns IPv6FixedSize.
func (b IPv6) Encode(f *IPv6Fields) int {
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], f.PayloadLength)
	b[6] = f.NextHeader
	b[7] = f.HopLimit
	b.SetSrc(f.Src)
	b.SetDst(f.Dst)
	return IPv6FixedSize
}
