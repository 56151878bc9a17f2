package hostif

import (
	"log/slog"
	"net/netip"
)

// MaxQueues is the largest number of queues a TAP is opened with, one per
// datapath worker (datapath.MaxQueuePairs).
const MaxQueues = 16

// TAPOptions configures OpenTAP.
type TAPOptions struct {
	// Name is the device name; "" lets the kernel pick one from "arcnet%d"
	// (create mode only).
	Name string
	// Existing attaches to an existing TAP named Name, typically a
	// persistent one an administrator made for an unprivileged user
	// (ip tuntap add NAME mode tap user U vnet_hdr [multi_queue]). It is not
	// created, addressed or deleted: its IPv4 address is the host's end of
	// the link network, and the NAT address is the first other usable
	// address of that address's prefix.
	Existing bool
	// Queues is the number of queues, 1..MaxQueues (0 means 1). More than
	// one opens the device with IFF_MULTI_QUEUE, one file descriptor per
	// queue.
	Queues int
	// LinkNet is the point-to-point link network in create mode
	// (DefaultLinkNet when invalid): the host's end is its first usable
	// address, which the TAP gets, and the NAT address its second.
	LinkNet netip.Prefix
	// MTU is the device's MTU in create mode (0 means 1500); an existing
	// device's MTU is read from it.
	MTU int
	// USO also asks the kernel for UDP segmentation offload frames
	// (TUN_F_USO4/6, VIRTIO_NET_HDR_GSO_UDP_L4, Linux 6.2) on the read
	// side. Off by default: guests do not negotiate GUEST_USO and the
	// switch cannot segment UDP_L4 frames in software yet, so the kernel
	// segments them before they reach the TAP's reader.
	USO bool
	// Logger receives the TAP's log records; nil means slog.Default().
	Logger *slog.Logger
}

// MasqueradeOptions configures SetupMasquerade.
type MasqueradeOptions struct {
	// Table is the name of vhost-arcnet's nftables table (family ip);
	// "" means "vhost_arcnet".
	Table string
	// Source is the network whose packets are masqueraded: the link
	// network.
	Source netip.Prefix
	// OutIface is the interface packets are masqueraded out of; "" means
	// the interface of the host's IPv4 default route.
	OutIface string
	// Logger receives the log records; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultMasqueradeTable is the nftables table SetupMasquerade uses when
// MasqueradeOptions.Table is empty.
const DefaultMasqueradeTable = "vhost_arcnet"
