package hostif

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// maxVMNetInfoLine bounds the description line read from vmnet-helper's
// stdout: the real one is about 400 bytes.
const maxVMNetInfoLine = 64 << 10

// VMNetInfo is vmnet-helper's description of the vmnet interface it
// started: the one line of JSON it writes on stdout once the interface is
// up (vmnet-helper docs/integration.md "Starting the helper with a file
// descriptor"). Its keys are the vmnet_start_interface() parameters of
// Apple's vmnet.h (vmnet_mac_address_key, vmnet_mtu_key, ...), printed
// under their string values.
type VMNetInfo struct {
	// MAC is vmnet_mac_address: the address vmnet allocated for the
	// interface; vhost-arcnet uses it as its own on the vmnet link.
	MAC header.MAC
	// MTU is vmnet_mtu; MaxPacketSize is vmnet_max_packet_size, the
	// largest frame (Ethernet header included) the interface takes.
	MTU, MaxPacketSize int
	// InterfaceID is vmnet_interface_id (a UUID): the same ID gives the
	// same MAC on the next start.
	InterfaceID string
	// Start, End and Mask are vmnet_start_address, vmnet_end_address and
	// vmnet_subnet_mask (shared and host modes): vmnet's own address on the
	// link, the end of its DHCP pool, and the subnet mask. Invalid in
	// bridged mode, where the LAN's DHCP server decides.
	Start, End netip.Addr
	Mask       netip.Addr
	// NAT66Prefix is vmnet_nat66_prefix (shared mode), or empty.
	NAT66Prefix string
	// ReadMaxPackets and WriteMaxPackets are vmnet_read_max_packets and
	// vmnet_write_max_packets: vmnet's batch sizes (informational).
	ReadMaxPackets, WriteMaxPackets int
}

// vmnetInfoJSON is the wire form: every field optional, so that a missing
// key is told apart from a zero.
type vmnetInfoJSON struct {
	MAC             *string `json:"vmnet_mac_address"`
	MTU             *int64  `json:"vmnet_mtu"`
	MaxPacketSize   *int64  `json:"vmnet_max_packet_size"`
	InterfaceID     *string `json:"vmnet_interface_id"`
	Start           *string `json:"vmnet_start_address"`
	End             *string `json:"vmnet_end_address"`
	Mask            *string `json:"vmnet_subnet_mask"`
	NAT66Prefix     *string `json:"vmnet_nat66_prefix"`
	ReadMaxPackets  *int64  `json:"vmnet_read_max_packets"`
	WriteMaxPackets *int64  `json:"vmnet_write_max_packets"`
}

// ParseVMNetInfo parses vmnet-helper's description line. Unknown keys are
// ignored (newer helpers add some); the MAC and MTU are required, and every
// value present is checked: a unicast MAC, an MTU of 576..65535, a maximum
// packet size that holds an MTU-sized frame, IPv4 addresses.
func ParseVMNetInfo(line []byte) (VMNetInfo, error) {
	var w vmnetInfoJSON
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return VMNetInfo{}, errors.New("empty description line")
	}
	if len(line) > maxVMNetInfoLine {
		return VMNetInfo{}, fmt.Errorf("description line of %d bytes (at most %d)", len(line), maxVMNetInfoLine)
	}
	if err := json.Unmarshal(line, &w); err != nil {
		return VMNetInfo{}, fmt.Errorf("description line: %w", err)
	}
	var info VMNetInfo
	if w.MAC == nil {
		return VMNetInfo{}, errors.New("description line: no vmnet_mac_address")
	}
	hw, err := net.ParseMAC(*w.MAC)
	if err != nil || len(hw) != 6 {
		return VMNetInfo{}, fmt.Errorf("description line: vmnet_mac_address %q: not an Ethernet MAC", *w.MAC)
	}
	info.MAC = header.MAC(hw)
	if info.MAC.IsMulticast() || info.MAC == (header.MAC{}) {
		return VMNetInfo{}, fmt.Errorf("description line: vmnet_mac_address %v: not unicast", info.MAC)
	}
	if w.MTU == nil {
		return VMNetInfo{}, errors.New("description line: no vmnet_mtu")
	}
	if *w.MTU < 576 || *w.MTU > 65535 {
		return VMNetInfo{}, fmt.Errorf("description line: vmnet_mtu %d: want 576..65535", *w.MTU)
	}
	info.MTU = int(*w.MTU)
	info.MaxPacketSize = info.MTU + header.EthernetMinSize
	if w.MaxPacketSize != nil {
		// With TSO vmnet takes 64 KiB frames; 65535 + 14 is the most any
		// mode reports.
		if *w.MaxPacketSize < int64(info.MaxPacketSize) || *w.MaxPacketSize > 65535+header.EthernetMinSize {
			return VMNetInfo{}, fmt.Errorf("description line: vmnet_max_packet_size %d: want %d..%d",
				*w.MaxPacketSize, info.MaxPacketSize, 65535+header.EthernetMinSize)
		}
		info.MaxPacketSize = int(*w.MaxPacketSize)
	}
	if w.InterfaceID != nil {
		info.InterfaceID = *w.InterfaceID
	}
	if w.NAT66Prefix != nil {
		info.NAT66Prefix = *w.NAT66Prefix
	}
	for _, a := range []struct {
		key string
		v   *string
		dst *netip.Addr
	}{
		{"vmnet_start_address", w.Start, &info.Start},
		{"vmnet_end_address", w.End, &info.End},
		{"vmnet_subnet_mask", w.Mask, &info.Mask},
	} {
		if a.v == nil {
			continue
		}
		ip, err := netip.ParseAddr(*a.v)
		if err != nil || !ip.Is4() {
			return VMNetInfo{}, fmt.Errorf("description line: %s %q: not an IPv4 address", a.key, *a.v)
		}
		*a.dst = ip
	}
	for _, n := range []struct {
		key string
		v   *int64
		dst *int
	}{
		{"vmnet_read_max_packets", w.ReadMaxPackets, &info.ReadMaxPackets},
		{"vmnet_write_max_packets", w.WriteMaxPackets, &info.WriteMaxPackets},
	} {
		if n.v == nil {
			continue
		}
		if *n.v < 1 || *n.v > 1<<16 {
			return VMNetInfo{}, fmt.Errorf("description line: %s %d: want 1..65536", n.key, *n.v)
		}
		*n.dst = int(*n.v)
	}
	return info, nil
}

// Prefix returns the vmnet subnet (Start with Mask), or an invalid prefix
// when the helper did not say (bridged mode) or the mask is not contiguous.
func (i VMNetInfo) Prefix() netip.Prefix {
	if !i.Start.Is4() || !i.Mask.Is4() {
		return netip.Prefix{}
	}
	m := i.Mask.As4()
	ones, bits := net.IPMask(m[:]).Size()
	if bits != 32 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(i.Start, ones).Masked()
}
