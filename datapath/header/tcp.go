package header

import "encoding/binary"

// TCP sizes.
const (
	TCPMinSize = 20 // header without options
	TCPMaxSize = 60 // data offset 15
)

// TCP flag bits (RFC 9293 §3.1, RFC 3168 §6.1 for ECE and CWR).
const (
	TCPFlagFIN uint8 = 1 << iota
	TCPFlagSYN
	TCPFlagRST
	TCPFlagPSH
	TCPFlagACK
	TCPFlagURG
	TCPFlagECE
	TCPFlagCWR
)

const (
	tcpSrcPort  = 0
	tcpDstPort  = 2
	tcpSeq      = 4
	tcpAck      = 8
	tcpDataOff  = 12
	tcpFlags    = 13
	tcpWindow   = 14
	tcpChecksum = 16
	tcpUrgent   = 18
)

// TCPChecksumOffset is the offset of the checksum field in the TCP header
// (virtio csum_offset for TCP).
const TCPChecksumOffset = tcpChecksum

// TCP is a TCP header (RFC 9293 §3.1) with its options, viewed in place; the
// slice may continue with the payload.
type TCP []byte

// IsValid reports whether b holds a complete header: data offset >= 5 and
// len(b) >= data offset*4.
func (b TCP) IsValid() bool {
	if len(b) < TCPMinSize {
		return false
	}
	hl := int(b[tcpDataOff]>>4) * 4
	return hl >= TCPMinSize && len(b) >= hl
}

// SrcPort returns the source port.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[tcpSrcPort:]) }

// DstPort returns the destination port.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[tcpDstPort:]) }

// Seq returns the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[tcpSeq:]) }

// Ack returns the acknowledgment number.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[tcpAck:]) }

// HeaderLen returns the data offset in bytes (options included).
func (b TCP) HeaderLen() int { return int(b[tcpDataOff]>>4) * 4 }

// Flags returns the flag byte (TCPFlagFIN ... TCPFlagCWR).
func (b TCP) Flags() uint8 { return b[tcpFlags] }

// Window returns the window field.
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[tcpWindow:]) }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[tcpChecksum:]) }

// UrgentPointer returns the urgent pointer.
func (b TCP) UrgentPointer() uint16 { return binary.BigEndian.Uint16(b[tcpUrgent:]) }

// Options returns the options.
func (b TCP) Options() []byte { return b[TCPMinSize:b.HeaderLen()] }

// Payload returns the bytes after the header.
func (b TCP) Payload() []byte { return b[b.HeaderLen():] }

// SetSrcPort sets the source port.
func (b TCP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(b[tcpSrcPort:], v) }

// SetDstPort sets the destination port.
func (b TCP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(b[tcpDstPort:], v) }

// SetSeq sets the sequence number.
func (b TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(b[tcpSeq:], v) }

// SetAck sets the acknowledgment number.
func (b TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(b[tcpAck:], v) }

// SetFlags sets the flag byte.
func (b TCP) SetFlags(v uint8) { b[tcpFlags] = v }

// SetWindow sets the window.
func (b TCP) SetWindow(v uint16) { binary.BigEndian.PutUint16(b[tcpWindow:], v) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[tcpChecksum:], v) }

// TCPFields are the fields Encode writes.
type TCPFields struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	UrgentPointer    uint16
	Options          []byte // padded by the caller to a multiple of 4, at most 40 bytes
}

// Encode writes the header (checksum field zero) into b, which must hold
// TCPMinSize+len(f.Options) bytes, and returns its length. Fill the checksum
// afterwards with SetChecksum(^Checksum(segment, pseudoHeaderSum)).
func (b TCP) Encode(f *TCPFields) int {
	hl := TCPMinSize + len(f.Options)
	binary.BigEndian.PutUint16(b[tcpSrcPort:], f.SrcPort)
	binary.BigEndian.PutUint16(b[tcpDstPort:], f.DstPort)
	binary.BigEndian.PutUint32(b[tcpSeq:], f.Seq)
	binary.BigEndian.PutUint32(b[tcpAck:], f.Ack)
	b[tcpDataOff] = uint8(hl/4) << 4
	b[tcpFlags] = f.Flags
	binary.BigEndian.PutUint16(b[tcpWindow:], f.Window)
	binary.BigEndian.PutUint16(b[tcpChecksum:], 0)
	binary.BigEndian.PutUint16(b[tcpUrgent:], f.UrgentPointer)
	copy(b[TCPMinSize:hl], f.Options)
	return hl
}
