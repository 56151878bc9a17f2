// Package services is the gateway's own host on the guest subnet: the
// address every guest uses as its router, DHCP server and DNS server
// (192.168.127.1 in the default 192.168.127.0/24).
//
// It owns:
//   - an ARP responder for the gateway address (RFC 826, RFC 5227 probes);
//   - ICMP echo replies from the gateway (RFC 792);
//   - a DHCPv4 server (RFC 2131, options of RFC 2132, RFC 3397 domain
//     search) on the insomniacslk/dhcp message model, with static
//     reservations and a lease database kept in a file that is replaced
//     atomically and loaded at start, so that a guest keeps its address
//     across a restart of the backend;
//   - a DNS server on the gateway address, over UDP and over TCP (a minimal
//     TCP responder for port 53 only, see tcpdns.go), built on miekg/dns:
//     authoritative for the guests' domain (gateway.<domain>, host.<domain>,
//     <dhcp-hostname>.<domain>) and the subnet's reverse zone, and a caching
//     forwarder for everything else to the host's resolvers (resolv.conf,
//     re-read when it changes) with TCP retry on truncation.
//
// The package is frame-in, frame-out: Gateway.HandleFrame takes an Ethernet
// frame addressed to the gateway (or broadcast) and answers through a
// reply function. It has no kernel sockets toward the guests; the only
// sockets it opens are the forwarder's, toward upstream resolvers. It does
// not know about virtqueues or the switch.
//
// # Threat model
//
// Every byte of a frame comes from an untrusted guest. Headers are parsed
// with datapath/header views, validated once (lengths, IPv4 header
// checksum, IPv4 total length against the frame); DHCP and DNS payloads are
// parsed by their libraries into private structures. Nothing panics on any
// input (fuzzed: FuzzHandleFrame, FuzzDHCP, FuzzDNS); what cannot be served
// is dropped and counted by reason (Stats). The frame must not change while
// HandleFrame runs: the switch passes a private copy, not guest memory.
//
// Shared tables are bounded against a guest that wants to exhaust them:
// one DHCP lease per MAC (chaddr must equal the Ethernet source, which the
// switch's anti-spoofing ties to the guest), offers held for a minute; at
// most 256 upstream DNS exchanges in flight and a bounded answer cache;
// at most 256 TCP connections (16 per guest address) with idle timeouts.
// Upstream answers are accepted only if they carry our random ID on the
// socket we sent from and echo our question.
//
// # Concurrency
//
// HandleFrame is safe for concurrent use from every switch worker. ARP and
// ICMP take no lock and allocate nothing in steady state; DHCP and the
// lease database share one mutex (lookups take its read side), the DNS
// cache and the TCP table one mutex each. Replies for forwarded DNS queries
// and TCP retransmissions come from the gateway's goroutines (one per
// upstream exchange, one TCP timer, one lease-file writer), so the reply
// function must be safe for concurrent use. Close stops every goroutine and
// writes the lease file a last time.
package services
