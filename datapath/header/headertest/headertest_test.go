package headertest

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

var (
	macA, macB = header.MAC{2, 0, 0, 0, 0, 0xa}, header.MAC{2, 0, 0, 0, 0, 0xb}
	ipA, ipB   = netip.MustParseAddr("192.168.127.10"), netip.MustParseAddr("203.0.113.2")
	ip6A, ip6B = netip.MustParseAddr("fd00::a"), netip.MustParseAddr("fd00::b")
)

func TestRefChecksumMatchesHeader(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		init := uint16(r.Uint32())
		require.Equal(t, header.Checksum(b, init), RefChecksum(b, init), "len %d", n)
	}
	// RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
	require.Equal(t, uint16(0xddf2), RefChecksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0))
}

// TestBuildParses builds every kind of frame and takes it apart with the
// header views: lengths and checksums are right, fields where they belong.
func TestBuildParses(t *testing.T) {
	payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz!") // odd length
	tests := []struct {
		name string
		f    Frame
	}{
		{"udp", Frame{IPv4: &IPv4Header{Src: ipA, Dst: ipB}, UDP: &UDPHeader{SrcPort: 1, DstPort: 53}}},
		{"tcp", Frame{IPv4: &IPv4Header{Src: ipA, Dst: ipB, TTL: 9}, TCP: &TCPHeader{SrcPort: 1, DstPort: 80, Seq: 7, Flags: header.TCPFlagSYN, Options: []byte{2, 4, 5, 0xb4}}}},
		{"icmp", Frame{IPv4: &IPv4Header{Src: ipA, Dst: ipB}, ICMP: &ICMPHeader{Type: header.ICMPv4Echo, Rest: 0x12340007}}},
		{"ip options", Frame{IPv4: &IPv4Header{Src: ipA, Dst: ipB, Options: []byte{1, 1, 1, 1}}, UDP: &UDPHeader{SrcPort: 1, DstPort: 2}}},
		{"vlan", Frame{VLAN: true, VLANTCI: 0x64, IPv4: &IPv4Header{Src: ipA, Dst: ipB}, TCP: &TCPHeader{SrcPort: 1, DstPort: 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.Dst, f.Src, f.Payload = macB, macA, payload
			b := f.Build()
			eth := header.Ethernet(b)
			require.True(t, eth.IsValid())
			require.Equal(t, macB, eth.Dst())
			require.Equal(t, macA, eth.Src())
			require.Equal(t, f.VLAN, eth.HasVLAN())
			require.Equal(t, f.HeaderLen()+len(payload), len(b))
			require.Equal(t, payload, b[f.HeaderLen():])
			ip := header.IPv4(eth.Payload())
			require.True(t, ip.IsValid())
			require.True(t, ip.IsChecksumValid())
			require.Equal(t, len(ip), int(ip.TotalLength()))
			require.Equal(t, or64(f.IPv4.TTL), ip.TTL())
			l := ip.Payload()
			switch {
			case f.TCP != nil:
				require.Equal(t, header.ProtoTCP, ip.Protocol())
				require.Equal(t, string(f.TCP.Options), string(header.TCP(l).Options()))
				require.Equal(t, uint16(0xffff), header.Checksum(l, ip.PseudoHeaderChecksum(header.ProtoTCP, uint16(len(l)))))
			case f.UDP != nil:
				require.Equal(t, header.ProtoUDP, ip.Protocol())
				require.Equal(t, len(l), int(header.UDP(l).Length()))
				require.Equal(t, uint16(0xffff), header.Checksum(l, ip.PseudoHeaderChecksum(header.ProtoUDP, uint16(len(l)))))
			case f.ICMP != nil:
				require.Equal(t, header.ProtoICMP, ip.Protocol())
				require.Equal(t, uint32(0x12340007), uint32(header.ICMPv4(l).Ident())<<16|uint32(header.ICMPv4(l).Seq()))
				require.Equal(t, uint16(0xffff), header.Checksum(l, 0))
			}
			CheckIPv4(t, b, ExactLength(), Src(ipA), Dst(ipB), EthSrc(macA), EthDst(macB))
			require.Equal(t, b[eth.HeaderLen():], f.Packet())
		})
	}
}

func TestBuildARPAndRaw(t *testing.T) {
	b := Frame{Dst: header.BroadcastMAC, Src: macA,
		ARP: &header.ARPFields{Op: header.ARPRequest, SenderMAC: macA, SenderIP: ipA, TargetIP: ipB}}.Build()
	eth := header.Ethernet(b)
	require.Equal(t, header.EtherTypeARP, eth.EtherType())
	a := header.ARP(eth.Payload())
	require.True(t, a.IsValid())
	require.Equal(t, header.ARPRequest, a.Op())
	require.Equal(t, ipB, a.TargetIP())

	raw := Frame{Dst: macB, Src: macA, EtherType: 0x88b5, Payload: []byte{1, 2, 3}}.Build()
	require.Equal(t, append(append(append([]byte{}, macB[:]...), macA[:]...), 0x88, 0xb5, 1, 2, 3), raw)
}

func TestBuildIPv6(t *testing.T) {
	for _, f := range []Frame{
		{IPv6: &IPv6Header{Src: ip6A, Dst: ip6B}, TCP: &TCPHeader{SrcPort: 1, DstPort: 2}, Payload: []byte("abc")},
		{IPv6: &IPv6Header{Src: ip6A, Dst: ip6B}, UDP: &UDPHeader{SrcPort: 1, DstPort: 2}, Payload: []byte("abc")},
	} {
		b := f.Build()
		eth := header.Ethernet(b)
		require.Equal(t, header.EtherTypeIPv6, eth.EtherType())
		ip := header.IPv6(eth.Payload())
		require.True(t, ip.IsValid())
		require.Equal(t, uint8(64), ip.HopLimit())
		l := ip.Payload()
		require.Equal(t, len(l), int(ip.PayloadLength()))
		require.Equal(t, uint16(0xffff), RefChecksum(l, refPseudo(ip.NextHeader(), ip6A, ip6B, len(l))))
	}
}

func TestCsum(t *testing.T) {
	f := Frame{IPv4: &IPv4Header{Src: ipA, Dst: ipB}, Payload: []byte("data")}
	seg := func(f Frame) header.UDP { return header.UDP(header.IPv4(f.Packet()).Payload()) }
	u := func(c Csum) Frame { g := f; g.UDP = &UDPHeader{SrcPort: 1, DstPort: 2, Csum: c}; return g }
	require.Zero(t, seg(u(CsumZero)).Checksum())
	require.Equal(t, header.PseudoHeaderChecksum(header.ProtoUDP, ipA, ipB, 12), seg(u(CsumPartial)).Checksum())
	require.Equal(t, header.PseudoHeaderChecksum(header.ProtoUDP, ipA, ipB, 0), seg(u(CsumPartialNoLength)).Checksum())
	// A UDP checksum that computes to zero goes as 0xffff (RFC 768): pick
	// the payload word that makes the sum all ones.
	z := u(CsumFull)
	z.Payload = []byte{0, 0}
	s := seg(z)
	s.SetChecksum(0)
	w := ^header.Checksum(s, header.PseudoHeaderChecksum(header.ProtoUDP, ipA, ipB, uint16(len(s))))
	z.Payload = []byte{byte(w >> 8), byte(w)}
	require.Equal(t, uint16(0xffff), seg(z).Checksum())
}

func TestBuildGSO(t *testing.T) {
	b, h := Frame{VLAN: true, IPv4: &IPv4Header{Src: ipA, Dst: ipB, Options: []byte{1, 1, 1, 1}},
		TCP: &TCPHeader{SrcPort: 1, DstPort: 2, Options: make([]byte, 12)}, Payload: make([]byte, 5000)}.BuildGSO(virtio.NetHdrGSOTCPv4, 1448)
	require.Equal(t, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448,
		CsumStart: 18 + 24, CsumOffset: 16, HdrLen: 18 + 24 + 32}, h)
	require.Equal(t, header.PseudoHeaderChecksum(header.ProtoTCP, ipA, ipB, 5032), header.TCP(b[42:]).Checksum(), "partial sum")

	b, h = Frame{IPv6: &IPv6Header{Src: ip6A, Dst: ip6B}, UDP: &UDPHeader{SrcPort: 1, DstPort: 2},
		Payload: make([]byte, 3000)}.BuildGSO(virtio.NetHdrGSOUDPL4, 1000)
	require.Equal(t, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOUDPL4, GSOSize: 1000,
		CsumStart: 54, CsumOffset: 6, HdrLen: 62}, h)
	require.Equal(t, header.PseudoHeaderChecksum(header.ProtoUDP, ip6A, ip6B, 3008), header.UDP(b[54:]).Checksum())
}

// fakeTB records failures; FailNow ends the goroutine as testing.T's
// does. Only what require and Recorder.Wait call is implemented.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Name() string          { return "fake" }
func (f *fakeTB) Errorf(string, ...any) { f.failed = true }
func (f *fakeTB) FailNow()              { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Fatal(...any)          { f.FailNow() }

// fails reports whether fn fails the test it is given.
func fails(fn func(t testing.TB)) bool {
	f := &fakeTB{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fn(f)
	}()
	wg.Wait()
	return f.failed
}

func TestChecksCatchMistakes(t *testing.T) {
	good := Frame{Dst: macB, Src: macA, IPv4: &IPv4Header{Src: ipA, Dst: ipB, TTL: 63},
		UDP: &UDPHeader{SrcPort: 1, DstPort: 53}, Payload: []byte("query")}
	mut := func(f Frame, m func(b []byte)) []byte { b := f.Build(); m(b); return b }
	noSum := good
	noSum.UDP = &UDPHeader{SrcPort: 1, DstPort: 53, Csum: CsumZero}
	frag := good
	frag.IPv4 = &IPv4Header{Src: ipA, Dst: ipB, Flags: header.IPv4FlagMF}
	icmpErr := Frame{Dst: macB, Src: macA, IPv4: &IPv4Header{Src: ipB, Dst: ipA},
		ICMP: &ICMPHeader{Type: header.ICMPv4TimeExceeded}, Payload: mut(good, func(b []byte) { b[len(b)-1]++ })[14:]}

	require.False(t, fails(func(t testing.TB) {
		CheckIPv4(t, good.Build(), ExactLength(), TTL(63), Src(ipA), Dst(ipB), EthSrc(macA), EthDst(macB),
			UDP(SrcPort(1), DstPort(53), Payload([]byte("query"))))
	}))
	require.False(t, fails(func(t testing.TB) { CheckIPv4(t, noSum.Build(), UDPChecksumOptional()) }))
	require.False(t, fails(func(t testing.TB) { CheckIPv4(t, frag.Build(), Fragments()) }))
	for name, fn := range map[string]func(t testing.TB){
		"ip checksum":     func(t testing.TB) { CheckIPv4(t, mut(good, func(b []byte) { b[24]++ })) },
		"udp checksum":    func(t testing.TB) { CheckIPv4(t, mut(good, func(b []byte) { b[len(b)-1]++ })) },
		"no udp checksum": func(t testing.TB) { CheckIPv4(t, noSum.Build()) },
		"fragment":        func(t testing.TB) { CheckIPv4(t, frag.Build()) },
		"quoted datagram": func(t testing.TB) { CheckIPv4(t, icmpErr.Build()) },
		"short":           func(t testing.TB) { CheckIPv4(t, good.Build()[:40]) },
		"padding":         func(t testing.TB) { CheckIPv4(t, append(good.Build(), 0), ExactLength()) },
		"not ipv4":        func(t testing.TB) { CheckIPv4(t, Frame{ARP: &header.ARPFields{SenderIP: ipA, TargetIP: ipB}}.Build()) },
		"ttl":             func(t testing.TB) { CheckIPv4(t, good.Build(), TTL(64)) },
		"src":             func(t testing.TB) { CheckIPv4(t, good.Build(), Src(ipB)) },
		"dst":             func(t testing.TB) { CheckIPv4(t, good.Build(), Dst(ipA)) },
		"eth src":         func(t testing.TB) { CheckIPv4(t, good.Build(), EthSrc(macB)) },
		"eth dst":         func(t testing.TB) { CheckIPv4(t, good.Build(), EthDst(macA)) },
		"protocol":        func(t testing.TB) { CheckIPv4(t, good.Build(), TCP()) },
		"port":            func(t testing.TB) { CheckIPv4(t, good.Build(), UDP(DstPort(54))) },
		"payload":         func(t testing.TB) { CheckIPv4(t, good.Build(), UDP(Payload([]byte("other")))) },
		"eth on a packet": func(t testing.TB) { CheckIPv4Packet(t, good.Packet(), EthSrc(macA)) },
		"tcp flags": func(t testing.TB) {
			CheckIPv4(t, Frame{IPv4: good.IPv4, TCP: &TCPHeader{Flags: 2}}.Build(), TCP(TCPFlags(0x12)))
		},
		"icmp type":        func(t testing.TB) { CheckIPv4(t, icmpErr.Build(), ICMP(ICMPType(header.ICMPv4Echo, 0))) },
		"icmp quote check": func(t testing.TB) { CheckIPv4Packet(t, icmpErr.Packet(), UDPChecksumOptional()) },
	} {
		require.True(t, fails(fn), name)
	}
}

func TestRecorder(t *testing.T) {
	var r Recorder
	head, tail := []byte{1, 2, 3}, []byte{4, 5}
	require.True(t, r.Call(2))
	r.Add([][]byte{head, tail}, 5, virtio.NetHdr{GSOType: 1}, 0)
	r.Add([][]byte{tail}, 2, virtio.NetHdr{}, 1)
	require.Equal(t, 1, r.Calls())
	require.Equal(t, 2, r.Count())
	require.Equal(t, [][]byte{{1, 2, 3, 4, 5}, {4, 5}}, r.Frames())
	require.Equal(t, []virtio.NetHdr{{GSOType: 1}, {}}, r.Hdrs())
	require.Equal(t, []uint16{0, 1}, r.Queues())
	require.Equal(t, 1, r.QueueCount(1))
	recs := r.Records()
	require.Same(t, &head[0], recs[0].Head)
	require.Same(t, &tail[0], &recs[0].Tail[0])
	require.Equal(t, 2, recs[0].Segs)
	require.Panics(t, func() { r.Add([][]byte{head}, 4, virtio.NetHdr{}, 0) })

	got := r.Wait(t, time.Second, func(rec Record) bool { return rec.Queue == 1 })
	require.Equal(t, []byte{4, 5}, got.Data)
	go func() {
		r.Call(1)
		r.Add([][]byte{head}, 3, virtio.NetHdr{}, 7)
	}()
	require.Equal(t, uint16(7), r.Wait(t, 10*time.Second, func(Record) bool { return true }).Queue)
	require.True(t, fails(func(t testing.TB) { r.Wait(t, time.Millisecond, func(Record) bool { return true }) }))

	require.Len(t, r.Take(), 3)
	require.Empty(t, r.Frames())
	r.Reset()
	require.Zero(t, r.Calls())
	require.Zero(t, r.Count())

	r.CountOnly = true
	require.False(t, r.Call(64))
	require.Equal(t, 64, r.Count())
	require.Zero(t, testing.AllocsPerRun(100, func() { r.Call(1) }))
}
