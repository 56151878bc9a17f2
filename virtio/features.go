package virtio

// Feature bits as uint64 masks (virtio 1.2 §5.1.3 for the network device,
// §6 "Reserved Feature Bits" for the transport-independent ones).
const (
	// NetFCsum is VIRTIO_NET_F_CSUM (bit 0): the device handles packets with partial checksum.
	NetFCsum uint64 = 1 << 0
	// NetFGuestCsum is VIRTIO_NET_F_GUEST_CSUM (bit 1): the driver handles packets with partial checksum.
	NetFGuestCsum uint64 = 1 << 1
	// NetFCtrlGuestOffloads is VIRTIO_NET_F_CTRL_GUEST_OFFLOADS (bit 2): control channel offloads reconfiguration.
	NetFCtrlGuestOffloads uint64 = 1 << 2
	// NetFMTU is VIRTIO_NET_F_MTU (bit 3): the device reports its maximum MTU in config space.
	NetFMTU uint64 = 1 << 3
	// NetFMAC is VIRTIO_NET_F_MAC (bit 5): the device has a given MAC address.
	NetFMAC uint64 = 1 << 5
	// NetFGuestTSO4 is VIRTIO_NET_F_GUEST_TSO4 (bit 7): the driver can receive TSOv4.
	NetFGuestTSO4 uint64 = 1 << 7
	// NetFGuestTSO6 is VIRTIO_NET_F_GUEST_TSO6 (bit 8): the driver can receive TSOv6.
	NetFGuestTSO6 uint64 = 1 << 8
	// NetFGuestECN is VIRTIO_NET_F_GUEST_ECN (bit 9): the driver can receive TSO with ECN.
	NetFGuestECN uint64 = 1 << 9
	// NetFGuestUFO is VIRTIO_NET_F_GUEST_UFO (bit 10): the driver can receive UFO.
	NetFGuestUFO uint64 = 1 << 10
	// NetFHostTSO4 is VIRTIO_NET_F_HOST_TSO4 (bit 11): the device can receive TSOv4.
	NetFHostTSO4 uint64 = 1 << 11
	// NetFHostTSO6 is VIRTIO_NET_F_HOST_TSO6 (bit 12): the device can receive TSOv6.
	NetFHostTSO6 uint64 = 1 << 12
	// NetFHostECN is VIRTIO_NET_F_HOST_ECN (bit 13): the device can receive TSO with ECN.
	NetFHostECN uint64 = 1 << 13
	// NetFHostUFO is VIRTIO_NET_F_HOST_UFO (bit 14): the device can receive UFO.
	NetFHostUFO uint64 = 1 << 14
	// NetFMrgRxbuf is VIRTIO_NET_F_MRG_RXBUF (bit 15): the driver can merge receive buffers.
	NetFMrgRxbuf uint64 = 1 << 15
	// NetFStatus is VIRTIO_NET_F_STATUS (bit 16): configuration status field is available.
	NetFStatus uint64 = 1 << 16
	// NetFCtrlVQ is VIRTIO_NET_F_CTRL_VQ (bit 17): control channel is available.
	NetFCtrlVQ uint64 = 1 << 17
	// NetFCtrlRx is VIRTIO_NET_F_CTRL_RX (bit 18): control channel RX mode support.
	NetFCtrlRx uint64 = 1 << 18
	// NetFCtrlVLAN is VIRTIO_NET_F_CTRL_VLAN (bit 19): control channel VLAN filtering.
	NetFCtrlVLAN uint64 = 1 << 19
	// NetFGuestAnnounce is VIRTIO_NET_F_GUEST_ANNOUNCE (bit 21): the driver can send gratuitous packets.
	NetFGuestAnnounce uint64 = 1 << 21
	// NetFMQ is VIRTIO_NET_F_MQ (bit 22): the device supports multiqueue with automatic receive steering.
	NetFMQ uint64 = 1 << 22
	// NetFCtrlMACAddr is VIRTIO_NET_F_CTRL_MAC_ADDR (bit 23): set MAC address through the control channel.
	NetFCtrlMACAddr uint64 = 1 << 23
	// NetFHostUSO is VIRTIO_NET_F_HOST_USO (bit 56): the device can receive USO packets.
	NetFHostUSO uint64 = 1 << 56
	// NetFGuestHdrLen is VIRTIO_NET_F_GUEST_HDRLEN (bit 59): the driver provides the exact hdr_len value.
	NetFGuestHdrLen uint64 = 1 << 59
	// NetFSpeedDuplex is VIRTIO_NET_F_SPEED_DUPLEX (bit 63): the device reports speed and duplex.
	NetFSpeedDuplex uint64 = 1 << 63

	// FNotifyOnEmpty is VIRTIO_F_NOTIFY_ON_EMPTY (bit 24, legacy): notify when the avail ring runs empty.
	FNotifyOnEmpty uint64 = 1 << 24
	// FAnyLayout is VIRTIO_F_ANY_LAYOUT (bit 27, legacy): no framing assumption on descriptor layout.
	FAnyLayout uint64 = 1 << 27
	// FIndirectDesc is VIRTIO_F_INDIRECT_DESC (bit 28): the driver can use VIRTQ_DESC_F_INDIRECT (§2.7.5.3).
	FIndirectDesc uint64 = 1 << 28
	// FEventIdx is VIRTIO_F_EVENT_IDX (bit 29): the used_event and avail_event fields (§2.7.7, §2.7.10).
	FEventIdx uint64 = 1 << 29
	// FVersion1 is VIRTIO_F_VERSION_1 (bit 32): compliance with virtio 1.x (little-endian everything).
	FVersion1 uint64 = 1 << 32
	// FAccessPlatform is VIRTIO_F_ACCESS_PLATFORM (bit 33): the device is behind an IOMMU.
	FAccessPlatform uint64 = 1 << 33
	// FRingPacked is VIRTIO_F_RING_PACKED (bit 34): the packed virtqueue layout (§2.8).
	FRingPacked uint64 = 1 << 34
	// FInOrder is VIRTIO_F_IN_ORDER (bit 35): buffers are used in the order they were made available.
	FInOrder uint64 = 1 << 35
	// FOrderPlatform is VIRTIO_F_ORDER_PLATFORM (bit 36): platform memory ordering is required.
	FOrderPlatform uint64 = 1 << 36
	// FNotificationData is VIRTIO_F_NOTIFICATION_DATA (bit 38): the driver passes extra data with notifications.
	FNotificationData uint64 = 1 << 38
)
