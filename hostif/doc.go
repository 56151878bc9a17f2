// Package hostif owns vhost-arcnet's uplinks to the host: the Linux TAP
// device (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, one file descriptor per queue with
// IFF_MULTI_QUEUE, offloads through TUNSETOFFLOAD), the netlink setup of its
// point-to-point link network (vishvananda/netlink), and the nftables table
// that masquerades that network out of the host's default route
// (google/nftables, never by running nft).
package hostif
