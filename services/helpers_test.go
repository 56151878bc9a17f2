package services

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

var (
	testGW     = netip.MustParseAddr("192.168.127.1")
	testGWMAC  = header.MAC{0x02, 0x61, 0x72, 0x63, 0x00, 0x01}
	guestMAC1  = header.MAC{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}
	guestMAC2  = header.MAC{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
	guestMAC3  = header.MAC{0x52, 0x54, 0x00, 0x00, 0x00, 0x03}
	quietLog   = slog.New(slog.NewTextHandler(io.Discard, nil))
	bcastIP    = netip.MustParseAddr("255.255.255.255")
	zeroIP     = netip.IPv4Unspecified()
	noUpstream = []string{"127.0.0.1:1"} // never used unless a test forwards
	testEpoch  = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
)

// newTestGateway builds a gateway with a fake clock; edit adjusts the
// config. Upstreams default to a closed local port: no test ever sends to
// an address outside 127.0.0.1.
func newTestGateway(t testing.TB, edit func(*Config)) (*Gateway, *testclock.Clock) {
	t.Helper()
	clk := testclock.New(testEpoch)
	cfg := Config{Clock: clk.Now, Logger: quietLog, DNSUpstreams: noUpstream, DNSTimeout: 2 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	g, err := NewGateway(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	return g, clk
}

// frames collects reply frames (copies), safe for concurrent use.
type frames struct {
	mu  sync.Mutex
	all [][]byte
	ch  chan []byte
}

func newFrames() *frames { return &frames{ch: make(chan []byte, 1024)} }

func (f *frames) reply(b []byte) {
	c := append([]byte(nil), b...)
	f.mu.Lock()
	f.all = append(f.all, c)
	f.mu.Unlock()
	f.ch <- c
}

// next waits for the next frame (the timeout is only a safety net against
// a hung test, never an assertion about speed).
func (f *frames) next(t testing.TB) []byte {
	t.Helper()
	select {
	case b := <-f.ch:
		return b
	case <-time.After(20 * time.Second):
		t.Fatal("no reply frame")
		return nil
	}
}

// none checks that no frame was sent (synchronous paths only).
func (f *frames) none(t testing.TB) {
	t.Helper()
	select {
	case b := <-f.ch:
		t.Fatalf("unexpected reply frame of %d bytes", len(b))
	default:
	}
}

// udpFrame builds Ethernet/IPv4/UDP with correct checksums.
func udpFrame(srcMAC, dstMAC header.MAC, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	return headertest.Frame{Dst: dstMAC, Src: srcMAC, IPv4: &headertest.IPv4Header{ID: 7, Src: src, Dst: dst},
		UDP: &headertest.UDPHeader{SrcPort: sport, DstPort: dport}, Payload: payload}.Build()
}

// cat concatenates parts.
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var guestIP = []byte{192, 168, 127, 50}

// refChecksum is the Internet checksum by headertest's reference sum: an
// independent check of every checksum the gateway computes.
func refChecksum(b []byte) uint16 { return ^headertest.RefChecksum(b, 0) }

// arpRequestFrame is a guest's ARP request for target.
func arpRequestFrame(target []byte) []byte {
	return headertest.Frame{Dst: header.BroadcastMAC, Src: guestMAC1, ARP: &header.ARPFields{Op: header.ARPRequest,
		SenderMAC: guestMAC1, SenderIP: netip.AddrFrom4([4]byte(guestIP)), TargetIP: netip.AddrFrom4([4]byte(target))}}.Build()
}

// icmpEchoFrame is a guest's ICMP echo request (identifier 0x1234,
// sequence 7) to dst.
func icmpEchoFrame(dst []byte, data []byte) []byte {
	return headertest.Frame{Dst: testGWMAC, Src: guestMAC1,
		IPv4: &headertest.IPv4Header{ID: 0xbeef, Flags: header.IPv4FlagDF, Src: netip.AddrFrom4([4]byte(guestIP)), Dst: netip.AddrFrom4([4]byte(dst))},
		ICMP: &headertest.ICMPHeader{Type: header.ICMPv4Echo, Rest: 0x1234<<16 | 7}, Payload: data}.Build()
}

// parsedUDP is a reply frame taken apart, every checksum verified.
type parsedUDP struct {
	dstMAC, srcMAC header.MAC
	src, dst       netip.Addr
	sport, dport   uint16
	payload        []byte
}

func parseUDPFrame(t testing.TB, f []byte) parsedUDP {
	t.Helper()
	ip := headertest.CheckIPv4(t, f, headertest.ExactLength(), headertest.UDP())
	eth, u := header.Ethernet(f), header.UDP(ip.Payload())
	return parsedUDP{eth.Dst(), eth.Src(), ip.Src(), ip.Dst(), u.SrcPort(), u.DstPort(), u.Payload()}
}

// testUpstream is a DNS server on 127.0.0.1 (UDP and TCP on one port).
type testUpstream struct {
	addr     string
	udpCount atomic.Int32
	tcpCount atomic.Int32
}

// startUpstream runs handler for every query; tcp tells the transport.
func startUpstream(t testing.TB, handler func(r *dns.Msg, tcp bool) *dns.Msg) *testUpstream {
	t.Helper()
	u := &testUpstream{}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	require.NoError(t, err)
	u.addr = pc.LocalAddr().String()
	mk := func(tcp bool) dns.HandlerFunc {
		return func(w dns.ResponseWriter, r *dns.Msg) {
			if tcp {
				u.tcpCount.Add(1)
			} else {
				u.udpCount.Add(1)
			}
			if m := handler(r, tcp); m != nil {
				_ = w.WriteMsg(m)
			}
		}
	}
	start := func(s *dns.Server) {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	start(&dns.Server{PacketConn: pc, Handler: mk(false)})
	start(&dns.Server{Listener: ln, Handler: mk(true)})
	return u
}

// aAnswer answers r with one A record.
func aAnswer(r *dns.Msg, ip string, ttl uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip).To4()})
	return m
}

// ask sends m to the gateway's DNS server and waits for the answer.
func ask(t testing.TB, g *Gateway, m *dns.Msg, udp bool) *dns.Msg {
	t.Helper()
	b, err := m.Pack()
	require.NoError(t, err)
	ch := make(chan []byte, 1)
	require.True(t, g.dns.query(b, udp, func(p []byte) { ch <- append([]byte(nil), p...) }), "query dropped")
	var p []byte
	select {
	case p = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("no dns answer")
	}
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(p))
	require.Equal(t, m.Id, r.Id)
	require.True(t, r.Response)
	return r
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}
