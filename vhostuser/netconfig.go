package vhostuser

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// The virtio-net device configuration space (virtio 1.2 §5.1.4), served
// with GET_CONFIG and SET_CONFIG when VHOST_USER_PROTOCOL_F_CONFIG is
// negotiated (vhost-user spec "Virtio device config space"). Frontends
// that build the guest's config space from the backend's (crosvm's
// vhost-user frontend, cloud-hypervisor since it negotiates CONFIG for
// vhost-user-net) take the MAC, the MTU and the number of queue pairs from
// here; QEMU's virtio-net keeps its own config space and never negotiates
// CONFIG for a net device.

// struct virtio_net_config (virtio 1.2 §5.1.4), little-endian:
//
//	u8   mac[6];                            // 0
//	le16 status;                            // 6
//	le16 max_virtqueue_pairs;               // 8
//	le16 mtu;                               // 10
//	le32 speed;                             // 12
//	u8   duplex;                            // 16
//	u8   rss_max_key_size;                  // 17
//	le16 rss_max_indirection_table_length;  // 18
//	le32 supported_hash_types;              // 20
const (
	netCfgMAC           = 0
	netCfgStatus        = 6
	netCfgMaxVQPairs    = 8
	netCfgMTU           = 10
	netCfgSpeed         = 12
	netCfgDuplex        = 16
	netCfgRSSMaxKey     = 17
	netCfgRSSMaxIndir   = 18
	netCfgHashTypes     = 20
	macLen              = 6
	maxConfigSpace      = 256 // VHOST_USER_MAX_CONFIG_SIZE: the most a VhostUserConfig payload carries
	configFlagMigration = 1 << 0
	// configFlagRustVMMMigration is rust-vmm's VhostUserConfigFlags::
	// LIVE_MIGRATION (0x2). rust-vmm calls 0x1 WRITABLE, where the spec
	// says 0x1 is "live migration" and 0 "writable fields"; GET_CONFIG
	// from rust-vmm frontends (cloud-hypervisor, crosvm) carries 0x1.
	configFlagRustVMMMigration = 1 << 1
	configFlagsKnown           = configFlagMigration | configFlagRustVMMMigration
)

// NetConfigSize is the size of struct virtio_net_config in virtio 1.2
// §5.1.4: 24 bytes. GET_CONFIG reads past it, up to the 256 bytes a
// VhostUserConfig can carry, return zeros (the spec's "tail padding" of a
// configuration space, virtio 1.2 §2.5).
const NetConfigSize = 24

// Status bits of the config space's status field (virtio 1.2 §5.1.4).
const (
	// NetStatusLinkUp is VIRTIO_NET_S_LINK_UP: the link is up. The
	// backend always reports it (with VIRTIO_NET_F_STATUS offered): a
	// session exists only while the port is attached.
	NetStatusLinkUp uint16 = 1 << 0
	// NetStatusAnnounce is VIRTIO_NET_S_ANNOUNCE: the device asks the
	// driver to announce itself (gratuitous ARP) after a migration. It is
	// never set: the driver acknowledges it on the control virtqueue
	// (VIRTIO_NET_CTRL_ANNOUNCE_ACK, virtio 1.2 §5.1.6.5.4), which a
	// vhost-user net backend does not get (frontends keep the control
	// queue), and a change of the config space reaches the driver only
	// through a configuration change notification the backend cannot send
	// without VHOST_USER_PROTOCOL_F_BACKEND_REQ. Frontends announce
	// migrated guests themselves (QEMU: SEND_RARP or its own announce;
	// cloud-hypervisor: its control queue).
	NetStatusAnnounce uint16 = 1 << 1
)

// Values of the config space's speed and duplex fields (virtio 1.2 §5.1.4,
// VIRTIO_NET_F_SPEED_DUPLEX).
const (
	// SpeedUnknown is the speed field's "unknown speed" (0xffffffff).
	SpeedUnknown uint32 = 0xffffffff
	// DuplexFull is the duplex field's "full duplex", 0x01 as in §5.1.4's
	// description and Linux's DUPLEX_FULL (the normative paragraph of
	// virtio 1.2 swaps 0x00 and 0x01 by mistake).
	DuplexFull uint8 = 0x01
)

// configFeatures are the virtio-net features that describe fields of the
// config space: offered only while the config space is served
// (VHOST_USER_PROTOCOL_F_CONFIG offered).
const configFeatures = virtio.NetFMAC | virtio.NetFStatus | virtio.NetFSpeedDuplex

var le = binary.LittleEndian

// netConfig writes the session's struct virtio_net_config into b. Fields
// exist when the feature that conditions them is offered (virtio 1.2
// §2.5.2: "The device MUST allow reading of any device-specific
// configuration field before FEATURES_OK is set by the driver. This
// includes fields which are conditional on feature bits, as long as those
// feature bits are offered by the device."), before and after
// SET_FEATURES alike; a field that does not exist reads as zero.
func (s *Session) netConfig(b *[NetConfigSize]byte) {
	*b = [NetConfigSize]byte{}
	f := s.cfg.features
	if f&virtio.NetFMAC != 0 {
		copy(b[netCfgMAC:], s.mac[:])
	}
	if f&virtio.NetFStatus != 0 {
		le.PutUint16(b[netCfgStatus:], NetStatusLinkUp)
	}
	if f&virtio.NetFMQ != 0 {
		// "The device MUST set max_virtqueue_pairs to between 1 and
		// 0x8000 inclusive, if it offers VIRTIO_NET_F_MQ" (Options allow
		// 1..128).
		le.PutUint16(b[netCfgMaxVQPairs:], uint16(s.cfg.queuePairs))
	}
	if f&virtio.NetFMTU != 0 {
		// 68..65535 (Options and NET_SET_MTU enforce it). A frontend that
		// told us its MTU with NET_SET_MTU gets that one back.
		mtu := s.cfg.mtu
		if s.mtu != 0 {
			mtu = s.mtu
		}
		le.PutUint16(b[netCfgMTU:], mtu)
	}
	if f&virtio.NetFSpeedDuplex != 0 {
		le.PutUint32(b[netCfgSpeed:], s.cfg.linkSpeed)
		b[netCfgDuplex] = DuplexFull
	}
	// rss_max_key_size, rss_max_indirection_table_length and
	// supported_hash_types exist with VIRTIO_NET_F_RSS or
	// VIRTIO_NET_F_HASH_REPORT, never offered: zero.
}

// configHdr is the head of a "Virtio device config space" payload
// (VhostUserConfig): offset, size, flags, then size bytes.
type configHdr struct {
	Offset, Size, Flags uint32
}

func decodeConfigHdr(b []byte) configHdr {
	return configHdr{Offset: ne.Uint32(b[0:]), Size: ne.Uint32(b[4:]), Flags: ne.Uint32(b[8:])}
}

func (h configHdr) encode(b []byte) {
	ne.PutUint32(b[0:], h.Offset)
	ne.PutUint32(b[4:], h.Size)
	ne.PutUint32(b[8:], h.Flags)
}

// check validates an access of h.Size bytes at h.Offset inside a space of
// limit bytes, and the flags.
func (h configHdr) check(limit uint32) error {
	if h.Flags&^configFlagsKnown != 0 {
		return fmt.Errorf("%w: unknown config flags %#x", ErrInvalid, h.Flags)
	}
	if h.Size == 0 || uint64(h.Offset)+uint64(h.Size) > uint64(limit) {
		return fmt.Errorf("%w: config access of %d bytes at offset %d outside %d bytes", ErrInvalid, h.Size, h.Offset, limit)
	}
	return nil
}

// GET_CONFIG: "vhost-user back-end's payload size MUST match the
// front-end's request, vhost-user back-end uses zero length of payload to
// indicate an error" (spec, VHOST_USER_GET_CONFIG). A well-formed request
// the backend cannot serve (unknown flags, size 0, an access past the 256
// bytes of a config space message) gets a VhostUserConfig with size 0 and
// no bytes, as rust-vmm's backend answers and its frontend expects; the
// session goes on. A message whose size field disagrees with its length
// never gets here (payloadConfig.decode).
func (s *Session) getConfig(p *payload, _ *fdSet) ([]byte, error) {
	h := decodeConfigHdr(p.Raw)
	out := s.replyBody()
	if err := h.check(maxConfigSpace); err != nil {
		s.log.Warn("GET_CONFIG refused", "offset", h.Offset, "size", h.Size, "flags", h.Flags, "err", err)
		configHdr{Offset: h.Offset, Flags: h.Flags}.encode(out)
		return out[:sizeConfigHdr], nil
	}
	var cfg [NetConfigSize]byte
	s.netConfig(&cfg)
	data := out[sizeConfigHdr : sizeConfigHdr+h.Size]
	clear(data)
	if h.Offset < NetConfigSize {
		copy(data, cfg[h.Offset:])
	}
	h.encode(out)
	return out[:sizeConfigHdr+h.Size], nil
}

// SET_CONFIG: "back-ends MUST NOT accept SET_CONFIG for read-only
// configuration space fields unless the live migration bit is set" (spec,
// VHOST_USER_SET_CONFIG). Every field of virtio_net_config is read-only
// for a driver (virtio 1.2 §5.1.4) except mac under the legacy interface:
// "When using the legacy interface, mac is driver-writable which provided
// a way for drivers to update the MAC without negotiating
// VIRTIO_NET_F_CTRL_MAC_ADDR" (§5.1.4.3). So:
//
//   - a write from the guest (flags 0) may change mac, and nothing else,
//     once SET_FEATURES acked neither VIRTIO_F_VERSION_1 nor
//     VIRTIO_NET_F_CTRL_MAC_ADDR (QEMU's virtio_net_set_config applies the
//     same rule); Linux's legacy driver writes it byte by byte
//     (virtnet_set_mac_address), so every byte is taken as it comes;
//   - a migration write (flag 0x1, or rust-vmm's 0x2) may set mac, the
//     destination taking the source's address; every other byte it writes
//     must equal what this device reports (the number of queue pairs, the
//     MTU and the link speed are this backend's options, not state);
//   - anything else (a read-only field changed, bytes past the 24 of the
//     struct, unknown flags) is refused: a non-zero ack with REPLY_ACK,
//     one log line, and the session goes on.
//
// A MAC change reaches the device through MACSetter.
func (s *Session) setConfig(p *payload, _ *fdSet) ([]byte, error) {
	h := decodeConfigHdr(p.Raw)
	if err := h.check(NetConfigSize); err != nil {
		return nil, reject(err)
	}
	var cur [NetConfigSize]byte
	s.netConfig(&cur)
	next := cur
	copy(next[h.Offset:], p.Raw[sizeConfigHdr:])
	if !bytes.Equal(next[macLen:], cur[macLen:]) {
		return nil, reject(fmt.Errorf("%w: read-only config field written at offset %d", ErrInvalid, h.Offset))
	}
	if next == cur {
		return nil, nil
	}
	migration := h.Flags&configFlagsKnown != 0
	switch {
	case s.cfg.features&virtio.NetFMAC == 0:
		return nil, reject(fmt.Errorf("%w: mac written but VIRTIO_NET_F_MAC is not offered", ErrNotNegotiated))
	case !migration && !s.macWritable():
		return nil, reject(fmt.Errorf("%w: mac is read-only unless the driver uses the legacy interface", ErrInvalid))
	}
	copy(s.mac[:], next[netCfgMAC:netCfgMAC+macLen])
	s.log.Info("guest MAC address set through the config space", "mac", macString(s.mac), "migration", migration)
	if ms, ok := s.dev.(MACSetter); ok {
		ms.SetMAC(s.mac)
	}
	return nil, nil
}

// macWritable reports whether the driver may write mac (legacy interface,
// virtio 1.2 §5.1.4.3): features were acked, without VIRTIO_F_VERSION_1 and
// without VIRTIO_NET_F_CTRL_MAC_ADDR.
func (s *Session) macWritable() bool {
	return s.featuresAcked && s.features&(virtio.FVersion1|virtio.NetFCtrlMACAddr) == 0
}

// GenerateMAC returns the MAC address a guest port gets when Options.MACs
// has none for its socket: a locally administered unicast address
// (02:xx:xx:xx:xx:xx: "a locally-administered MAC address", virtio 1.2
// §5.1.4.2 citing IEEE 802 "9.2 48-bit universal LAN MAC addresses";
// the locally administered bit set, the group bit clear) whose other five
// octets are the first bytes of SHA-256("vhost-arcnet mac", path, slot).
// path is the socket path
// as given to Listen or Connect, made absolute; slot is the port's
// connection slot on that socket (SessionInfo.Slot). The same socket path
// and connection order give the same addresses after a restart.
func GenerateMAC(path string, slot int) [6]byte {
	h := sha256.New()
	h.Write([]byte("vhost-arcnet mac\x00"))
	h.Write([]byte(macPath(path)))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(slot), 10))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return [6]byte{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// macPath is the form of a socket path that MAC addresses are derived from
// and Options.MACs is keyed by: absolute and clean ("" stays "", for
// ServeConn).
func macPath(path string) string {
	if path == "" {
		return ""
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return filepath.Clean(path)
}

// macPlus returns base with k added to its last three octets (the NIC
// specific part, modulo 2^24): the address of slot k of a socket whose
// slot 0 has base.
func macPlus(base [6]byte, k int) [6]byte {
	n := (uint32(base[3])<<16 | uint32(base[4])<<8 | uint32(base[5])) + uint32(k)
	base[3], base[4], base[5] = byte(n>>16), byte(n>>8), byte(n)
	return base
}

// macString formats a MAC address as 02:00:5e:10:00:01.
func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}
