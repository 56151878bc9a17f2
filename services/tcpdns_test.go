package services

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// tcpPeer plays a guest's TCP client against the gateway, one segment at
// a time.
type tcpPeer struct {
	t      *testing.T
	g      *Gateway
	out    *frames
	ip     netip.Addr
	port   uint16
	dport  uint16
	seq    uint32 // next sequence number to send
	ack    uint32 // next sequence number expected from the gateway
	window uint16
}

func newTCPPeer(t *testing.T, g *Gateway, port uint16) *tcpPeer {
	return &tcpPeer{t: t, g: g, out: newFrames(), ip: netip.MustParseAddr("192.168.127.50"), port: port, dport: 53, seq: 1000, window: 65535}
}

func (p *tcpPeer) send(flags uint8, seq uint32, opts, data []byte) {
	f := headertest.Frame{Dst: testGWMAC, Src: guestMAC1, IPv4: &headertest.IPv4Header{Src: p.ip, Dst: testGW},
		TCP:     &headertest.TCPHeader{SrcPort: p.port, DstPort: p.dport, Seq: seq, Ack: p.ack, Flags: flags, Window: p.window, Options: opts},
		Payload: data}.Build()
	p.g.HandleFrame(f, p.out.reply)
}

// recv takes the next segment and checks its framing and checksums.
func (p *tcpPeer) recv() header.TCP {
	p.t.Helper()
	ip := headertest.CheckIPv4(p.t, p.out.next(p.t), headertest.EthDst(guestMAC1), headertest.EthSrc(testGWMAC),
		headertest.Src(testGW), headertest.Dst(p.ip), headertest.TCP(headertest.DstPort(p.port)))
	return header.TCP(ip.Payload())
}

func (p *tcpPeer) handshake() uint32 {
	p.t.Helper()
	p.send(header.TCPFlagSYN, p.seq, []byte{2, 4, 0x05, 0xb4}, nil)
	s := p.recv()
	require.Equal(p.t, header.TCPFlagSYN|header.TCPFlagACK, s.Flags())
	require.Equal(p.t, p.seq+1, s.Ack())
	mss := p.g.s.mtu - 40
	require.Equal(p.t, []byte{2, 4, byte(mss >> 8), byte(mss)}, s.Options(), "MSS option: MTU-40")
	p.seq++
	p.ack = s.Seq() + 1
	p.send(header.TCPFlagACK, p.seq, nil, nil)
	p.out.none(p.t)
	return s.Seq()
}

func lengthPrefixed(m *dns.Msg) []byte {
	b := mustPack(m)
	return cat([]byte{byte(len(b) >> 8), byte(len(b))}, b)
}

// readAnswer collects data segments until one whole DNS message is in.
func (p *tcpPeer) readAnswer() *dns.Msg {
	p.t.Helper()
	var buf []byte
	for {
		s := p.recv()
		if len(s.Payload()) == 0 {
			continue // a pure ACK
		}
		require.Equal(p.t, p.ack, s.Seq(), "in-order data")
		buf = append(buf, s.Payload()...)
		p.ack += uint32(len(s.Payload()))
		if len(buf) >= 2 && len(buf) >= 2+int(binary.BigEndian.Uint16(buf)) {
			break
		}
	}
	n := int(binary.BigEndian.Uint16(buf))
	require.Len(p.t, buf, 2+n)
	m := new(dns.Msg)
	require.NoError(p.t, m.Unpack(buf[2:]))
	p.send(header.TCPFlagACK, p.seq, nil, nil)
	return m
}

func TestTCPDNSQueryAndClose(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	p := newTCPPeer(t, g, 40000)
	p.handshake()

	// Two pipelined queries in one segment (RFC 7766 §6.2.1.1).
	q1 := question("gateway.arcnet.internal.", dns.TypeA)
	q2 := question("nobody.arcnet.internal.", dns.TypeA)
	q2.Id = q1.Id + 1
	data := cat(lengthPrefixed(q1), lengthPrefixed(q2))
	p.send(header.TCPFlagACK|header.TCPFlagPSH, p.seq, nil, data)
	p.seq += uint32(len(data))
	r1 := p.readAnswer()
	r2 := p.readAnswer()
	require.Equal(t, q1.Id, r1.Id)
	require.Equal(t, "192.168.127.1", r1.Answer[0].(*dns.A).A.String())
	require.Equal(t, q2.Id, r2.Id)
	require.Equal(t, dns.RcodeNameError, r2.Rcode)

	// A query split across segments, the length prefix too.
	q3 := lengthPrefixed(question("gateway.arcnet.internal.", dns.TypeA))
	p.send(header.TCPFlagACK, p.seq, nil, q3[:1])
	p.seq++
	require.Empty(t, p.recv().Payload())
	p.send(header.TCPFlagACK, p.seq, nil, q3[1:])
	p.seq += uint32(len(q3) - 1)
	require.Equal(t, dns.RcodeSuccess, p.readAnswer().Rcode)

	// The guest closes: the gateway ACKs the FIN and sends its own.
	p.send(header.TCPFlagACK|header.TCPFlagFIN, p.seq, nil, nil)
	p.seq++
	s := p.recv()
	require.Equal(t, header.TCPFlagACK|header.TCPFlagFIN, s.Flags())
	require.Equal(t, p.seq, s.Ack())
	p.ack++
	p.send(header.TCPFlagACK, p.seq, nil, nil)
	g.tcp.mu.Lock()
	require.Empty(t, g.tcp.conns)
	g.tcp.mu.Unlock()
	require.Equal(t, uint64(1), g.Stats().Get(TCPConns))
}

func TestTCPDNSForwardedAndTruncated(t *testing.T) {
	// The whole issue-3 path: a big upstream answer is truncated over UDP,
	// and the guest's retry over TCP gets all of it in several segments.
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 100 {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{198, 51, 100, byte(i)}})
		}
		if !tcp {
			// A real server truncates to the requester's EDNS size.
			m.Truncate(int(r.IsEdns0().UDPSize()))
		}
		return m
	})
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr}; c.MTU = 576 })
	p := newTCPPeer(t, g, 40001)
	p.handshake()
	data := lengthPrefixed(question("many.example.", dns.TypeA))
	p.send(header.TCPFlagACK|header.TCPFlagPSH, p.seq, nil, data)
	p.seq += uint32(len(data))
	r := p.readAnswer()
	require.Len(t, r.Answer, 100)
	require.Equal(t, int32(1), up.tcpCount.Load(), "upstream retried over TCP")
	require.False(t, r.Truncated)
}

func TestTCPDNSRetransmit(t *testing.T) {
	g, clk := newTestGateway(t, nil)
	p := newTCPPeer(t, g, 40002)
	p.handshake()
	data := lengthPrefixed(question("gateway.arcnet.internal.", dns.TypeA))
	p.send(header.TCPFlagACK|header.TCPFlagPSH, p.seq, nil, data)
	p.seq += uint32(len(data))
	var first header.TCP
	for first == nil || len(first.Payload()) == 0 {
		first = p.recv()
	}
	// The answer is "lost": after the RTO the gateway sends it again.
	g.tcp.tick(clk.Now())
	p.out.none(t)
	clk.Advance(tcpRTO)
	g.tcp.tick(clk.Now())
	again := p.recv()
	require.Equal(t, first.Seq(), again.Seq())
	require.Equal(t, first.Payload(), again.Payload())
	require.Equal(t, uint64(1), g.Stats().Get(TCPRetransmits))

	// Out-of-order data is not taken: duplicate ACK at rcvNxt.
	p.send(header.TCPFlagACK, p.seq+5, nil, []byte("zzz"))
	dup := p.recv()
	require.Equal(t, p.seq, dup.Ack())
	require.Empty(t, dup.Payload())

	// A peer that never ACKs is reset after the retries.
	for range tcpMaxRetries + 1 {
		clk.Advance(time.Minute)
		g.tcp.tick(clk.Now())
	}
	g.tcp.mu.Lock()
	require.Empty(t, g.tcp.conns)
	g.tcp.mu.Unlock()
}

func TestTCPResets(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	p := newTCPPeer(t, g, 40003)
	// ACK for no connection: <SEQ=SEG.ACK><CTL=RST>.
	p.ack = 777
	p.send(header.TCPFlagACK, 5, nil, nil)
	s := p.recv()
	require.Equal(t, header.TCPFlagRST, s.Flags())
	require.Equal(t, uint32(777), s.Seq())

	// SYN to a port without a service: <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>.
	p.dport = 80
	p.send(header.TCPFlagSYN, 99, nil, nil)
	s = p.recv()
	require.Equal(t, header.TCPFlagRST|header.TCPFlagACK, s.Flags())
	require.Equal(t, uint32(100), s.Ack())
	require.Equal(t, uint64(1), g.Stats().Drops(DropNoService))

	// A RST from the peer closes the connection, only at rcvNxt.
	p.dport = 53
	p.handshake()
	p.send(header.TCPFlagRST, p.seq+10, nil, nil)
	g.tcp.mu.Lock()
	require.Len(t, g.tcp.conns, 1, "RST out of window ignored (RFC 5961 §3.2)")
	g.tcp.mu.Unlock()
	p.send(header.TCPFlagRST, p.seq, nil, nil)
	g.tcp.mu.Lock()
	require.Empty(t, g.tcp.conns)
	g.tcp.mu.Unlock()
}

func TestTCPConnectionLimit(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	for i := range tcpMaxConnsPerIP {
		p := newTCPPeer(t, g, uint16(41000+i))
		p.send(header.TCPFlagSYN, 1, nil, nil)
		require.Equal(t, header.TCPFlagSYN|header.TCPFlagACK, p.recv().Flags())
	}
	p := newTCPPeer(t, g, 42000)
	p.send(header.TCPFlagSYN, 1, nil, nil)
	require.Equal(t, header.TCPFlagRST|header.TCPFlagACK, p.recv().Flags())
}

func TestPeerMSS(t *testing.T) {
	require.Equal(t, 1460, peerMSS([]byte{1, 1, 2, 4, 0x05, 0xb4}))
	require.Equal(t, tcpDefaultMSS, peerMSS(nil))
	require.Equal(t, tcpDefaultMSS, peerMSS([]byte{2, 4, 0, 1}))
	require.Equal(t, tcpDefaultMSS, peerMSS([]byte{3, 0, 2, 4, 5, 5}))
	require.Equal(t, tcpDefaultMSS, peerMSS([]byte{8, 10, 1}))
	require.Equal(t, tcpDefaultMSS, peerMSS([]byte{0, 2, 4, 5, 180}))
}
