package header

import "encoding/binary"

// UDPSize is the size of the UDP header (RFC 768).
const UDPSize = 8

// UDPChecksumOffset is the offset of the checksum field in the UDP header
// (virtio csum_offset for UDP).
const UDPChecksumOffset = 6

// UDP is a UDP header (RFC 768), viewed in place; the slice may continue
// with the payload.
type UDP []byte

// IsValid reports whether b holds a complete header.
func (b UDP) IsValid() bool { return len(b) >= UDPSize }

// SrcPort returns the source port.
func (b UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b UDP) DstPort() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Length returns the length field (header and payload).
func (b UDP) Length() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// Checksum returns the checksum field; 0 means "no checksum" over IPv4
// (RFC 768).
func (b UDP) Checksum() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// Payload returns the bytes after the header, up to the length field or the
// end of b.
func (b UDP) Payload() []byte {
	end := min(max(int(b.Length()), UDPSize), len(b))
	return b[UDPSize:end]
}

// SetSrcPort sets the source port.
func (b UDP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(b[0:], v) }

// SetDstPort sets the destination port.
func (b UDP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }

// SetLength sets the length field.
func (b UDP) SetLength(v uint16) { binary.BigEndian.PutUint16(b[4:], v) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[6:], v) }

// UDPFields are the fields Encode writes.
type UDPFields struct {
	SrcPort, DstPort uint16
	Length           uint16
}

// Encode writes the header (checksum field zero) into b, which must hold
// UDPSize bytes, and returns UDPSize. To fill the checksum, compute
// c := ^Checksum(datagram, pseudoHeaderSum) and store 0xffff if c is 0
// (RFC 768: a computed zero is transmitted as all ones).
func (b UDP) Encode(f *UDPFields) int {
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint16(b[4:], f.Length)
	binary.BigEndian.PutUint16(b[6:], 0)
	return UDPSize
}
