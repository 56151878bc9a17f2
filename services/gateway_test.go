package services

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

func TestARPReply(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	out := newFrames()
	g.HandleFrame(arpRequestFrame([]byte{192, 168, 127, 1}), out.reply)
	want := cat(
		guestMAC1[:], testGWMAC[:], []byte{0x08, 0x06},
		[]byte{0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02},
		testGWMAC[:], []byte{192, 168, 127, 1},
		guestMAC1[:], guestIP,
	)
	require.Equal(t, want, out.next(t))
	require.Equal(t, uint64(1), g.Stats().Get(ARPReplies))

	// RFC 5227 probe (sender 0.0.0.0) for the gateway address: answered.
	probe := arpRequestFrame([]byte{192, 168, 127, 1})
	copy(probe[28:32], []byte{0, 0, 0, 0})
	g.HandleFrame(probe, out.reply)
	require.Equal(t, []byte{0, 0, 0, 0}, out.next(t)[38:42])

	// Requests for other addresses and replies are not answered.
	g.HandleFrame(arpRequestFrame([]byte{192, 168, 127, 9}), out.reply)
	reply := arpRequestFrame([]byte{192, 168, 127, 1})
	reply[21] = 2
	g.HandleFrame(reply, out.reply)
	out.none(t)
	require.Equal(t, uint64(2), g.Stats().Drops(DropNotLocal))
}

func TestICMPEchoReply(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	out := newFrames()
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz!") // odd length
	g.HandleFrame(icmpEchoFrame([]byte{192, 168, 127, 1}, data), out.reply)
	got := out.next(t)

	want := cat(guestMAC1[:], testGWMAC[:], []byte{0x08, 0x00},
		[]byte{0x45, 0x00, 0, byte(20 + 8 + len(data)), 0, 0 /* id */, 0x00, 0x00, 64, 1, 0, 0 /* csum */},
		[]byte{192, 168, 127, 1}, guestIP,
		[]byte{0, 0, 0, 0 /* csum */, 0x12, 0x34, 0x00, 0x07}, data)
	require.Len(t, got, len(want))
	// Fields the test cannot predict: IP ID, then the checksums, which are
	// recomputed independently.
	copy(want[18:20], got[18:20])
	ipHdr := got[14:34]
	icmp := got[34:]
	require.Equal(t, refChecksum(cat(ipHdr[:10], []byte{0, 0}, ipHdr[12:])), binary.BigEndian.Uint16(ipHdr[10:]), "ipv4 checksum")
	require.Equal(t, refChecksum(cat(icmp[:2], []byte{0, 0}, icmp[4:])), binary.BigEndian.Uint16(icmp[2:]), "icmp checksum")
	copy(want[24:26], got[24:26])
	copy(want[36:38], got[36:38])
	require.Equal(t, want, got)
	require.Equal(t, uint64(1), g.Stats().Get(ICMPEchoReplies))

	// Bad ICMP checksum, echo to a broadcast, other ICMP types: no reply.
	bad := icmpEchoFrame([]byte{192, 168, 127, 1}, data)
	bad[len(bad)-1] ^= 0xff
	g.HandleFrame(bad, out.reply)
	g.HandleFrame(icmpEchoFrame([]byte{192, 168, 127, 255}, data), out.reply)
	reply := icmpEchoFrame([]byte{192, 168, 127, 1}, data)
	reply[34] = 0
	binary.BigEndian.PutUint16(reply[36:], 0)
	binary.BigEndian.PutUint16(reply[36:], refChecksum(reply[34:]))
	g.HandleFrame(reply, out.reply)
	out.none(t)
	require.Equal(t, uint64(1), g.Stats().Drops(DropBadChecksum))
	require.Equal(t, uint64(1), g.Stats().Drops(DropNotLocal))
	require.Equal(t, uint64(1), g.Stats().Drops(DropUnsupported))
}

func TestHandleFrameDrops(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	out := newFrames()
	ok := icmpEchoFrame([]byte{192, 168, 127, 1}, []byte("x"))
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), ok...)) }
	src := netip.MustParseAddr("192.168.127.50")
	tests := []struct {
		name   string
		frame  []byte
		reason DropReason
	}{
		{"empty", nil, DropMalformed},
		{"short", ok[:13], DropMalformed},
		{"vlan", mut(func(b []byte) []byte { return cat(b[:12], []byte{0x81, 0x00, 0, 5}, b[12:]) }), DropUnsupported},
		{"ipv6", mut(func(b []byte) []byte { b[12], b[13] = 0x86, 0xdd; return b }), DropUnsupported},
		{"other mac", mut(func(b []byte) []byte { b[5] = 0x99; return b }), DropNotLocal},
		{"multicast mac", mut(func(b []byte) []byte { copy(b, []byte{0x01, 0, 0x5e, 0, 0, 1}); return b }), DropUnsupported},
		{"multicast src", mut(func(b []byte) []byte { b[6] |= 1; return b }), DropMalformed},
		{"ip truncated", mut(func(b []byte) []byte { return b[:40] }), DropMalformed},
		{"ip bad checksum", mut(func(b []byte) []byte { b[24] ^= 1; return b }), DropBadChecksum},
		{"ip fragment", mut(func(b []byte) []byte {
			b[20] = 0x20 // MF
			binary.BigEndian.PutUint16(b[24:], 0)
			binary.BigEndian.PutUint16(b[24:], refChecksum(b[14:34]))
			return b
		}), DropFragment},
		{"udp other port", udpFrame(guestMAC1, testGWMAC, src, testGW, 1000, 123, []byte("ntp")), DropNoService},
		{"udp not for us", udpFrame(guestMAC1, testGWMAC, src, netip.MustParseAddr("8.8.8.8"), 1000, 53, []byte("dns")), DropNotLocal},
		{"udp bad length", mut(func(b []byte) []byte {
			f := udpFrame(guestMAC1, testGWMAC, src, testGW, 1000, 53, []byte("dns"))
			binary.BigEndian.PutUint16(f[38:], 200)
			return f
		}), DropMalformed},
		{"dns from port 0", udpFrame(guestMAC1, testGWMAC, src, testGW, 0, 53, mustPack(question("a.", dns.TypeA))), DropMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := g.Stats().Drops(tc.reason)
			g.HandleFrame(tc.frame, out.reply)
			out.none(t)
			require.Equal(t, before+1, g.Stats().Drops(tc.reason))
		})
	}
	require.NoError(t, g.Close())
	g.HandleFrame(ok, out.reply)
	out.none(t)
	require.Equal(t, uint64(1), g.Stats().Drops(DropClosed))
	require.NotEmpty(t, g.Stats().LogAttrs())
}

func TestZeroAllocARPICMP(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	g, _ := newTestGateway(t, nil)
	arp := arpRequestFrame([]byte{192, 168, 127, 1})
	icmp := icmpEchoFrame([]byte{192, 168, 127, 1}, make([]byte, 56))
	n := 0
	reply := func([]byte) { n++ }
	for _, f := range [][]byte{arp, icmp} {
		allocs := testing.AllocsPerRun(1000, func() { g.HandleFrame(f, reply) })
		require.Zero(t, allocs)
	}
	require.Equal(t, 2002, n)
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Gateway: netip.MustParseAddr("10.0.0.1")},
		{Gateway: netip.MustParseAddr("192.168.127.255")},
		{Domain: "bad..domain"},
		{MAC: []byte{1, 2, 3, 4, 5, 6}},
		{MAC: []byte{2, 3}},
		{MTU: 100},
		{LeaseTime: time.Second},
		{PoolStart: netip.MustParseAddr("192.168.127.100"), PoolEnd: netip.MustParseAddr("192.168.127.50")},
		{PoolEnd: netip.MustParseAddr("192.168.128.5")},
		{DNSUpstreams: []string{"dns.google"}},
		{HostAddr: netip.MustParseAddr("::1")},
		{DNSTimeout: -time.Second},
	}
	for i, c := range bad {
		c.Logger = quietLog
		_, err := NewGateway(c)
		require.Error(t, err, "case %d", i)
	}
	g, err := NewGateway(Config{Subnet: netip.MustParsePrefix("10.1.2.3/16"), Logger: quietLog, DNSUpstreams: noUpstream})
	require.NoError(t, err)
	defer g.Close()
	require.Equal(t, netip.MustParseAddr("10.1.0.1"), g.Addr())
	require.Equal(t, netip.MustParsePrefix("10.1.0.0/16"), g.Subnet())
	require.Equal(t, DefaultMAC, g.MAC())
}
