package services

import (
	"log/slog"
	"sync/atomic"
)

// Counter names one of the gateway's event counters.
type Counter int

// Counters. Their String forms are the attribute names in LogAttrs.
const (
	FramesIn        Counter = iota // frames passed to HandleFrame
	FramesOut                      // frames handed to a reply function
	ARPReplies                     // ARP replies for the gateway address
	ICMPEchoReplies                // ICMP echo replies from the gateway

	DHCPDiscovers     // DHCPDISCOVER received
	DHCPOffers        // DHCPOFFER sent
	DHCPRequests      // DHCPREQUEST received
	DHCPAcks          // DHCPACK sent (leases and INFORM answers)
	DHCPNaks          // DHCPNAK sent
	DHCPReleases      // DHCPRELEASE received
	DHCPDeclines      // DHCPDECLINE received
	DHCPInforms       // DHCPINFORM received
	DHCPPoolExhausted // DISCOVER or REQUEST that found no free address
	LeaseWrites       // lease database written to disk
	LeaseWriteErrors  // lease database writes that failed

	DNSQueries      // DNS queries received (UDP and TCP)
	DNSLocal        // answered from the local zone
	DNSNXDomain     // local NXDOMAIN answers
	DNSCacheHits    // answered from the cache
	DNSForwarded    // upstream exchanges started
	DNSTCPRetries   // upstream UDP answers truncated and retried over TCP
	DNSUpstreamErrs // upstream exchanges that failed or answered SERVFAIL/REFUSED
	DNSServFail     // SERVFAIL sent because every upstream failed
	DNSFormErr      // FORMERR sent for malformed queries
	DNSNotImp       // NOTIMP sent for opcodes other than QUERY
	DNSTruncated    // UDP answers truncated to the client's size (TC set)

	TCPConns  // TCP DNS connections accepted
	TCPResets // TCP resets sent
	TCPRetransmits

	numCounters
)

// NumCounters is the number of counters: 0..NumCounters-1 are every
// Counter, for callers that export them all (the metrics).
const NumCounters = numCounters

var counterNames = [numCounters]string{
	FramesIn:          "frames_in",
	FramesOut:         "frames_out",
	ARPReplies:        "arp_replies",
	ICMPEchoReplies:   "icmp_echo_replies",
	DHCPDiscovers:     "dhcp_discovers",
	DHCPOffers:        "dhcp_offers",
	DHCPRequests:      "dhcp_requests",
	DHCPAcks:          "dhcp_acks",
	DHCPNaks:          "dhcp_naks",
	DHCPReleases:      "dhcp_releases",
	DHCPDeclines:      "dhcp_declines",
	DHCPInforms:       "dhcp_informs",
	DHCPPoolExhausted: "dhcp_pool_exhausted",
	LeaseWrites:       "lease_writes",
	LeaseWriteErrors:  "lease_write_errors",
	DNSQueries:        "dns_queries",
	DNSLocal:          "dns_local",
	DNSNXDomain:       "dns_nxdomain",
	DNSCacheHits:      "dns_cache_hits",
	DNSForwarded:      "dns_forwarded",
	DNSTCPRetries:     "dns_tcp_retries",
	DNSUpstreamErrs:   "dns_upstream_errors",
	DNSServFail:       "dns_servfail",
	DNSFormErr:        "dns_formerr",
	DNSNotImp:         "dns_notimp",
	DNSTruncated:      "dns_truncated",
	TCPConns:          "tcp_conns",
	TCPResets:         "tcp_resets",
	TCPRetransmits:    "tcp_retransmits",
}

// String returns the counter's attribute name.
func (c Counter) String() string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return counterNames[c]
}

// DropReason says why the gateway dropped a frame or a message.
type DropReason int

// Drop reasons. Their String forms are the suffixes of the drop_<reason>
// attributes in LogAttrs.
const (
	DropMalformed     DropReason = iota // truncated or inconsistent L2-L4 headers
	DropBadChecksum                     // IPv4 header checksum wrong
	DropUnsupported                     // EtherType, IP protocol or ARP kind the gateway does not serve
	DropNotLocal                        // IPv4 not addressed to the gateway (routing is NAT's job)
	DropFragment                        // IPv4 fragment (the gateway does not reassemble)
	DropNoService                       // UDP or TCP port without a service on the gateway
	DropDHCPMalformed                   // DHCP message that does not parse or lacks a message type
	DropDHCPSpoofed                     // DHCP chaddr differs from the Ethernet source, or not Ethernet
	DropDHCPIgnored                     // DHCP message that needs no answer (relayed, for another server, unknown lease)
	DropDNSMalformed                    // DNS message too short to answer even FORMERR
	DropDNSResponse                     // DNS message with QR set
	DropDNSOverload                     // too many queries in flight upstream
	DropTCP                             // TCP segment dropped (no connection, window, table full)
	DropClosed                          // frame after Close
	numDropReasons
)

// NumDropReasons is the number of drop reasons: 0..NumDropReasons-1 are
// every DropReason.
const NumDropReasons = numDropReasons

var dropNames = [numDropReasons]string{
	DropMalformed:     "malformed",
	DropBadChecksum:   "bad_checksum",
	DropUnsupported:   "unsupported",
	DropNotLocal:      "not_local",
	DropFragment:      "fragment",
	DropNoService:     "no_service",
	DropDHCPMalformed: "dhcp_malformed",
	DropDHCPSpoofed:   "dhcp_spoofed",
	DropDHCPIgnored:   "dhcp_ignored",
	DropDNSMalformed:  "dns_malformed",
	DropDNSResponse:   "dns_response",
	DropDNSOverload:   "dns_overload",
	DropTCP:           "tcp",
	DropClosed:        "closed",
}

// String returns the drop counter's name without the drop_ prefix.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropNames[r]
}

// Stats are the gateway's counters. All methods are safe for concurrent
// use.
type Stats struct {
	counters [numCounters]atomic.Uint64
	drops    [numDropReasons]atomic.Uint64
	// upstreamLatency is the latency of upstream DNS exchanges that got
	// an answer (Gateway.UpstreamLatency).
	upstreamLatency latencyHistogram
}

// Get returns counter c.
func (s *Stats) Get(c Counter) uint64 {
	if c < 0 || c >= numCounters {
		return 0
	}
	return s.counters[c].Load()
}

// Drops returns the drop counter of reason r.
func (s *Stats) Drops(r DropReason) uint64 {
	if r < 0 || r >= numDropReasons {
		return 0
	}
	return s.drops[r].Load()
}

func (s *Stats) inc(c Counter)     { s.counters[c].Add(1) }
func (s *Stats) drop(r DropReason) { s.drops[r].Add(1) }

// LogAttrs returns every counter as a log attribute (drops as
// drop_<reason>), for a "gateway stats" record.
func (s *Stats) LogAttrs() []slog.Attr {
	a := make([]slog.Attr, 0, int(numCounters)+int(numDropReasons))
	for c := Counter(0); c < numCounters; c++ {
		a = append(a, slog.Uint64(c.String(), s.counters[c].Load()))
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		a = append(a, slog.Uint64("drop_"+r.String(), s.drops[r].Load()))
	}
	return a
}
