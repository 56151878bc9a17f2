package router

import (
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/nat"
)

// Direction is the way a packet crosses the router.
type Direction int

// The two directions.
const (
	Out Direction = iota // guest -> uplink
	In                   // uplink -> guest
	numDirections
)

// String returns "out" or "in".
func (d Direction) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// DropReason says why the router dropped a packet. The NAT engine's
// reasons come first, with the same values as nat.Reason.
type DropReason int

// Router drop reasons beyond nat's (nat.Reason values 0..nat.NumReasons-1).
const (
	// DropTTL: the TTL would reach zero here (RFC 1812 §5.3.1); an ICMP
	// time exceeded went back to a guest that sent it.
	DropTTL DropReason = DropReason(nat.NumReasons) + iota
	// DropMTU: larger than the uplink's MTU; with DF an ICMP
	// "fragmentation needed" went back to the guest (RFC 1191).
	DropMTU
	// DropNoNeighbour: no MAC known for the destination (a guest address
	// without a lease, or the uplink's next hop not yet resolved).
	DropNoNeighbour
	// DropMalformed: not a frame the router can parse (router-level:
	// short Ethernet or IPv4 header, VLAN tags, foreign destination MAC).
	DropMalformed
	// DropNoUplink: no uplink is attached.
	DropNoUplink
	numDropReasons
)

// NumDropReasons is the number of drop reasons: 0..NumDropReasons-1 are
// every DropReason (nat.ReasonNone, 0, is never counted), for callers that
// export them all (the metrics).
const NumDropReasons = numDropReasons

var extraNames = [...]string{"ttl", "mtu", "no_neighbour", "malformed", "no_uplink"}

// String names the reason as in the counter names.
func (r DropReason) String() string {
	switch {
	case r >= 0 && r < DropReason(nat.NumReasons):
		return strings.ReplaceAll(nat.Reason(r).String(), "-", "_")
	case r >= DropTTL && r < numDropReasons:
		return extraNames[r-DropTTL]
	}
	return "unknown"
}

// Stats are the router's counters, per direction. All fields are safe for
// concurrent use; the datapath adds per batch.
type Stats struct {
	// Packets and Bytes count what entered the router for routing (not
	// frames for the gateway itself).
	Packets, Bytes [numDirections]atomic.Uint64
	// Translated counts packets the NAT engine passed (sent on).
	Translated [numDirections]atomic.Uint64
	// Hairpin counts packets a guest sent to the external address that
	// came back to a guest.
	Hairpin atomic.Uint64
	// ICMPTimeExceeded and ICMPFragNeeded count the errors the gateway
	// sent to guests.
	ICMPTimeExceeded, ICMPFragNeeded atomic.Uint64
	// ICMPRateLimited counts errors not sent because of the rate limit
	// (RFC 1812 §4.3.2.8).
	ICMPRateLimited atomic.Uint64
	// ARPReplies counts answers to the uplink's ARP requests for the NAT
	// address; ARPRequests the router's own requests for its next hop.
	ARPReplies, ARPRequests atomic.Uint64
	// EchoReplies counts answers to pings of the NAT address.
	EchoReplies atomic.Uint64
	drops       [numDirections][numDropReasons]atomic.Uint64
}

// Drop adds n to the drop counter of reason r in direction d.
func (s *Stats) Drop(d Direction, r DropReason, n uint64) {
	if n != 0 && d >= 0 && d < numDirections && r >= 0 && r < numDropReasons {
		s.drops[d][r].Add(n)
	}
}

// Drops returns the drop counter of reason r in direction d.
func (s *Stats) Drops(d Direction, r DropReason) uint64 {
	if d < 0 || d >= numDirections || r < 0 || r >= numDropReasons {
		return 0
	}
	return s.drops[d][r].Load()
}

// LogAttrs returns the counters as log attributes named router_<dir>_...,
// for the "gateway stats" record. Drop counters that are zero are left out
// except the ones the operators look at first.
func (s *Stats) LogAttrs() []slog.Attr {
	var a []slog.Attr
	for d := Out; d < numDirections; d++ {
		p := "router_" + d.String() + "_"
		a = append(a,
			slog.Uint64(p+"packets", s.Packets[d].Load()),
			slog.Uint64(p+"bytes", s.Bytes[d].Load()),
			slog.Uint64(p+"translated", s.Translated[d].Load()))
		for r := DropReason(0); r < numDropReasons; r++ {
			if r == DropReason(nat.ReasonNone) {
				continue
			}
			a = append(a, slog.Uint64(p+"drop_"+r.String(), s.drops[d][r].Load()))
		}
	}
	return append(a,
		slog.Uint64("router_hairpin", s.Hairpin.Load()),
		slog.Uint64("router_icmp_time_exceeded", s.ICMPTimeExceeded.Load()),
		slog.Uint64("router_icmp_frag_needed", s.ICMPFragNeeded.Load()),
		slog.Uint64("router_icmp_rate_limited", s.ICMPRateLimited.Load()),
		slog.Uint64("router_arp_replies", s.ARPReplies.Load()),
		slog.Uint64("router_arp_requests", s.ARPRequests.Load()),
		slog.Uint64("router_echo_replies", s.EchoReplies.Load()))
}
