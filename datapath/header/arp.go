package header

import (
	"encoding/binary"
	"net/netip"
)

// ARP operation codes (RFC 826).
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARPSize is the size of an ARP packet for Ethernet and IPv4.
const ARPSize = 28

// ARP is an ARP packet for Ethernet hardware and IPv4 protocol addresses
// (RFC 826), viewed in place.
type ARP []byte

// IsValid reports whether b is at least ARPSize bytes and declares
// hardware type Ethernet (1, length 6) and protocol IPv4 (0x0800, length 4).
func (b ARP) IsValid() bool {
	return len(b) >= ARPSize &&
		binary.BigEndian.Uint16(b[0:]) == 1 && binary.BigEndian.Uint16(b[2:]) == EtherTypeIPv4 &&
		b[4] == 6 && b[5] == 4
}

// Op returns the operation (ARPRequest, ARPReply).
func (b ARP) Op() uint16 { return binary.BigEndian.Uint16(b[6:]) }

// SenderMAC returns the sender hardware address.
func (b ARP) SenderMAC() MAC { return MAC(b[8:14]) }

// SenderIP returns the sender protocol address.
func (b ARP) SenderIP() netip.Addr { return netip.AddrFrom4([4]byte(b[14:18])) }

// TargetMAC returns the target hardware address.
func (b ARP) TargetMAC() MAC { return MAC(b[18:24]) }

// TargetIP returns the target protocol address.
func (b ARP) TargetIP() netip.Addr { return netip.AddrFrom4([4]byte(b[24:28])) }

// ARPFields are the fields Encode writes.
type ARPFields struct {
	Op        uint16
	SenderMAC MAC
	SenderIP  netip.Addr // IPv4
	TargetMAC MAC
	TargetIP  netip.Addr // IPv4
}

// Encode writes an Ethernet/IPv4 ARP packet into b (at least ARPSize bytes)
// and returns ARPSize. The addresses must be IPv4 (As4 panics otherwise).
func (b ARP) Encode(f *ARPFields) int {
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], EtherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], f.Op)
	copy(b[8:14], f.SenderMAC[:])
	s := f.SenderIP.As4()
	copy(b[14:18], s[:])
	copy(b[18:24], f.TargetMAC[:])
	t := f.TargetIP.As4()
	copy(b[24:28], t[:])
	return ARPSize
}
