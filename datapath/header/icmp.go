package header

import "encoding/binary"

// ICMPv4 message types (RFC 792, RFC 1191 for "fragmentation needed").
const (
	ICMPv4EchoReply      uint8 = 0
	ICMPv4DstUnreachable uint8 = 3
	ICMPv4SourceQuench   uint8 = 4 // deprecated, RFC 6633
	ICMPv4Redirect       uint8 = 5
	ICMPv4Echo           uint8 = 8
	ICMPv4TimeExceeded   uint8 = 11
	ICMPv4ParamProblem   uint8 = 12
)

// ICMPv4 destination-unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
const (
	ICMPv4NetUnreachable   uint8 = 0
	ICMPv4HostUnreachable  uint8 = 1
	ICMPv4ProtoUnreachable uint8 = 2
	ICMPv4PortUnreachable  uint8 = 3
	ICMPv4FragNeeded       uint8 = 4  // RFC 1191: next-hop MTU in bytes 6-7
	ICMPv4AdminProhibited  uint8 = 13 // communication administratively prohibited
)

// ICMPv4MinSize is the size of the ICMPv4 header: type, code, checksum and
// the 4-byte rest of header (echo identifier and sequence, MTU, pointer).
const ICMPv4MinSize = 8

// ICMPv4 is an ICMPv4 message (RFC 792), viewed in place.
type ICMPv4 []byte

// IsValid reports whether b holds the 8-byte header.
func (b ICMPv4) IsValid() bool { return len(b) >= ICMPv4MinSize }

// Type returns the message type.
func (b ICMPv4) Type() uint8 { return b[0] }

// Code returns the message code.
func (b ICMPv4) Code() uint8 { return b[1] }

// Checksum returns the checksum field.
func (b ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// Ident returns the echo identifier (bytes 4-5).
func (b ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(b[4:]) }

// Seq returns the echo sequence number (bytes 6-7).
func (b ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// MTU returns the next-hop MTU of a "fragmentation needed" message (RFC 1191
// §4, bytes 6-7).
func (b ICMPv4) MTU() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// Payload returns the bytes after the 8-byte header: the echo data, or for
// an error the embedded IPv4 header and at least 8 bytes of its payload.
func (b ICMPv4) Payload() []byte { return b[ICMPv4MinSize:] }

// IsEcho reports whether b is an echo request or reply.
func (b ICMPv4) IsEcho() bool { return b[0] == ICMPv4Echo || b[0] == ICMPv4EchoReply }

// IsError reports whether b is an error message that embeds the header of the
// datagram it is about (destination unreachable, source quench, redirect,
// time exceeded, parameter problem).
func (b ICMPv4) IsError() bool {
	switch b[0] {
	case ICMPv4DstUnreachable, ICMPv4SourceQuench, ICMPv4Redirect, ICMPv4TimeExceeded, ICMPv4ParamProblem:
		return true
	}
	return false
}

// SetType sets the type.
func (b ICMPv4) SetType(v uint8) { b[0] = v }

// SetCode sets the code.
func (b ICMPv4) SetCode(v uint8) { b[1] = v }

// SetChecksum sets the checksum field.
func (b ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }

// SetIdent sets the echo identifier.
func (b ICMPv4) SetIdent(v uint16) { binary.BigEndian.PutUint16(b[4:], v) }

// SetSeq sets the echo sequence number.
func (b ICMPv4) SetSeq(v uint16) { binary.BigEndian.PutUint16(b[6:], v) }

// SetMTU sets the next-hop MTU.
func (b ICMPv4) SetMTU(v uint16) { binary.BigEndian.PutUint16(b[6:], v) }

// ComputeChecksum returns the checksum over the whole message (all of b)
// with the checksum field taken as zero.
func (b ICMPv4) ComputeChecksum() uint16 {
	return ^ChecksumCombine(Checksum(b[:2], 0), Checksum(b[4:], 0))
}

// UpdateChecksum stores ComputeChecksum in the checksum field.
func (b ICMPv4) UpdateChecksum() { b.SetChecksum(b.ComputeChecksum()) }

// ICMPv4Fields are the fields Encode writes.
type ICMPv4Fields struct {
	Type, Code uint8
	Rest       uint32 // bytes 4-7: identifier<<16|sequence, MTU, pointer<<24
}

// Encode writes the 8-byte header into b; payload is copied after it (b
// must hold ICMPv4MinSize+len(payload) bytes) and the checksum is computed
// over both. It returns the message length. payload may overlap b (copy
// semantics), so an error message can be built around a datagram in place.
func (b ICMPv4) Encode(f *ICMPv4Fields, payload []byte) int {
	n := ICMPv4MinSize + len(payload)
	copy(b[ICMPv4MinSize:n], payload)
	b[0], b[1] = f.Type, f.Code
	binary.BigEndian.PutUint16(b[2:], 0)
	binary.BigEndian.PutUint32(b[4:], f.Rest)
	binary.BigEndian.PutUint16(b[2:], ^Checksum(b[:n], 0))
	return n
}
