package vhostuser

import (
	"math/bits"
	"strconv"
	"strings"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Virtio feature bits that vhost-user adds to the device's own (vhost-user
// spec "Communication" and "Migration").
const (
	// FLogAll is VHOST_F_LOG_ALL (bit 26): the frontend asks the backend to
	// log every write to guest memory in the dirty log (live migration). It
	// is turned on and off with SET_FEATURES.
	FLogAll uint64 = 1 << 26
	// FProtocolFeatures is VHOST_USER_F_PROTOCOL_FEATURES (bit 30): the
	// backend supports GET/SET_PROTOCOL_FEATURES; once acked, rings start
	// disabled and SET_VRING_ENABLE enables them (spec "Ring states").
	FProtocolFeatures uint64 = 1 << 30
)

// Protocol feature bits (vhost-user spec "Protocol features").
const (
	// ProtocolFMQ is VHOST_USER_PROTOCOL_F_MQ (bit 0): GET_QUEUE_NUM.
	ProtocolFMQ uint64 = 1 << 0
	// ProtocolFLogShmfd is VHOST_USER_PROTOCOL_F_LOG_SHMFD (bit 1): the
	// dirty log is shared memory passed with SET_LOG_BASE.
	ProtocolFLogShmfd uint64 = 1 << 1
	// ProtocolFRARP is VHOST_USER_PROTOCOL_F_RARP (bit 2): SEND_RARP.
	ProtocolFRARP uint64 = 1 << 2
	// ProtocolFReplyAck is VHOST_USER_PROTOCOL_F_REPLY_ACK (bit 3): the
	// need_reply flag asks for an ack of any request.
	ProtocolFReplyAck uint64 = 1 << 3
	// ProtocolFMTU is VHOST_USER_PROTOCOL_F_MTU (bit 4): NET_SET_MTU.
	ProtocolFMTU uint64 = 1 << 4
	// ProtocolFBackendReq is VHOST_USER_PROTOCOL_F_SLAVE_REQ (bit 5). Not
	// offered.
	ProtocolFBackendReq uint64 = 1 << 5
	// ProtocolFConfig is VHOST_USER_PROTOCOL_F_CONFIG (bit 9):
	// GET_CONFIG/SET_CONFIG serve the virtio-net config space (MAC,
	// status, queue pairs, MTU, speed and duplex: netconfig.go). QEMU's
	// virtio-net does not ack it (QEMU, Debian's 7.2.22 included, logs
	// "vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU
	// does not." and masks it, hw/virtio/vhost-user.c
	// vhost_user_backend_init); crosvm and cloud-hypervisor take the
	// guest's MAC from it.
	ProtocolFConfig uint64 = 1 << 9
	// ProtocolFResetDevice is VHOST_USER_PROTOCOL_F_RESET_DEVICE (bit 13).
	// Not offered.
	ProtocolFResetDevice uint64 = 1 << 13
	// ProtocolFInbandNotifications is
	// VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS (bit 14). Not offered.
	ProtocolFInbandNotifications uint64 = 1 << 14
	// ProtocolFConfigureMemSlots is
	// VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS (bit 15):
	// GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG.
	ProtocolFConfigureMemSlots uint64 = 1 << 15
	// ProtocolFStatus is VHOST_USER_PROTOCOL_F_STATUS (bit 16):
	// SET_STATUS/GET_STATUS.
	ProtocolFStatus uint64 = 1 << 16
)

// SupportedProtocolFeatures is every protocol feature this package
// implements; Options.ProtocolFeatures must be a subset.
const SupportedProtocolFeatures = ProtocolFMQ | ProtocolFLogShmfd | ProtocolFRARP |
	ProtocolFReplyAck | ProtocolFMTU | ProtocolFConfig | ProtocolFConfigureMemSlots | ProtocolFStatus

// DefaultProtocolFeatures is what a Server offers when
// Options.ProtocolFeatures is zero: all of SupportedProtocolFeatures.
const DefaultProtocolFeatures = SupportedProtocolFeatures

// DefaultFeatures is the virtio-net feature set vhost-arcnet offers
// (issue 2): VERSION_1, MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4/6,
// GUEST_TSO4/6, HOST_ECN, GUEST_ECN, EVENT_IDX, INDIRECT_DESC, MQ, MTU,
// PROTOCOL_FEATURES and VHOST_F_LOG_ALL (live migration); for the config
// space (issue 5), MAC, STATUS and SPEED_DUPLEX, which a Server offers
// only while it offers VHOST_USER_PROTOCOL_F_CONFIG; and IN_ORDER (virtio
// 1.2 §2.7.9, §6.2: "a device MUST use buffers in the same order in which
// they have been available"), which Devices honour (see Device): with it,
// cloud-hypervisor restarts the rings of a reconnected backend at their
// used index instead of skipping every buffer the guest had made
// available (virtio-devices/src/vhost_user/vu_common_ctrl.rs
// reinitialize_vhost_user), so the guest's receive buffers are not lost.
const DefaultFeatures = virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.NetFCsum |
	virtio.NetFGuestCsum | virtio.NetFHostTSO4 | virtio.NetFHostTSO6 |
	virtio.NetFGuestTSO4 | virtio.NetFGuestTSO6 | virtio.NetFHostECN |
	virtio.NetFGuestECN | virtio.FEventIdx | virtio.FIndirectDesc |
	virtio.NetFMQ | virtio.NetFMTU | FProtocolFeatures | FLogAll |
	virtio.NetFMAC | virtio.NetFStatus | virtio.NetFSpeedDuplex | virtio.FInOrder

// unsupportedFeatures are virtio features the backend cannot honour
// whatever Options say: IOMMU translation (IOTLB messages) is not
// implemented, and VIRTIO_F_NOTIFICATION_DATA needs in-band data.
// VIRTIO_F_RING_PACKED is supported (virtio.Queue works packed rings) but
// not in DefaultFeatures: see PackedFeatures.
const unsupportedFeatures = virtio.FAccessPlatform | virtio.FNotificationData

// PackedFeatures is DefaultFeatures with VIRTIO_F_RING_PACKED (virtio 1.2
// §2.8) offered too. Packed rings are negotiable, not offered by default:
// they measure slower than split rings here (README "Performance",
// issue 14).
const PackedFeatures = DefaultFeatures | virtio.FRingPacked

var protocolFeatureNames = [...]string{
	0: "MQ", 1: "LOG_SHMFD", 2: "RARP", 3: "REPLY_ACK", 4: "MTU", 5: "SLAVE_REQ",
	6: "CROSS_ENDIAN", 7: "CRYPTO_SESSION", 8: "PAGEFAULT", 9: "CONFIG",
	10: "SLAVE_SEND_FD", 11: "HOST_NOTIFIER", 12: "INFLIGHT_SHMFD", 13: "RESET_DEVICE",
	14: "INBAND_NOTIFICATIONS", 15: "CONFIGURE_MEM_SLOTS", 16: "STATUS",
}

// protocolFeatureString names the bits of a protocol feature mask, for logs.
func protocolFeatureString(f uint64) string {
	var b strings.Builder
	for f != 0 {
		i := bits.TrailingZeros64(f)
		f &^= 1 << i
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		if i < len(protocolFeatureNames) && protocolFeatureNames[i] != "" {
			b.WriteString(protocolFeatureNames[i])
		} else {
			b.WriteString("bit")
			b.WriteString(strconv.Itoa(i))
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
