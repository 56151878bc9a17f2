package header

import (
	"encoding/binary"
	"fmt"
)

// MAC is an IEEE 802 48-bit MAC address.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// String formats m as six colon-separated hex bytes.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// IsBroadcast reports whether m is the broadcast address.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsMulticast reports whether m has the group bit set (broadcast included).
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// EtherType values (IEEE 802.3 Length/Type field).
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeVLAN uint16 = 0x8100 // IEEE 802.1Q customer VLAN tag (TPID)
	EtherTypeIPv6 uint16 = 0x86dd
)

// Ethernet header sizes.
const (
	EthernetMinSize = 14                            // dst, src, type
	VLANTagSize     = 4                             // 802.1Q TPID + TCI
	EthernetMaxSize = EthernetMinSize + VLANTagSize // with one 802.1Q tag
)

// Ethernet is an Ethernet II header, optionally with one IEEE 802.1Q tag
// (TPID 0x8100) between the source address and the EtherType, viewed in place.
// Stacked tags (QinQ) are not parsed: their outer TPID 0x88a8 reads as an
// unknown EtherType.
type Ethernet []byte

// IsValid reports whether b holds a complete header (18 bytes when tagged).
func (b Ethernet) IsValid() bool {
	if len(b) < EthernetMinSize {
		return false
	}
	return !b.HasVLAN() || len(b) >= EthernetMaxSize
}

// Dst returns the destination address.
func (b Ethernet) Dst() MAC { return MAC(b[0:6]) }

// Src returns the source address.
func (b Ethernet) Src() MAC { return MAC(b[6:12]) }

// SetDst sets the destination address.
func (b Ethernet) SetDst(m MAC) { copy(b[0:6], m[:]) }

// SetSrc sets the source address.
func (b Ethernet) SetSrc(m MAC) { copy(b[6:12], m[:]) }

// HasVLAN reports whether the frame carries an 802.1Q tag.
func (b Ethernet) HasVLAN() bool { return binary.BigEndian.Uint16(b[12:]) == EtherTypeVLAN }

// VLANTCI returns the 802.1Q tag control information (PCP, DEI, VID), or 0
// when the frame is untagged.
func (b Ethernet) VLANTCI() uint16 {
	if !b.HasVLAN() {
		return 0
	}
	return binary.BigEndian.Uint16(b[14:])
}

// VLANID returns the 12-bit VLAN identifier, or 0 when untagged.
func (b Ethernet) VLANID() uint16 { return b.VLANTCI() & 0x0fff }

// HeaderLen returns 14, or 18 with a VLAN tag.
func (b Ethernet) HeaderLen() int {
	if b.HasVLAN() {
		return EthernetMaxSize
	}
	return EthernetMinSize
}

// EtherType returns the type of the payload (after the VLAN tag, if any).
func (b Ethernet) EtherType() uint16 { return binary.BigEndian.Uint16(b[b.HeaderLen()-2:]) }

// SetEtherType sets the type of the payload (after the VLAN tag, if any).
func (b Ethernet) SetEtherType(t uint16) { binary.BigEndian.PutUint16(b[b.HeaderLen()-2:], t) }

// Payload returns the bytes after the header.
func (b Ethernet) Payload() []byte { return b[b.HeaderLen():] }

// EthernetFields are the fields Encode writes.
type EthernetFields struct {
	Dst, Src  MAC
	VLAN      bool   // write an 802.1Q tag
	VLANTCI   uint16 // tag control information when VLAN is set
	EtherType uint16
}

// Encode writes the header into b, which must hold EthernetMinSize bytes, or
// EthernetMaxSize with f.VLAN, and returns the header length.
func (b Ethernet) Encode(f *EthernetFields) int {
	copy(b[0:6], f.Dst[:])
	copy(b[6:12], f.Src[:])
	if f.VLAN {
		binary.BigEndian.PutUint16(b[12:], EtherTypeVLAN)
		binary.BigEndian.PutUint16(b[14:], f.VLANTCI)
		binary.BigEndian.PutUint16(b[16:], f.EtherType)
		return EthernetMaxSize
	}
	binary.BigEndian.PutUint16(b[12:], f.EtherType)
	return EthernetMinSize
}
