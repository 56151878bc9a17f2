package nat

import (
	"net/netip"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// canonical reports, for each checksum of a complete IPv4 packet, whether
// the field equals a full recomputation; it returns false when the packet is
// not complete enough to tell.
type sums struct{ ip, l4, ok bool }

func fullSums(b []byte) sums {
	ip := header.IPv4(b)
	if !ip.IsValid() || int(ip.TotalLength()) != len(b) {
		return sums{}
	}
	s := sums{ok: true, ip: ip.Checksum() == ip.ComputeChecksum(), l4: true}
	if ip.IsFragment() {
		return s
	}
	l := b[ip.HeaderLen():]
	switch ip.Protocol() {
	case 6:
		if len(l) < 20 {
			return sums{}
		}
		c := ^header.ChecksumCombine(header.Checksum(l[:16], 0), header.Checksum(l[18:], ip.PseudoHeaderChecksum(6, uint16(len(l)))))
		s.l4 = header.TCP(l).Checksum() == c
	case 17:
		if len(l) < 8 {
			return sums{}
		}
		if f := header.UDP(l).Checksum(); f != 0 {
			c := ^header.ChecksumCombine(header.Checksum(l[:6], 0), header.Checksum(l[8:], ip.PseudoHeaderChecksum(17, uint16(len(l)))))
			if c == 0 {
				c = 0xffff
			}
			s.l4 = f == c
		}
	case 1:
		if len(l) < 8 {
			return sums{}
		}
		s.l4 = header.ICMPv4(l).Checksum() == header.ICMPv4(l).ComputeChecksum()
	}
	return s
}

func fuzzEngine(t *testing.T) *Engine {
	e, _ := newEngine(t, nil)
	if err := e.AddForward(Forward{Proto: TCP, Port: 8080, Guest: ap(guestB, 80)}); err != nil {
		t.Fatal(err)
	}
	if err := e.AddForward(Forward{Proto: UDP, Port: 5000, Guest: ap(guestB, 5001)}); err != nil {
		t.Fatal(err)
	}
	// A few flows so that inbound packets and errors find something.
	for _, p := range []pkt{
		{proto: UDP, src: ap(guestA, 4000), dst: ap(remote, 53)},
		{proto: TCP, src: ap(guestA, 4001), dst: ap(remote, 443), flags: tcpSYN},
		{proto: ICMP, src: ap(guestA, 4002), dst: ap(remote, 0)},
	} {
		one(e, Guest, p.build(), 0)
	}
	return e
}

// FuzzTranslate: any bytes from either side never panic, and a translated
// packet whose checksums equalled a full recomputation still does (the
// incremental updates equal full recomputation).
func FuzzTranslate(f *testing.F) {
	f.Add(pkt{proto: UDP, src: ap(guestA, 4000), dst: ap(remote, 53)}.build(), false, uint8(0))
	f.Add(pkt{proto: UDP, src: ap(remote, 53), dst: ap(extAddr, 4000)}.build(), true, uint8(0))
	f.Add(pkt{proto: TCP, src: ap(remote, 1), dst: ap(extAddr, 8080), flags: tcpSYN}.build(), true, uint8(0))
	f.Add(pkt{proto: TCP, src: ap(guestA, 1), dst: ap(extAddr, 8080), flags: tcpSYN}.build(), false, uint8(1))
	f.Add(icmpError(remote, extAddr, 3, 3, 0, pkt{proto: UDP, src: ap(extAddr, 4000), dst: ap(remote, 53)}.build()), true, uint8(0))
	f.Add(pkt{proto: ICMP, src: ap(guestA, 9), dst: ap(remote, 0), frag: 0x2000}.build(), false, uint8(0))
	f.Add(pkt{proto: UDP, src: ap(guestA, 9), dst: ap(remote, 0), frag: 0x0003}.build(), false, uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, inbound bool, flags uint8) {
		e := fuzzEngine(t)
		from := Guest
		if inbound {
			from = Uplink
		}
		before := fullSums(b)
		buf := clone(b)
		p := one(e, from, buf, Flags(flags&3))
		if p.Verdict == Drop {
			return
		}
		if len(p.Buf) < 20 || (Flags(flags)&GSO == 0 && !header.IPv4(p.Buf).IsValid()) {
			t.Fatalf("translated packet not valid IPv4")
		}
		if p.Reason != ReasonNone {
			return // an ICMP refusal, built from scratch
		}
		after := fullSums(p.Buf)
		if before.ok && before.ip && !after.ip {
			t.Fatalf("ip checksum no longer equals recomputation")
		}
		if before.ok && before.l4 && !after.l4 && flags&3 == 0 {
			t.Fatalf("transport checksum no longer equals recomputation")
		}
	})
}

// FuzzRoundTrip: a valid guest packet goes out, the remote's reply comes in
// and restores the guest's addresses and ports; an ICMP error about the
// translated packet restores the original embedded packet; every checksum
// equals a full recomputation throughout.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(6), uint16(40000), uint16(443), uint8(2), uint32(0xcb007109), []byte("hi"), false, false)
	f.Add(uint8(17), uint16(53), uint16(53), uint8(3), uint32(0x08080808), []byte{}, true, false)
	f.Add(uint8(1), uint16(7), uint16(0), uint8(9), uint32(0x01010101), []byte("ping"), false, true)
	f.Fuzz(func(t *testing.T, proto uint8, sport, dport uint16, host uint8, rip uint32, payload []byte, noSum, second bool) {
		var pr Proto
		switch proto % 3 {
		case 0:
			pr = TCP
		case 1:
			pr = UDP
		default:
			pr = ICMP
			dport = 0
		}
		if pr != ICMP && (sport == 0 || dport == 0) {
			return
		}
		r := netip.AddrFrom4([4]byte{byte(rip >> 24), byte(rip >> 16), byte(rip >> 8), byte(rip)})
		if r == extAddr || guestPfx.Contains(r) || len(payload) > 1000 {
			return
		}
		g := ap(netip.AddrFrom4([4]byte{192, 168, 127, host}), sport)
		rp := ap(r, dport)
		e, _ := newEngine(t, nil)
		if second {
			// Someone else holds the guest's port: translation must pick another.
			one(e, Guest, pkt{proto: pr, src: ap(netip.AddrFrom4([4]byte{192, 168, 127, host + 1}), sport), dst: rp, flags: tcpSYN}.build(), 0)
		}
		out := pkt{proto: pr, src: g, dst: rp, flags: tcpSYN, payload: payload, udpNoSum: noSum}.build()
		p := one(e, Guest, clone(out), 0)
		if p.Verdict != ToUplink {
			t.Fatalf("outbound: %v %v", p.Verdict, p.Reason)
		}
		s := fullSums(p.Buf)
		if !s.ok || !s.ip || !s.l4 {
			t.Fatalf("outbound checksums %+v", s)
		}
		ip := header.IPv4(p.Buf)
		if ip.Src() != extAddr || ip.Dst() != r {
			t.Fatalf("outbound addresses %v -> %v", ip.Src(), ip.Dst())
		}
		var xport uint16
		l := ip.Payload()
		if pr == ICMP {
			xport = header.ICMPv4(l).Ident()
		} else {
			xport = header.UDP(l).SrcPort()
			if header.UDP(l).DstPort() != dport {
				t.Fatalf("destination port changed")
			}
		}
		if !second && xport != sport {
			t.Fatalf("port not preserved: %d -> %d", sport, xport)
		}
		// The reply.
		reply := pkt{proto: pr, src: rp, dst: ap(extAddr, xport), flags: tcpSYN | tcpACK, payload: payload, reply: true, udpNoSum: noSum}
		q := one(e, Uplink, reply.build(), 0)
		if q.Verdict != ToGuest {
			t.Fatalf("inbound: %v %v", q.Verdict, q.Reason)
		}
		want := pkt{proto: pr, src: rp, dst: g, flags: tcpSYN | tcpACK, payload: payload, reply: true, udpNoSum: noSum}.build()
		if string(q.Buf) != string(want) {
			t.Fatalf("reply not restored:\n got %x\nwant %x", q.Buf, want)
		}
		// An error about the translated packet.
		ep := one(e, Uplink, icmpError(routerHop, extAddr, 11, 0, 0, p.Buf), 0)
		if ep.Verdict != ToGuest {
			t.Fatalf("icmp error: %v %v", ep.Verdict, ep.Reason)
		}
		if string(ep.Buf) != string(icmpError(routerHop, g.Addr(), 11, 0, 0, out)) {
			t.Fatalf("icmp error not restored")
		}
	})
}
