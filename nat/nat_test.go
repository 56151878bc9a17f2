package nat

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

// golden runs one packet and checks verdict and exact output bytes.
func golden(t *testing.T, e *Engine, from Side, in, want pkt, v Verdict) {
	t.Helper()
	p := one(e, from, in.build(), 0)
	require.Equal(t, v, p.Verdict, "reason %v", p.Reason)
	require.Equal(t, want.build(), p.Buf)
	checkSums(t, p.Buf)
}

func TestSNATTCP(t *testing.T) {
	e, _ := newEngine(t, nil)
	g, r, x := ap(guestA, 40000), ap(remote, 443), ap(extAddr, 40000)
	golden(t, e, Guest, pkt{proto: TCP, src: g, dst: r, flags: tcpSYN}, pkt{proto: TCP, src: x, dst: r, flags: tcpSYN}, ToUplink)
	golden(t, e, Uplink, pkt{proto: TCP, src: r, dst: x, flags: tcpSYN | tcpACK}, pkt{proto: TCP, src: r, dst: g, flags: tcpSYN | tcpACK}, ToGuest)
	golden(t, e, Guest, pkt{proto: TCP, src: g, dst: r, flags: tcpACK, payload: []byte("GET / HTTP/1.1\r\n")},
		pkt{proto: TCP, src: x, dst: r, flags: tcpACK, payload: []byte("GET / HTTP/1.1\r\n")}, ToUplink)
	golden(t, e, Uplink, pkt{proto: TCP, src: r, dst: x, flags: tcpACK, payload: []byte("HTTP/1.1 200 OK\r\n\r")},
		pkt{proto: TCP, src: r, dst: g, flags: tcpACK, payload: []byte("HTTP/1.1 200 OK\r\n\r")}, ToGuest)
	s := e.Stats()
	require.Equal(t, uint64(1), s.FlowsTCP)
	require.Equal(t, uint64(1), s.TCPStates[TCPEstablished])
	require.Equal(t, uint64(2), s.Outbound)
	require.Equal(t, uint64(2), s.Inbound)

	// IP options move the transport header.
	g2 := ap(guestA, 40001)
	golden(t, e, Guest, pkt{proto: TCP, src: g2, dst: r, flags: tcpSYN, opts: []byte{1, 1, 1, 0}},
		pkt{proto: TCP, src: ap(extAddr, 40001), dst: r, flags: tcpSYN, opts: []byte{1, 1, 1, 0}}, ToUplink)
}

func TestTCPPortAllocation(t *testing.T) {
	e, _ := newEngine(t, nil)
	r := ap(remote, 80)
	// Two guests, same source port, same destination: the second gets another port.
	pa := one(e, Guest, pkt{proto: TCP, src: ap(guestA, 5000), dst: r, flags: tcpSYN}.build(), 0)
	pb := one(e, Guest, pkt{proto: TCP, src: ap(guestB, 5000), dst: r, flags: tcpSYN}.build(), 0)
	require.Equal(t, uint16(5000), header.TCP(pa.Buf[20:]).SrcPort())
	pbPort := header.TCP(pb.Buf[20:]).SrcPort()
	require.NotEqual(t, uint16(5000), pbPort)
	require.GreaterOrEqual(t, pbPort, uint16(1024))
	checkSums(t, pb.Buf)
	// Another destination: the port is free again (allocation per destination).
	pc := one(e, Guest, pkt{proto: TCP, src: ap(guestB, 5000), dst: ap(remote2, 80), flags: tcpSYN}.build(), 0)
	require.Equal(t, uint16(5000), header.TCP(pc.Buf[20:]).SrcPort())
	// Replies reach the right guests.
	golden(t, e, Uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, pbPort), flags: tcpSYN | tcpACK},
		pkt{proto: TCP, src: r, dst: ap(guestB, 5000), flags: tcpSYN | tcpACK}, ToGuest)
	golden(t, e, Uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, 5000), flags: tcpSYN | tcpACK},
		pkt{proto: TCP, src: r, dst: ap(guestA, 5000), flags: tcpSYN | tcpACK}, ToGuest)
	// A forwarded port is never handed out.
	require.NoError(t, e.AddForward(Forward{Proto: TCP, Port: 6000, Guest: ap(guestA, 22)}))
	pd := one(e, Guest, pkt{proto: TCP, src: ap(guestB, 6000), dst: r, flags: tcpSYN}.build(), 0)
	require.NotEqual(t, uint16(6000), header.TCP(pd.Buf[20:]).SrcPort())
}

func TestSNATUDPEndpointIndependent(t *testing.T) {
	e, _ := newEngine(t, nil)
	g := ap(guestA, 5353)
	x := ap(extAddr, 5353)
	golden(t, e, Guest, pkt{proto: UDP, src: g, dst: ap(remote, 53), payload: []byte("query")},
		pkt{proto: UDP, src: x, dst: ap(remote, 53), payload: []byte("query")}, ToUplink)
	golden(t, e, Uplink, pkt{proto: UDP, src: ap(remote, 53), dst: x, payload: []byte("answer")},
		pkt{proto: UDP, src: ap(remote, 53), dst: g, payload: []byte("answer")}, ToGuest)
	// Same guest endpoint, other destination: same external port (REQ-1).
	golden(t, e, Guest, pkt{proto: UDP, src: g, dst: ap(remote2, 3478), payload: []byte("stun")},
		pkt{proto: UDP, src: x, dst: ap(remote2, 3478), payload: []byte("stun")}, ToUplink)
	// Another guest with the same port gets another external port, the same
	// for all its destinations.
	pb := one(e, Guest, pkt{proto: UDP, src: ap(guestB, 5353), dst: ap(remote, 53)}.build(), 0)
	pb2 := one(e, Guest, pkt{proto: UDP, src: ap(guestB, 5353), dst: ap(remote2, 53)}.build(), 0)
	bp := header.UDP(pb.Buf[20:]).SrcPort()
	require.NotEqual(t, uint16(5353), bp)
	require.Equal(t, bp, header.UDP(pb2.Buf[20:]).SrcPort())
	// Endpoint-independent filtering: a remote never contacted reaches the guest.
	third := ap(netipMust("192.0.2.77"), 9999)
	golden(t, e, Uplink, pkt{proto: UDP, src: third, dst: x, payload: []byte("punch")},
		pkt{proto: UDP, src: third, dst: g, payload: []byte("punch")}, ToGuest)
	// The guest's reply to it goes out from the same mapping.
	golden(t, e, Guest, pkt{proto: UDP, src: g, dst: third}, pkt{proto: UDP, src: x, dst: third}, ToUplink)
	require.Equal(t, uint64(2), e.Stats().UDPMappings)
	// Nothing for an unmapped port.
	p := one(e, Uplink, pkt{proto: UDP, src: third, dst: ap(extAddr, 1)}.build(), 0)
	require.Equal(t, Drop, p.Verdict)
	require.Equal(t, ReasonNoFlow, p.Reason)
}

func TestUDPZeroChecksum(t *testing.T) {
	e, _ := newEngine(t, nil)
	in := pkt{proto: UDP, src: ap(guestA, 7), dst: ap(remote, 7), payload: []byte("x"), udpNoSum: true}
	golden(t, e, Guest, in, pkt{proto: UDP, src: ap(extAddr, 7), dst: ap(remote, 7), payload: []byte("x"), udpNoSum: true}, ToUplink)
}

func TestICMPEcho(t *testing.T) {
	e, _ := newEngine(t, nil)
	// The identifier is the "port" of the source.
	golden(t, e, Guest, pkt{proto: ICMP, src: ap(guestA, 77), dst: ap(remote, 0), payload: []byte("ping")},
		pkt{proto: ICMP, src: ap(extAddr, 77), dst: ap(remote, 0), payload: []byte("ping")}, ToUplink)
	golden(t, e, Uplink, pkt{proto: ICMP, reply: true, src: ap(remote, 0), dst: ap(extAddr, 77), payload: []byte("ping")},
		pkt{proto: ICMP, reply: true, src: ap(remote, 0), dst: ap(guestA, 77), payload: []byte("ping")}, ToGuest)
	// The same identifier from another guest to the same host is translated.
	pb := one(e, Guest, pkt{proto: ICMP, src: ap(guestB, 77), dst: ap(remote, 0)}.build(), 0)
	require.Equal(t, ToUplink, pb.Verdict)
	id := header.ICMPv4(pb.Buf[20:]).Ident()
	require.NotEqual(t, uint16(77), id)
	checkSums(t, pb.Buf)
	golden(t, e, Uplink, pkt{proto: ICMP, reply: true, src: ap(remote, 0), dst: ap(extAddr, id)},
		pkt{proto: ICMP, reply: true, src: ap(remote, 0), dst: ap(guestB, 77)}, ToGuest)
	// A reply with no request, a request from outside: no flow.
	p := one(e, Guest, pkt{proto: ICMP, reply: true, src: ap(guestA, 0), dst: ap(remote, 5)}.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
	p = one(e, Uplink, pkt{proto: ICMP, src: ap(remote, 5), dst: ap(extAddr, 0)}.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
	require.Equal(t, uint64(2), e.Stats().FlowsICMP)
}

func TestPortForward(t *testing.T) {
	e, _ := newEngine(t, nil)
	require.NoError(t, e.AddForward(Forward{Proto: TCP, Port: 8080, Guest: ap(guestB, 80)}))
	require.NoError(t, e.AddForward(Forward{Proto: UDP, Port: 5000, Guest: ap(guestA, 5001)}))
	require.ErrorIs(t, e.AddForward(Forward{Proto: ICMP, Port: 1, Guest: ap(guestA, 1)}), ErrForward)
	require.ErrorIs(t, e.AddForward(Forward{Proto: TCP, Port: 1, Guest: ap(remote, 1)}), ErrForward)
	require.ErrorIs(t, e.AddForward(Forward{Proto: TCP, Port: 0, Guest: ap(guestA, 1)}), ErrForward)
	require.Len(t, e.Forwards(), 2)

	c, x, g := ap(remote, 33000), ap(extAddr, 8080), ap(guestB, 80)
	// Only a SYN opens an inbound connection.
	p := one(e, Uplink, pkt{proto: TCP, src: c, dst: x, flags: tcpACK}.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
	golden(t, e, Uplink, pkt{proto: TCP, src: c, dst: x, flags: tcpSYN}, pkt{proto: TCP, src: c, dst: g, flags: tcpSYN}, ToGuest)
	golden(t, e, Guest, pkt{proto: TCP, src: g, dst: c, flags: tcpSYN | tcpACK}, pkt{proto: TCP, src: x, dst: c, flags: tcpSYN | tcpACK}, ToUplink)
	golden(t, e, Uplink, pkt{proto: TCP, src: c, dst: x, flags: tcpACK}, pkt{proto: TCP, src: c, dst: g, flags: tcpACK}, ToGuest)
	require.Equal(t, uint64(1), e.Stats().TCPStates[TCPEstablished])
	golden(t, e, Uplink, pkt{proto: UDP, src: c, dst: ap(extAddr, 5000)}, pkt{proto: UDP, src: c, dst: ap(guestA, 5001)}, ToGuest)

	// Removed at run time: new connections stop, the open one keeps working.
	require.NoError(t, e.RemoveForward(TCP, 8080))
	require.ErrorIs(t, e.RemoveForward(TCP, 8080), ErrForward)
	p = one(e, Uplink, pkt{proto: TCP, src: ap(remote, 33001), dst: x, flags: tcpSYN}.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
	golden(t, e, Uplink, pkt{proto: TCP, src: c, dst: x, flags: tcpACK, payload: []byte("more")},
		pkt{proto: TCP, src: c, dst: g, flags: tcpACK, payload: []byte("more")}, ToGuest)
	// Added again: new connections work.
	require.NoError(t, e.AddForward(Forward{Proto: TCP, Port: 8080, Guest: ap(guestA, 8000)}))
	golden(t, e, Uplink, pkt{proto: TCP, src: ap(remote, 33002), dst: x, flags: tcpSYN},
		pkt{proto: TCP, src: ap(remote, 33002), dst: ap(guestA, 8000), flags: tcpSYN}, ToGuest)
}

func TestHairpin(t *testing.T) {
	e, _ := newEngine(t, nil)
	require.NoError(t, e.AddForward(Forward{Proto: TCP, Port: 8080, Guest: ap(guestB, 80)}))
	require.NoError(t, e.AddForward(Forward{Proto: UDP, Port: 9000, Guest: ap(guestB, 9001)}))
	a, x, b := ap(guestA, 41000), ap(extAddr, 8080), ap(guestB, 80)
	xa := ap(extAddr, 41000) // A as B sees it: the external address, A's port preserved
	golden(t, e, Guest, pkt{proto: TCP, src: a, dst: x, flags: tcpSYN}, pkt{proto: TCP, src: xa, dst: b, flags: tcpSYN}, ToGuest)
	golden(t, e, Guest, pkt{proto: TCP, src: b, dst: xa, flags: tcpSYN | tcpACK}, pkt{proto: TCP, src: x, dst: a, flags: tcpSYN | tcpACK}, ToGuest)
	golden(t, e, Guest, pkt{proto: TCP, src: a, dst: x, flags: tcpACK}, pkt{proto: TCP, src: xa, dst: b, flags: tcpACK}, ToGuest)
	require.Equal(t, uint64(3), e.Stats().Hairpin)
	// The hairpin flow's reply key is on the guest side: the same tuple from
	// the uplink does not match it.
	p := one(e, Uplink, pkt{proto: TCP, src: b, dst: xa, flags: tcpACK}.build(), 0)
	require.Equal(t, Drop, p.Verdict)
	// UDP hairpin uses A's endpoint-independent mapping.
	golden(t, e, Guest, pkt{proto: UDP, src: ap(guestA, 7000), dst: ap(extAddr, 9000)},
		pkt{proto: UDP, src: ap(extAddr, 7000), dst: ap(guestB, 9001)}, ToGuest)
	golden(t, e, Guest, pkt{proto: UDP, src: ap(guestB, 9001), dst: ap(extAddr, 7000)},
		pkt{proto: UDP, src: ap(extAddr, 9000), dst: ap(guestA, 7000)}, ToGuest)
	// To the external address without a forward: nothing.
	p = one(e, Guest, pkt{proto: TCP, src: a, dst: ap(extAddr, 1), flags: tcpSYN}.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
}

func TestMalformedAndAddress(t *testing.T) {
	e, _ := newEngine(t, nil)
	good := pkt{proto: TCP, src: ap(guestA, 1000), dst: ap(remote, 80), flags: tcpSYN}.build()
	cases := []struct {
		name string
		from Side
		mod  func([]byte) []byte
		want Reason
	}{
		{"short", Guest, func(b []byte) []byte { return b[:19] }, ReasonMalformed},
		{"version 5", Guest, func(b []byte) []byte { b[0] = 0x55; return b }, ReasonMalformed},
		{"ipv6", Guest, func(b []byte) []byte { b[0] = 0x60; return b }, ReasonUnsupported},
		{"ihl 4", Guest, func(b []byte) []byte { b[0] = 0x44; return b }, ReasonMalformed},
		{"ihl beyond buffer", Guest, func(b []byte) []byte { b[0] = 0x4f; return b[:40] }, ReasonMalformed},
		{"total length < ihl", Guest, func(b []byte) []byte { b[2], b[3] = 0, 10; return b }, ReasonMalformed},
		{"truncated tcp", Guest, func(b []byte) []byte { return b[:39] }, ReasonMalformed},
		{"gre", Guest, func(b []byte) []byte { b[9] = 47; return b }, ReasonUnsupported},
		{"spoofed source", Guest, func(b []byte) []byte { b[12] = 10; return b }, ReasonAddress},
		{"inbound not to external", Uplink, func(b []byte) []byte { return b }, ReasonAddress},
		{"rst opens nothing", Guest, func(b []byte) []byte { b[33] = tcpRST; return b }, ReasonNoFlow},
		{"icmp timestamp", Guest, func(b []byte) []byte { b[9] = 1; b[20] = 13; return b }, ReasonUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mod(append([]byte(nil), good...))
			p := one(e, c.from, b, 0)
			require.Equal(t, Drop, p.Verdict)
			require.Equal(t, c.want, p.Reason)
		})
	}
	require.Equal(t, 0, e.Len())
	require.Equal(t, uint64(6), e.Stats().Drops[ReasonMalformed])
}
