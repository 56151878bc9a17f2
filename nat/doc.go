// Package nat is the router's NAT engine: connection tracking for TCP, UDP
// and ICMP echo over IPv4, source NAT of guest traffic to the uplink's
// address, port forwards (DNAT) with hairpinning, ICMP error translation,
// IPv4 fragments, and RFC 1624 incremental checksums. It is pure: headers in,
// headers out, no I/O, no goroutines, time from an injected clock.
//
// # Model
//
// A flow has two keys (flowKey), one per direction, each the 5-tuple plus the
// side (Guest or Uplink) as packets arrive, before translation. A packet
// matching key[d] is rewritten to the reverse of key[1-d], so one rule covers
// SNAT (guest -> uplink), DNAT (a port forward, uplink -> guest) and
// hairpinning (guest -> external address -> guest, translated both ways so
// that replies come back through the engine). The checksum deltas of both
// directions are computed once per flow (RFC 1624 §3), so a packet costs one
// one's complement addition per checksum. Transport checksums left to the
// device (virtio NEEDS_CSUM, GSO) get only the address part of the delta,
// since their field holds the pseudo-header sum; UDP checksum 0 stays 0
// (RFC 768).
//
// Mapping behaviour: UDP has endpoint-independent mapping and filtering
// (RFC 4787 REQ-1, REQ-8 recommendation): a guest endpoint keeps one external
// port for every destination, and any remote may send to it while the
// mapping lives. TCP ports and ICMP echo identifiers are allocated per
// destination (the guest's own port when free, else a random free one in
// Config.PortMin..PortMax), like netfilter. Port forwards are never handed
// out by SNAT.
//
// Expiry costs O(1) per packet: see wheel.go. Limits (Config.MaxFlows and
// Config.MaxFlowsPerGuest) refuse new flows only; flows already open keep
// working. Refusals are counted and answered by silence or ICMP
// "administratively prohibited" (Config.Refusal).
//
// # API and batching
//
// Translate takes a batch of Packets from one side, each a buffer starting at
// the IPv4 header (at least the headers; the payload may be elsewhere), and
// rewrites them in place, setting a Verdict (Drop, ToUplink, ToGuest) and a
// Reason. It allocates nothing once its tables have grown. Batches are
// processed in passes over up to 256 packets so that the index and flow
// record loads of different packets overlap: a packet of an open flow reads
// two cache lines of the engine's tables (its index slot and its 64-byte
// flow record), and a batch keeps many of those misses in flight. On
// Linux the index and, in tables of at least 64K flows, the flow records
// are advised onto transparent huge pages (hugepage_linux.go), so that
// those random accesses do not also miss the TLB at every 4 KiB page.
//
// # Threat model
//
// Guests and remote hosts control every byte of every packet. parse checks
// every length before reading (the IPv4 total length may be larger than the
// buffer: header copies and GSO super-frames), the outbound source must lie
// in the guest prefix and the inbound destination must be the external
// address. Hashing is seeded per engine so that chosen ports and addresses
// do not pile up in one probe chain, the table and each guest's share of it
// are bounded, fragments are tracked in a fixed-size table, and an ICMP error
// is translated only when it matches a live flow and names that flow's
// endpoint. The engine does not verify checksums: a packet with a bad
// checksum keeps a bad checksum. It does not decrement the TTL (routing is
// the caller's job) and does not reassemble fragments (a later fragment
// arriving before its first fragment is dropped).
//
// # Concurrency
//
// An Engine is safe for concurrent use, and several queues may translate on
// one engine at once: packets of established flows are translated without
// a lock (fast.go: atomic loads of the index and the flow record, a CAS on
// the record's deadline word when the deadline moves by more than its
// slack). Everything that changes the table (new flows, TCP state changes,
// the first UDP reply, fragments, ICMP errors, drops, expiry, snapshots,
// configuration) takes the engine's mutex; a Translate call takes it at
// most once, at its first packet that needs it.
package nat
