package services

import (
	"net"
	"net/netip"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
)

// Run on one core: go test -run XXX -bench . -cpu 1 ./services/

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// benchHandle feeds g the frames in turn, b.N in all, checks that every
// one got an answer and reports the rate.
func benchHandle(b *testing.B, g *Gateway, frames ...[]byte) {
	b.SetBytes(int64(len(frames[0])))
	b.ReportAllocs()
	n, i := 0, 0
	for b.Loop() {
		g.HandleFrame(frames[i%len(frames)], func([]byte) { n++ })
		i++
	}
	if n != b.N {
		b.Fatalf("%d answers for %d frames", n, b.N)
	}
	reportRate(b)
}

func BenchmarkARPReply(b *testing.B) {
	g, _ := newTestGateway(b, nil)
	f := arpRequestFrame([]byte{192, 168, 127, 1})
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		g.HandleFrame(f, func([]byte) {})
	}
}

func BenchmarkICMPEcho(b *testing.B) {
	g, _ := newTestGateway(b, nil)
	f := icmpEchoFrame([]byte{192, 168, 127, 1}, make([]byte, 56))
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		g.HandleFrame(f, func([]byte) {})
	}
}

// BenchmarkDHCPRenew: a bound guest's unicast DHCPREQUEST (RENEWING) in,
// DHCPACK frame out, through HandleFrame.
func BenchmarkDHCPRenew(b *testing.B) {
	g, _ := newTestGateway(b, nil)
	a := netip.MustParseAddr("192.168.127.50")
	var mac [6]byte
	copy(mac[:], guestMAC1[:])
	g.db.bind(mac, a, "", g.s.clock())
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr(guestMAC1[:])), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IP(a.AsSlice())))
	f := udpFrame(guestMAC1, testGWMAC, a, testGW, 68, 67, m.ToBytes())
	benchHandle(b, g, f)
}

// BenchmarkDHCPDiscover: DHCPDISCOVER from 200 guests in turn, DHCPOFFER
// out.
func BenchmarkDHCPDiscover(b *testing.B) {
	g, _ := newTestGateway(b, nil)
	var fs [][]byte
	for i := range 200 {
		mac := header.MAC{0x52, 0x54, 0x00, 0x01, byte(i >> 8), byte(i)}
		m, _ := dhcpv4.NewDiscovery(net.HardwareAddr(mac[:]))
		fs = append(fs, udpFrame(mac, header.BroadcastMAC, zeroIP, bcastIP, 68, 67, m.ToBytes()))
	}
	benchHandle(b, g, fs...)
}

// BenchmarkDNSLocal: a UDP query for gateway.<domain> in, answer frame out.
func BenchmarkDNSLocal(b *testing.B) {
	g, _ := newTestGateway(b, nil)
	f := udpFrame(guestMAC1, testGWMAC, netip.MustParseAddr("192.168.127.50"), testGW, 40000, 53,
		mustPack(question("gateway.arcnet.internal.", dns.TypeA)))
	benchHandle(b, g, f)
}

// BenchmarkDNSCached: a UDP query for a forwarded name, answered from the
// cache (the first query goes to a test upstream on 127.0.0.1).
func BenchmarkDNSCached(b *testing.B) {
	up := startUpstream(b, func(r *dns.Msg, tcp bool) *dns.Msg { return aAnswer(r, "192.0.2.1", 3600) })
	g, _ := newTestGateway(b, func(c *Config) { c.DNSUpstreams = []string{up.addr} })
	ask(b, g, question("www.example.", dns.TypeA), true)
	f := udpFrame(guestMAC1, testGWMAC, netip.MustParseAddr("192.168.127.50"), testGW, 40000, 53,
		mustPack(question("www.example.", dns.TypeA)))
	benchHandle(b, g, f)
	if up.udpCount.Load() != 1 {
		b.Fatalf("%d queries upstream", up.udpCount.Load())
	}
}

// BenchmarkDNSForwarded: every query goes to the test upstream on
// 127.0.0.1 (cache disabled): the forwarder's own cost plus a loopback
// round trip.
func BenchmarkDNSForwarded(b *testing.B) {
	up := startUpstream(b, func(r *dns.Msg, tcp bool) *dns.Msg { return aAnswer(r, "192.0.2.1", 3600) })
	g, _ := newTestGateway(b, func(c *Config) { c.DNSUpstreams = []string{up.addr}; c.DNSCacheSize = -1 })
	q := mustPack(question("www.example.", dns.TypeA))
	done := make(chan struct{}, 1)
	b.SetBytes(int64(len(q)))
	b.ReportAllocs()
	for b.Loop() {
		g.dns.query(q, true, func([]byte) { done <- struct{}{} })
		<-done
	}
	reportRate(b)
}
