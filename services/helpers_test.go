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
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// fakeClock is an injectable clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

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
)

// newTestGateway builds a gateway with a fake clock; edit adjusts the
// config. Upstreams default to a closed local port: no test ever sends to
// an address outside 127.0.0.1.
func newTestGateway(t testing.TB, edit func(*Config)) (*Gateway, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
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
	ulen := header.UDPSize + len(payload)
	f := make([]byte, header.EthernetMinSize+header.IPv4MinSize+ulen)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: dstMAC, Src: srcMAC, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(20 + ulen), ID: 7, TTL: 64, Protocol: header.ProtoUDP, Src: src, Dst: dst})
	u := header.UDP(f[34:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(ulen)})
	copy(u[8:], payload)
	u.SetChecksum(^header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, src, dst, uint16(ulen))))
	return f
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
	eth := header.Ethernet(f)
	require.True(t, eth.IsValid())
	require.Equal(t, header.EtherTypeIPv4, eth.EtherType())
	ip := header.IPv4(eth.Payload())
	require.True(t, ip.IsValid())
	require.Equal(t, len(ip), int(ip.TotalLength()))
	require.True(t, ip.IsChecksumValid(), "ipv4 checksum")
	require.Equal(t, header.ProtoUDP, ip.Protocol())
	u := header.UDP(ip.Payload())
	require.True(t, u.IsValid())
	require.Equal(t, len(u), int(u.Length()))
	require.Equal(t, uint16(0xffff), header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, ip.Src(), ip.Dst(), uint16(len(u)))), "udp checksum")
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
