// Package header provides byte-slice views of the packet headers the router
// touches (Ethernet with one 802.1Q tag, ARP for Ethernet/IPv4, IPv4, the
// IPv6 fixed header, TCP, UDP and ICMPv4), builders that write those headers
// into a caller's buffer, and the Internet checksum helpers: the full sum
// (RFC 1071), pseudo-header sums (RFC 793 §3.1, RFC 768, RFC 8200 §8.1) and
// the incremental update of RFC 1624 §3 (HC' = ~(~HC + ~m + m')).
//
// The style follows gVisor's pkg/tcpip/header: a header is a named []byte
// (type IPv4 []byte) whose methods read and write fields at fixed offsets.
//
// # Threat model
//
// Every byte may come from an untrusted guest or from the network. A view is
// validated once where the bytes enter, with its IsValid method; after that,
// accessors do not re-check lengths, so calling an accessor on a view whose
// IsValid reported false may panic (index out of range). IsValid never panics
// on any input, and the accessors of a valid view never panic; the fuzz tests
// check both. Views alias the caller's buffer: when that buffer is guest
// memory the guest can change it between two reads, so parse a private copy
// (ARCHITECTURE.md "Rules that hold everywhere").
//
// Multi-byte fields are big-endian (network byte order). The package uses no
// unsafe and allocates nothing except in String methods.
//
// # Concurrency
//
// Views are plain slices with no state of their own; the usual rules for
// concurrent access to a []byte apply.
package header
