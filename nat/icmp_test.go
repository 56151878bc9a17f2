package nat

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

func TestICMPErrorInbound(t *testing.T) {
	type tc struct {
		name       string
		out        pkt // what the guest sends
		typ, code  uint8
		rest       uint32
		from       bool // error sent by the remote itself (else by a router on the path)
		truncateTo int  // embed only this many bytes of the datagram (0: all)
	}
	g, r := ap(guestA, 40000), ap(remote, 53)
	cases := []tc{
		{name: "udp port unreachable", out: pkt{proto: UDP, src: g, dst: r, payload: []byte("q")}, typ: 3, code: 3, from: true},
		{name: "udp no checksum", out: pkt{proto: UDP, src: g, dst: r, udpNoSum: true}, typ: 3, code: 3, from: true},
		{name: "tcp time exceeded", out: pkt{proto: TCP, src: g, dst: ap(remote, 443), flags: tcpSYN}, typ: 11, code: 0},
		{name: "tcp frag needed", out: pkt{proto: TCP, src: g, dst: ap(remote, 443), flags: tcpACK, payload: make([]byte, 40)},
			typ: 3, code: 4, rest: 1400},
		{name: "tcp truncated to 8 bytes", out: pkt{proto: TCP, src: g, dst: ap(remote, 443), flags: tcpACK, payload: make([]byte, 40)},
			typ: 3, code: 4, rest: 1400, truncateTo: 28},
		{name: "echo time exceeded", out: pkt{proto: ICMP, src: ap(guestA, 99), dst: ap(remote, 0), payload: []byte("abc")}, typ: 11},
		{name: "param problem", out: pkt{proto: UDP, src: g, dst: r}, typ: 12, rest: 8 << 24},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			orig := c.out.build()
			p := one(e, Guest, append([]byte(nil), orig...), 0)
			require.Equal(t, ToUplink, p.Verdict)
			sent := p.Buf
			emb := sent
			if c.truncateTo > 0 {
				emb = sent[:c.truncateTo]
			}
			src := routerHop
			if c.from {
				src = remote
			}
			in := icmpError(src, extAddr, c.typ, c.code, c.rest, emb)
			p = one(e, Uplink, in, 0)
			require.Equal(t, ToGuest, p.Verdict, "reason %v", p.Reason)
			wantEmb := orig
			if c.truncateTo > 0 {
				wantEmb = orig[:c.truncateTo]
			}
			want := icmpError(src, guestA, c.typ, c.code, c.rest, wantEmb)
			if c.truncateTo > 0 {
				// The embedded TCP checksum is not in the 8 bytes: the packet
				// equals the expected one except for nothing.
				require.Equal(t, want, p.Buf)
			} else {
				require.Equal(t, want, p.Buf)
			}
			checkSums(t, p.Buf)
			require.Equal(t, uint64(1), e.Stats().ICMPErrors)
		})
	}
}

func TestICMPErrorOutbound(t *testing.T) {
	// A guest answers a forwarded UDP datagram with port unreachable; the
	// remote must see an error about the datagram it sent to the external
	// address, from the external address.
	e, _ := newEngine(t, nil)
	require.NoError(t, e.AddForward(Forward{Proto: UDP, Port: 5000, Guest: ap(guestB, 5001)}))
	c := ap(remote, 40000)
	orig := pkt{proto: UDP, src: c, dst: ap(extAddr, 5000), payload: []byte("hello")}.build()
	p := one(e, Uplink, append([]byte(nil), orig...), 0)
	require.Equal(t, ToGuest, p.Verdict)
	in := icmpError(guestB, remote, 3, 3, 0, p.Buf)
	p = one(e, Guest, in, 0)
	require.Equal(t, ToUplink, p.Verdict, "reason %v", p.Reason)
	require.Equal(t, icmpError(extAddr, remote, 3, 3, 0, orig), p.Buf)
	checkSums(t, p.Buf)
}

func TestICMPErrorRejected(t *testing.T) {
	e, _ := newEngine(t, nil)
	g, r := ap(guestA, 40000), ap(remote, 53)
	p := one(e, Guest, pkt{proto: UDP, src: g, dst: r}.build(), 0)
	sent := p.Buf
	// About a flow that does not exist.
	other := pkt{proto: UDP, src: ap(extAddr, 1), dst: r}.build()
	p = one(e, Uplink, icmpError(remote, extAddr, 3, 3, 0, other), 0)
	require.Equal(t, ReasonICMPError, p.Reason)
	// Embedded header truncated below 8 bytes of transport.
	p = one(e, Uplink, icmpError(remote, extAddr, 3, 3, 0, sent[:27]), 0)
	require.Equal(t, ReasonICMPError, p.Reason)
	// Garbage embedded.
	p = one(e, Uplink, icmpError(remote, extAddr, 3, 3, 0, make([]byte, 28)), 0)
	require.Equal(t, ReasonICMPError, p.Reason)
	// The embedded packet's source is not the outer destination: a guest
	// trying to forge an error about another guest's flow.
	in := icmpError(guestB, remote, 3, 3, 0, pkt{proto: UDP, src: r, dst: g}.build())
	p = one(e, Guest, in, 0)
	require.Equal(t, ReasonICMPError, p.Reason)
	require.Equal(t, uint64(0), e.Stats().ICMPErrors)
}

func TestFragments(t *testing.T) {
	e, _ := newEngine(t, nil)
	g, r := ap(guestA, 6000), ap(remote, 6001)
	// A UDP datagram of 8+24 bytes in two fragments: 16 transport bytes,
	// then 16 more at offset 16.
	full := pkt{proto: UDP, src: g, dst: r, payload: make([]byte, 24), id: 0x4242}.build()
	first := append([]byte(nil), full[:20+16]...)
	header.IPv4(first).SetTotalLength(36)
	header.IPv4(first).SetFlagsFragmentOffset(header.IPv4FlagMF)
	header.IPv4(first).UpdateChecksum()
	second := append(append([]byte(nil), full[:20]...), full[36:]...)
	header.IPv4(second).SetTotalLength(uint16(len(second)))
	header.IPv4(second).SetFlagsFragmentOffset(2) // 16 bytes
	header.IPv4(second).UpdateChecksum()

	// The later fragment first: dropped, no reassembly.
	p := one(e, Guest, append([]byte(nil), second...), 0)
	require.Equal(t, ReasonFragment, p.Reason)

	p1 := one(e, Guest, append([]byte(nil), first...), 0)
	require.Equal(t, ToUplink, p1.Verdict)
	p2 := one(e, Guest, append([]byte(nil), second...), 0)
	require.Equal(t, ToUplink, p2.Verdict, "reason %v", p2.Reason)
	checkSums(t, p1.Buf)
	checkSums(t, p2.Buf)
	// Reassembled, the translated datagram is exactly the translated full one.
	re := append(append([]byte(nil), p1.Buf[:36]...), p2.Buf[20:]...)
	header.IPv4(re).SetTotalLength(uint16(len(re)))
	header.IPv4(re).SetFlagsFragmentOffset(0)
	header.IPv4(re).UpdateChecksum()
	want := pkt{proto: UDP, src: ap(extAddr, 6000), dst: r, payload: make([]byte, 24), id: 0x4242}.build()
	require.Equal(t, want, re)
	checkSums(t, re)
	require.Equal(t, uint64(1), e.Stats().Fragments)

	// Inbound fragments of the reply follow the same way.
	rfull := pkt{proto: UDP, src: r, dst: ap(extAddr, 6000), payload: make([]byte, 24), id: 7}.build()
	rfirst := append([]byte(nil), rfull[:36]...)
	header.IPv4(rfirst).SetTotalLength(36)
	header.IPv4(rfirst).SetFlagsFragmentOffset(header.IPv4FlagMF)
	header.IPv4(rfirst).UpdateChecksum()
	rsecond := append(append([]byte(nil), rfull[:20]...), rfull[36:]...)
	header.IPv4(rsecond).SetTotalLength(uint16(len(rsecond)))
	header.IPv4(rsecond).SetFlagsFragmentOffset(2)
	header.IPv4(rsecond).UpdateChecksum()
	require.Equal(t, ToGuest, one(e, Uplink, rfirst, 0).Verdict)
	p = one(e, Uplink, clone(rsecond), 0)
	require.Equal(t, ToGuest, p.Verdict)
	require.Equal(t, guestA, header.IPv4(p.Buf).Dst())
	checkSums(t, p.Buf)
	// Another datagram id does not follow.
	header.IPv4(rsecond).SetID(8)
	require.Equal(t, ReasonFragment, one(e, Uplink, rsecond, 0).Reason)
}

func TestRefuseICMP(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		c.MaxFlowsPerGuest = 1
		c.Refusal = RefuseICMP
		c.Router = netipMust("192.168.127.1")
	})
	require.Equal(t, ToUplink, one(e, Guest, pkt{proto: TCP, src: ap(guestA, 1), dst: ap(remote, 80), flags: tcpSYN}.build(), 0).Verdict)
	orig := pkt{proto: TCP, src: ap(guestA, 2), dst: ap(remote, 80), flags: tcpSYN}.build()
	p := one(e, Guest, clone(orig), CsumPartial)
	require.Equal(t, ToGuest, p.Verdict)
	require.Equal(t, ReasonQuota, p.Reason)
	require.Equal(t, Flags(0), p.Flags)
	require.Equal(t, icmpError(netipMust("192.168.127.1"), guestA, 3, 13, 0, orig[:28]), p.Buf)
	checkSums(t, p.Buf)
	s := e.Stats()
	require.Equal(t, uint64(1), s.RefusalReplies)
	require.Equal(t, uint64(1), s.Drops[ReasonQuota])
	// No room for the reply: dropped.
	b := orig[:len(orig):len(orig)]
	p = one(e, Guest, b, 0)
	require.Equal(t, Drop, p.Verdict)
	require.Equal(t, ReasonQuota, p.Reason)
}
