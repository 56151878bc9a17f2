package nat

import (
	"fmt"
	"net/netip"
)

// Side is where a packet enters the engine: from a guest (through the
// switch) or from the uplink.
type Side uint8

// The two sides.
const (
	Guest  Side = 0
	Uplink Side = 1
)

// String returns "guest" or "uplink".
func (s Side) String() string {
	if s == Guest {
		return "guest"
	}
	return "uplink"
}

// Flags describe the offload state of a packet, as the virtio-net header
// gave it (virtio 1.2 §5.1.6.2).
type Flags uint8

const (
	// CsumPartial says the transport checksum field holds only the
	// pseudo-header sum and the device computes the rest
	// (VIRTIO_NET_HDR_F_NEEDS_CSUM with csum_start at the transport header).
	// Address changes are folded into that sum; port changes are not, since
	// the final checksum covers the rewritten ports anyway.
	CsumPartial Flags = 1 << iota
	// GSO says the packet is a super-frame (gso_type != VIRTIO_NET_HDR_GSO_NONE):
	// one header for up to 64 KiB of payload that is segmented later. It
	// implies CsumPartial (virtio 1.2 §5.1.6.2: the driver MUST set NEEDS_CSUM
	// when gso_type is not NONE), and the IPv4 total length is not checked
	// against the header lengths.
	GSO
)

// Verdict is what to do with a packet after Translate.
type Verdict uint8

// Verdicts.
const (
	// Drop: discard the packet; Packet.Reason says why.
	Drop Verdict = iota
	// ToUplink: send the rewritten packet out of the uplink.
	ToUplink
	// ToGuest: deliver the rewritten packet to the guest that owns its
	// destination address (a reply, a port forward, hairpinned traffic, or
	// an ICMP error the engine generated in place of a refused packet).
	ToGuest
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case ToUplink:
		return "to-uplink"
	case ToGuest:
		return "to-guest"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Reason says why a packet was dropped, or, with a ToGuest/ToUplink verdict,
// that the engine replaced a refused packet with an ICMP error (ReasonTableFull,
// ReasonQuota, ReasonNoPort).
type Reason uint8

// Drop reasons.
const (
	ReasonNone        Reason = iota
	ReasonMalformed          // truncated or inconsistent headers
	ReasonUnsupported        // not IPv4, or not TCP, UDP, ICMP echo or an ICMP error
	ReasonAddress            // outbound source outside the guest prefix, inbound destination not the external address
	ReasonNoFlow             // no flow, forward or UDP mapping matches (or a TCP RST/non-SYN cannot open one)
	ReasonTableFull          // refused: the global flow limit is reached
	ReasonQuota              // refused: the guest's flow quota is reached
	ReasonNoPort             // refused: no free external port (or identifier) for the destination
	ReasonFragment           // a non-first fragment whose first fragment was not seen
	ReasonICMPError          // an ICMP error that is malformed or matches no flow
	NumReasons               // number of reasons, for arrays of counters
)

var reasonNames = [NumReasons]string{"none", "malformed", "unsupported", "address", "no-flow",
	"table-full", "quota", "no-port", "fragment", "icmp-error"}

// String names the reason.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Packet is one packet handed to Translate. Buf starts at the IPv4 header and
// holds at least the IP and transport headers (for an ICMP error, the
// embedded IP header and 8 bytes after it); it may end before the IP total
// length (a copy of the headers of a larger frame, a GSO super-frame). The
// engine rewrites Buf in place and never keeps it.
type Packet struct {
	Buf     []byte  // in: IPv4 header onward; out: rewritten (re-sliced when an ICMP error replaces it)
	Flags   Flags   // in: offload state
	Verdict Verdict // out
	Reason  Reason  // out
}

// Proto is an IP protocol number the engine tracks.
type Proto uint8

// Tracked protocols (IANA protocol numbers).
const (
	ICMP Proto = 1
	TCP  Proto = 6
	UDP  Proto = 17
)

// String names the protocol.
func (p Proto) String() string {
	switch p {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Forward is a port forward (DNAT): connections to the external address on
// Port (Proto TCP or UDP) go to Guest.
type Forward struct {
	Proto Proto
	Port  uint16
	Guest netip.AddrPort
}

// TCPState is the connection-tracking state of a TCP flow, as far as it
// matters for timeouts (after Linux nf_conntrack_proto_tcp, without sequence
// number tracking).
type TCPState uint8

// TCP states.
const (
	TCPSynSent     TCPState = iota // SYN seen from the initiator
	TCPSynRecv                     // SYN+ACK seen from the responder
	TCPEstablished                 // handshake done (or a mid-stream pickup answered)
	TCPFinWait                     // FIN seen from one side
	TCPCloseWait                   // that FIN acknowledged, the other side still open
	TCPLastAck                     // FIN seen from both sides
	TCPTimeWait                    // last FIN acknowledged
	TCPClose                       // RST seen
	NumTCPStates
)

var tcpStateNames = [NumTCPStates]string{"syn-sent", "syn-recv", "established", "fin-wait", "close-wait",
	"last-ack", "time-wait", "close"}

// String names the state.
func (s TCPState) String() string {
	if s < NumTCPStates {
		return tcpStateNames[s]
	}
	return fmt.Sprintf("tcpstate(%d)", uint8(s))
}

// Stats are the engine's counters.
type Stats struct {
	FlowsTCP, FlowsUDP, FlowsICMP uint64               // live flows (expired ones count until reclaimed)
	TCPStates                     [NumTCPStates]uint64 // live TCP flows by state
	UDPMappings                   uint64               // live endpoint-independent UDP mappings
	Created, Expired              uint64               // flows created and reclaimed since New
	Outbound, Inbound             uint64               // packets translated, by the side they came from
	Hairpin                       uint64               // packets translated guest to guest through the external address
	ICMPErrors                    uint64               // ICMP errors translated
	Fragments                     uint64               // non-first fragments translated
	RefusalReplies                uint64               // ICMP administratively-prohibited errors generated
	Drops                         [NumReasons]uint64   // by reason (refusals included)
}
