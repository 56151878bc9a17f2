// Package hostif owns vhost-arcnet's uplinks to the host: the Linux TAP
// device (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, one file descriptor per queue with
// IFF_MULTI_QUEUE, offloads through TUNSETOFFLOAD and TUNSETVNETHDRSZ;
// Documentation/networking/tuntap.rst, include/uapi/linux/if_tun.h), the
// netlink setup of its point-to-point link network (vishvananda/netlink:
// address, MTU, link state, route collision check), and the nftables table
// that masquerades that network out of the host's default route, with
// net.ipv4.ip_forward (google/nftables, never by running nft). The XDP
// uplink on a host NIC is its own package, hostif/xdp. It knows
// nothing of virtqueues: frames cross it as datapath.Frame scatter lists.
//
// It also owns the vmnet uplink (VMNet, macOS): a client of vmnet-helper
// (github.com/nirs/vmnet-helper), started as a child with one end of a unix
// datagram socketpair as its fd 3; it describes its vmnet interface in one
// line of JSON on stdout (ParseVMNetInfo) and then carries one Ethernet
// frame per datagram. On that link VMNet is a DHCP client (RFC 2131,
// vmnetdhcp.go) for the address the router NATs behind, renews the lease,
// and restarts a helper that exits (backoff). Everything but the helper's
// default location is platform-independent and tested on Linux against a
// fake helper (hostif/vmnettest).
//
// # Threat model
//
// Frames written to the TAP come from the datapath, which validated them
// (guest input is checked in datapath and nat, not here); the kernel checks
// every virtio-net header it is given again (virtio_net_hdr_to_skb) and a
// frame it refuses is counted, never fatal. Frames read from the TAP come
// from the host kernel: the lengths it returns are trusted, but the
// virtio-net header fields (virtio 1.2 §5.1.6) are validated before the
// frame goes on (known flags only, the checksum range and GSO header length
// inside the frame, a GSO type among the offloads negotiated, with a
// non-zero size), since code after the TAP indexes frames with them. The
// TAP, the link network and the nftables table are the host's
// configuration: every error path removes what it made, and an existing
// TAP (--uplink tap:NAME) is never changed beyond setting it up. Frames
// and DHCP replies from vmnet come from other hosts (bridged mode: a LAN):
// every DHCP reply is length- and checksum-checked and must be a
// BOOTREPLY for our MAC and transaction; vmnet-helper's description line is
// bounded (64 KiB) and every value in it checked. A large frame read in
// place (tap_inplace_linux.go) lands in the one attached guest's receive
// buffers, which that guest may change at any time: its virtio-net header
// is read into the queue's own memory, the router and the switch decide on
// their own copies of its head, and its bytes never reach another guest
// (datapath.Switch.InPlaceTarget); a fault in the guest's memory while the
// reader touches it drops the frame.
//
// # Concurrency
//
// A TAP has one reader goroutine per queue (Start), which reads into its own
// preallocated buffers and hands each batch to the peer; the frames are
// valid only during that Send; frames read in place hold their receive
// buffers (datapath.Reservation) from the read until that Send returned,
// one frame at a time. Send may be called from any goroutine: it
// takes the lock of the queue it writes to once per batch. SetPeer may be
// called at any time (atomic). Close stops the readers, waits for them and
// closes the descriptors; Send after Close drops. VMNet has one reader
// goroutine per helper, a supervisor (restarts) and a lease goroutine
// (DHCP renewal, the only user of the DHCP client after OpenVMNet); Send
// takes the link's write lock once per call; a restart swaps the link
// atomically and frames sent meanwhile are dropped. Masquerade holds its own
// netlink connection and /proc/sys file, both bound to the network
// namespace SetupMasquerade ran in.
package hostif
