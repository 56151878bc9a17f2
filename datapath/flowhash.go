package datapath

import "encoding/binary"

// The flow hash that spreads a guest's received frames over its queue pairs
// (steer.go).
//
// A flow is what a receiver must see in order: the IPv4 or IPv6 addresses,
// the IP protocol and, for TCP, UDP, UDP-Lite and SCTP, the ports (the
// 5-tuple); the addresses alone for other protocols and for IPv4 fragments
// (a non-first fragment has no ports, so every fragment of a datagram gets
// the 2-tuple); the MAC addresses and EtherType for everything else (ARP,
// frames with stacked VLAN tags, anything too short to parse). One
// 802.1Q tag is looked through.
//
// The hash is symmetric: a flow's frames in one direction hash like its
// frames in the other (each endpoint, address and port, is hashed alone and
// the two are added), so the pair a guest transmitted a flow on is found
// again for that flow's replies (virtio 1.2 §5.1.6.5.6, steer.go) and a
// loopback's frames with swapped MACs stay on their pair. It is keyed with
// a random seed of the process (steer.go flowSeed): a remote sender cannot
// aim all of a guest's flows at one queue pair on purpose.
//
// The hash only chooses a queue: a sender that rewrites its frame while it
// is hashed gets some queue, nothing else.

// flowHashBytes is how many of a frame's first bytes the hash reads:
// Ethernet + 802.1Q (18), IPv4 with options (60), the ports (4).
const flowHashBytes = 18 + 60 + 4

// EtherTypes and IP protocols the hash knows.
const (
	ethIPv4     = 0x0800
	ethIPv6     = 0x86dd
	ethVLAN     = 0x8100
	protoTCP    = 6
	protoUDP    = 17
	protoUDPL   = 136 // UDP-Lite, RFC 3828
	protoSCTP   = 132
	ipv4MF      = 0x2000 // flags|fragment offset: more fragments
	ipv4FragOff = 0x1fff
)

// Kinds of flow key, mixed into the hash so that, say, an IPv4 2-tuple and
// an L2 pair with the same bits do not collide on purpose.
const (
	keyL2 = 1 << 56
	keyV4 = 2 << 56
	keyV6 = 3 << 56
)

// flowHash returns the symmetric flow hash of the frame in segs (see the
// comment at the top of flowhash.go), keyed with seed. It allocates
// nothing.
func flowHash(segs [][]byte, seed uint64) uint32 {
	if len(segs) == 0 {
		return hashFrame(nil, seed)
	}
	if len(segs[0]) < flowHashBytes && len(segs) > 1 {
		return hashSplit(segs, seed)
	}
	return hashFrame(segs[0], seed)
}

// hashSplit is flowHash of a frame whose headers may span segments: they
// are copied together first.
//
//go:noinline
func hashSplit(segs [][]byte, seed uint64) uint32 {
	var buf [flowHashBytes]byte
	return hashFrame(buf[:copyFrame(buf[:], segs)], seed)
}

// hashFrame is flowHash of the frame b (or its first bytes).
func hashFrame(b []byte, seed uint64) uint32 {
	if len(b) < 14 {
		return uint32(mix64(seed ^ uint64(len(b))))
	}
	et := binary.BigEndian.Uint16(b[12:])
	l3 := 14
	if et == ethVLAN && len(b) >= 18 {
		et, l3 = binary.BigEndian.Uint16(b[16:]), 18
	}
	switch et {
	case ethIPv4:
		if h, ok := hashIPv4(b[l3:], seed); ok {
			return h
		}
	case ethIPv6:
		if h, ok := hashIPv6(b[l3:], seed); ok {
			return h
		}
	}
	// L2: the two MAC addresses and the EtherType.
	dst := uint64(binary.BigEndian.Uint32(b[0:]))<<16 | uint64(binary.BigEndian.Uint16(b[4:]))
	src := uint64(binary.BigEndian.Uint32(b[6:]))<<16 | uint64(binary.BigEndian.Uint16(b[10:]))
	return finish(mix64(dst^seed)+mix64(src^seed), keyL2|uint64(et))
}

// hashIPv4 hashes an IPv4 packet's 5-tuple (RFC 791 §3.1), or its 2-tuple;
// ok is false if b is not long enough for the header.
func hashIPv4(b []byte, seed uint64) (uint32, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return 0, false
	}
	proto := b[9]
	src := uint64(binary.BigEndian.Uint32(b[12:])) << 16
	dst := uint64(binary.BigEndian.Uint32(b[16:])) << 16
	frag := binary.BigEndian.Uint16(b[6:])&(ipv4MF|ipv4FragOff) != 0
	if !frag && hasPorts(proto) && len(b) >= ihl+4 {
		src |= uint64(binary.BigEndian.Uint16(b[ihl:]))
		dst |= uint64(binary.BigEndian.Uint16(b[ihl+2:]))
	}
	return finish(mix64(src^seed)+mix64(dst^seed), keyV4|uint64(proto)), true
}

// hashIPv6 hashes an IPv6 packet's 5-tuple (RFC 8200 §3) when the upper
// layer header follows the fixed header, its 2-tuple otherwise (extension
// headers, fragments); ok is false if b is too short for the fixed header.
func hashIPv6(b []byte, seed uint64) (uint32, bool) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return 0, false
	}
	next := b[6]
	var sp, dp uint64
	if hasPorts(next) && len(b) >= 44 {
		sp, dp = uint64(binary.BigEndian.Uint16(b[40:])), uint64(binary.BigEndian.Uint16(b[42:]))
	}
	src := mix64(mix64(binary.BigEndian.Uint64(b[8:])^seed)^binary.BigEndian.Uint64(b[16:])) ^ sp
	dst := mix64(mix64(binary.BigEndian.Uint64(b[24:])^seed)^binary.BigEndian.Uint64(b[32:])) ^ dp
	return finish(mix64(src)+mix64(dst), keyV6|uint64(next)), true
}

// hasPorts reports whether IP protocol p starts with 16-bit source and
// destination ports.
func hasPorts(p byte) bool {
	return p == protoTCP || p == protoUDP || p == protoUDPL || p == protoSCTP
}

// finish mixes the sum of two endpoint hashes with the key kind.
func finish(sum, kind uint64) uint32 {
	h := mix64(sum ^ kind)
	return uint32(h ^ h>>32)
}

// mix64 is the splitmix64 finaliser (Steele, Lea and Flood, "Fast
// splittable pseudorandom number generators", OOPSLA 2014; constants of
// Stafford's variant 13): every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
