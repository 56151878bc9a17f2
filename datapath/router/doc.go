// Package router is the guest network's IPv4 router: the glue between the
// L2 switch (package datapath), the NAT engine (package nat) and an uplink
// (package hostif: a TAP device today).
//
// The router owns the gateway's MAC on the switch. Of the frames the switch
// delivers to that MAC, those for the gateway itself (ARP, DHCP, DNS, ICMP
// to the gateway address, broadcasts) go on to the gateway's services (a
// datapath.HandlerPort); IPv4 frames for an address outside the guest subnet
// are routed: the TTL is checked and decremented (RFC 1812 §5.3.1), the
// size is checked against the uplink's MTU (RFC 1191), the headers are
// translated by the NAT engine, the Ethernet header is rewritten for the
// uplink link, and the frame goes out of the uplink. Frames from the
// uplink take the reverse path: ARP for the NAT address is answered, IPv4
// is translated inbound and delivered through the switch with the
// gateway's MAC as source.
//
// # Zero copy
//
// The switch hands the router each frame as a copy of its first bytes
// (the headers it checked, in backend memory) followed by the rest of the
// frame in place, in the sender's buffers. The router copies those first
// bytes once more into its own scratch (a few dozen bytes, so that the
// switch's copy is never written), translates that copy, and hands the
// uplink the scatter list: rewritten headers from backend memory, payload
// straight from guest memory. Virtio-net offload metadata (partial
// checksums, GSO) travels with the frame: the NAT engine folds address
// changes into partial checksums.
//
// # Threat model
//
// Guests control every byte of the frames they send and may change their
// buffers at any time; the router reads only the switch's private copy of
// the headers (ARCHITECTURE.md "Rules that hold everywhere"). The host side of the uplink is the host
// kernel (trusted for the lengths it gives), but the remote hosts behind it
// control the packets' contents: every header is length-checked before it
// is read. Malformed frames are dropped and counted, never panic.
//
// # Concurrency
//
// The switch side's Send runs on every guest's transmit workers at once;
// the uplink side's Send runs on the uplink's reader goroutines. Each call
// takes a scratch from a pool (no lock per packet), translates its batch
// with one NAT engine call, and hands each destination its frames in one
// call. The neighbour cache (guest address to MAC) is read without locks
// (copy on write).
package router
