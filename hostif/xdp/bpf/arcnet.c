// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// vhost-arcnet's XDP program: on the host NIC it redirects to vhost-arcnet's
// AF_XDP sockets the frames that belong to the NAT (IPv4 to the NIC's own
// address whose TCP/UDP destination port or ICMP echo identifier lies in
// the NAT's port range, and ICMP errors quoting such a flow) and passes
// everything else to the kernel untouched. See doc.go for what is passed on
// purpose (ARP, fragments, VLAN, IPv6).
//
// Self-contained: no kernel or libbpf headers, so that regenerating needs
// clang and nothing else. The few definitions below are the UAPI values
// of include/uapi/linux/bpf.h (Linux 6.1).

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
// BTF-defined map fields (the layout libbpf and cilium/ebpf read).
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

// struct xdp_md (include/uapi/linux/bpf.h).
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

#define BPF_MAP_TYPE_XSKMAP 17

// long bpf_redirect_map(void *map, u64 key, u64 flags): helper 51. The low
// two bits of flags are the action returned when key has no entry.
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define be16(x) __builtin_bswap16(x)
#else
#define be16(x) (x)
#endif

// xsks holds one AF_XDP socket per NIC receive queue, keyed by the queue
// index. The loader sizes it to the NIC's queue count.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Set by the loader before the program is loaded (read-only afterwards):
// the NIC's IPv4 address (network byte order, as in the header) and the
// NAT's port range (host byte order, inclusive).
volatile const __u32 nat_addr = 0;
volatile const __u16 port_min = 0;
volatile const __u16 port_max = 0;

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
// The fragment offset and More Fragments bits of the IPv4 flags/offset
// word (RFC 791 §3.1).
#define IP_MF_OFFSET 0x3fff

static __always_inline int in_range(__u16 port /* network order */)
{
	__u16 p = be16(port);
	return p >= port_min && p <= port_max;
}

// mine reports whether the frame in [data, end) is one of vhost-arcnet's.
static __always_inline int mine(__u8 *data, __u8 *end)
{
	if (data + ETH_HLEN > end)
		return 0;
	// Untagged IPv4 only: VLAN tags, IPv6 and ARP go to the kernel.
	if (*(__u16 *)(data + 12) != be16(ETH_P_IP))
		return 0;
	__u8 *ip = data + ETH_HLEN;
	if (ip + 20 > end)
		return 0;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ip[0] >> 4 != 4 || ihl < 20)
		return 0;
	if (*(__u32 *)(ip + 16) != nat_addr)
		return 0;
	// Fragments (first or later) are reassembled by the kernel.
	if (be16(*(__u16 *)(ip + 6)) & IP_MF_OFFSET)
		return 0;
	__u8 *l4 = ip + ihl;
	switch (ip[9]) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		if (l4 + 4 > end)
			return 0;
		return in_range(*(__u16 *)(l4 + 2));
	case IPPROTO_ICMP:
		break;
	default:
		return 0;
	}
	if (l4 + 8 > end)
		return 0;
	switch (l4[0]) {
	case ICMP_ECHOREPLY:
		return in_range(*(__u16 *)(l4 + 4));
	case ICMP_DEST_UNREACH:
	case ICMP_TIME_EXCEEDED:
	case ICMP_PARAMETERPROB:
		break;
	default:
		// Echo requests to the NIC's address are the host's to answer.
		return 0;
	}
	// An ICMP error (RFC 792) quotes the IPv4 header and first 8 bytes of
	// the datagram it is about: ours if we sent it, from the NAT address
	// and a port (echo identifier) in the range.
	__u8 *in = l4 + 8;
	if (in + 20 > end)
		return 0;
	__u32 eihl = (in[0] & 0x0f) * 4;
	if (in[0] >> 4 != 4 || eihl < 20)
		return 0;
	if (*(__u32 *)(in + 12) != nat_addr || be16(*(__u16 *)(in + 6)) & 0x1fff)
		return 0;
	__u8 *el4 = in + eihl;
	if (el4 + 8 > end)
		return 0;
	switch (in[9]) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return in_range(*(__u16 *)el4);
	case IPPROTO_ICMP:
		return el4[0] == ICMP_ECHO && in_range(*(__u16 *)(el4 + 4));
	}
	return 0;
}

SEC("xdp")
int arcnet_xdp(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	if (!mine(data, end))
		return XDP_PASS;
	// A frame of ours on a queue without a socket is dropped, not passed:
	// the kernel would answer it with a reset or a port unreachable and
	// break the guest's flow.
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
}

char _license[] SEC("license") = "Dual MIT/GPL";
