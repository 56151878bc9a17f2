package services

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// The gateway's TCP is the smallest responder that carries DNS over TCP
// (RFC 7766) on port 53 of the gateway address, and nothing else. It is
// enough for a guest's stub resolver retrying a truncated answer:
//   - passive open only; SYN-ACK carries MSS (RFC 9293 §3.7.1), no window
//     scaling, SACK or timestamps;
//   - in-order receive only: a segment past rcvNxt is answered with a
//     duplicate ACK and dropped, the peer retransmits (§3.10.7.4 allows
//     this: "segments with higher beginning sequence numbers SHOULD be held
//     for later processing", not MUST);
//   - send with go-back-N retransmission on a fixed timer doubling from 1 s
//     (no RTT estimation, no congestion control: the peer is a guest on
//     the same host, and the volume is a few DNS answers);
//   - RST for segments that match no connection (§3.10.7.1), exact-match
//     RST acceptance (RFC 5961 §3.2), challenge ACK for a SYN on an open
//     connection (RFC 5961 §4.2);
//   - bounded state: tcpMaxConns connections, tcpMaxConnsPerIP per guest
//     address, idle connections closed after tcpIdle (RFC 7766 §6.2.3).
const (
	tcpMaxConns      = 256
	tcpMaxConnsPerIP = 16
	tcpIdle          = 30 * time.Second
	tcpLinger        = 2 * time.Minute // hard limit after idle close starts
	tcpRTO           = time.Second
	tcpMaxRetries    = 6
	tcpTick          = 250 * time.Millisecond
	tcpDefaultMSS    = 536 // RFC 9293 §3.7.1, when the SYN has no MSS option
	tcpMaxPending    = 32  // queries in flight per connection
	tcpMaxSendBuf    = 256 << 10
	tcpRecvWindow    = 0xffff
)

type tcpState uint8

const (
	tcpSynRcvd tcpState = iota + 1
	tcpEstablished
	tcpLastAck // our FIN is sent (after the peer's, or on idle close)
)

type tcpKey struct {
	addr netip.Addr
	port uint16
}

type tcpConn struct {
	key   tcpKey
	mac   header.MAC
	reply func([]byte)
	state tcpState

	iss, sndUna, sndNxt uint32
	sndWnd              uint32
	rcvNxt              uint32
	mss                 int
	rbuf                []byte // received bytes not yet parsed into messages
	sbuf                []byte // bytes from sndUna on: sent-unacked, then unsent
	finRcvd             bool
	closing             bool // send FIN once sbuf is drained
	finSent             bool // our FIN occupies sequence number iss+1+len(all data)
	pending             int  // queries waiting for an answer

	lastActive time.Time
	rtoAt      time.Time
	rto        time.Duration
	retries    int
}

// tcpDNS is the TCP responder; one mutex guards the connection table.
// Frames are built under the mutex and handed to reply functions after it
// is released, and DNS queries are started after it is released, so that
// a synchronous answer can take it again.
type tcpDNS struct {
	g *Gateway

	mu     sync.Mutex
	conns  map[tcpKey]*tcpConn
	perIP  map[netip.Addr]int
	quit   chan struct{}
	done   chan struct{}
	closed bool
}

type tcpOut struct {
	reply func([]byte)
	frame []byte
}

func newTCPDNS(g *Gateway) *tcpDNS {
	return &tcpDNS{g: g, conns: make(map[tcpKey]*tcpConn), perIP: make(map[netip.Addr]int),
		quit: make(chan struct{}), done: make(chan struct{})}
}

func (t *tcpDNS) start() {
	go func() {
		defer close(t.done)
		tk := time.NewTicker(tcpTick)
		defer tk.Stop()
		for {
			select {
			case <-t.quit:
				return
			case <-tk.C:
				t.tick(t.g.s.clock())
			}
		}
	}()
}

func (t *tcpDNS) stop() {
	close(t.quit)
	<-t.done
	t.mu.Lock()
	t.closed = true
	clear(t.conns)
	clear(t.perIP)
	t.mu.Unlock()
}

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

// segment handles one TCP segment from srcMAC (ip and tcp validated).
func (t *tcpDNS) segment(srcMAC header.MAC, ip header.IPv4, seg header.TCP, reply func([]byte)) {
	var out []tcpOut
	var queries [][]byte
	var c *tcpConn
	t.mu.Lock()
	c, out, queries = t.segmentLocked(srcMAC, ip, seg, reply, out)
	t.mu.Unlock()
	t.flush(out)
	for _, q := range queries {
		t.dispatch(c, q)
	}
}

func (t *tcpDNS) flush(out []tcpOut) {
	for _, o := range out {
		t.g.emit(o.reply, o.frame)
	}
}

// dispatch starts one DNS query read from connection c.
func (t *tcpDNS) dispatch(c *tcpConn, q []byte) {
	if !t.g.dns.query(q, false, func(p []byte) { t.answer(c, p) }) {
		t.mu.Lock()
		c.pending--
		out := t.output(c, nil, t.g.s.clock())
		t.mu.Unlock()
		t.flush(out)
	}
}

// answer queues a DNS answer on c (if it is still open) and sends it.
func (t *tcpDNS) answer(c *tcpConn, p []byte) {
	t.mu.Lock()
	if t.closed || t.conns[c.key] != c {
		t.mu.Unlock()
		return
	}
	c.pending--
	var out []tcpOut
	if len(c.sbuf)+2+len(p) > tcpMaxSendBuf {
		out = t.reset(c, out)
	} else {
		c.sbuf = binary.BigEndian.AppendUint16(c.sbuf, uint16(len(p)))
		c.sbuf = append(c.sbuf, p...)
		out = t.output(c, out, t.g.s.clock())
	}
	t.mu.Unlock()
	t.flush(out)
}

// segmentLocked runs one segment through the connection it belongs to
// (RFC 9293 §3.10.7.4, "SEGMENT ARRIVES", for the states a DNS server has):
// a new connection, a reset, the acknowledgement, then the data. It
// returns the connection (nil if there is none any more), the segments to
// send and the complete DNS queries received.
func (t *tcpDNS) segmentLocked(srcMAC header.MAC, ip header.IPv4, seg header.TCP, reply func([]byte), out []tcpOut) (*tcpConn, []tcpOut, [][]byte) {
	if t.closed {
		return nil, out, nil
	}
	now := t.g.s.clock()
	key := tcpKey{ip.Src(), seg.SrcPort()}
	flags := seg.Flags()
	c := t.conns[key]
	if seg.DstPort() != dnsPort || c == nil {
		if seg.DstPort() != dnsPort {
			t.g.stats.drop(DropNoService)
		}
		if c == nil && seg.DstPort() == dnsPort && flags&(header.TCPFlagSYN|header.TCPFlagACK|header.TCPFlagRST) == header.TCPFlagSYN {
			return t.open(srcMAC, ip, seg, reply, now, out)
		}
		if seg.DstPort() == dnsPort {
			t.g.stats.drop(DropTCP)
		}
		return nil, t.refuse(srcMAC, key, seg, reply, out), nil
	}
	c.reply, c.mac = reply, srcMAC
	if flags&header.TCPFlagRST != 0 {
		// RFC 5961 §3.2: accept a RST only at exactly rcvNxt.
		if seg.Seq() == c.rcvNxt {
			t.remove(c)
		} else {
			t.g.stats.drop(DropTCP)
		}
		return nil, out, nil
	}
	if flags&header.TCPFlagSYN != 0 {
		if c.state == tcpSynRcvd && seg.Seq()+1 == c.rcvNxt {
			return c, t.synAck(c, out), nil // the peer retransmitted its SYN
		}
		// RFC 5961 §4.2: challenge ACK.
		return c, t.segmentOut(c, out, c.sndNxt, nil, header.TCPFlagACK), nil
	}
	if flags&header.TCPFlagACK == 0 {
		t.g.stats.drop(DropTCP)
		return c, out, nil
	}
	c.lastActive = now
	c, out, done := t.acknowledge(c, seg, now, out)
	if done {
		return c, out, nil
	}
	c.sndWnd = uint32(seg.Window())
	queries, needAck := t.receive(c, seg)
	n := len(out)
	out = t.output(c, out, now)
	if needAck && len(out) == n {
		out = t.segmentOut(c, out, c.sndNxt, nil, header.TCPFlagACK)
	}
	return c, out, queries
}

// refuse answers a segment that belongs to no connection (RFC 9293
// §3.10.7.1, CLOSED): anything but a RST gets a RST.
func (t *tcpDNS) refuse(srcMAC header.MAC, key tcpKey, seg header.TCP, reply func([]byte), out []tcpOut) []tcpOut {
	flags := seg.Flags()
	if flags&header.TCPFlagRST != 0 {
		return out
	}
	if flags&header.TCPFlagACK != 0 {
		out = t.rawSegment(out, reply, srcMAC, key, seg.DstPort(), seg.Ack(), 0, header.TCPFlagRST, nil, nil)
	} else {
		l := uint32(len(seg.Payload()))
		if flags&header.TCPFlagSYN != 0 {
			l++
		}
		if flags&header.TCPFlagFIN != 0 {
			l++
		}
		out = t.rawSegment(out, reply, srcMAC, key, seg.DstPort(), 0, seg.Seq()+l, header.TCPFlagRST|header.TCPFlagACK, nil, nil)
	}
	t.g.stats.inc(TCPResets)
	return out
}

// acknowledge processes the ACK of seg on c: the handshake's last step, then
// the send buffer's acknowledged bytes (RFC 9293 §3.10.7.4, "fifth, check
// the ACK field"; RFC 6298 §5.3 for the timer). done reports that the
// segment needs nothing more: it was answered, or it closed c (then the
// returned connection is nil).
func (t *tcpDNS) acknowledge(c *tcpConn, seg header.TCP, now time.Time, out []tcpOut) (_ *tcpConn, _ []tcpOut, done bool) {
	ack := seg.Ack()
	if c.state == tcpSynRcvd {
		if ack != c.iss+1 {
			t.g.stats.inc(TCPResets)
			return c, t.rawSegment(out, c.reply, c.mac, c.key, dnsPort, ack, 0, header.TCPFlagRST, nil, nil), true
		}
		c.state, c.sndUna, c.retries, c.rto = tcpEstablished, ack, 0, tcpRTO
	}
	if seqLT(c.sndNxt, ack) {
		// Acknowledges something never sent: re-ACK and drop (§3.10.7.4).
		return c, t.segmentOut(c, out, c.sndNxt, nil, header.TCPFlagACK), true
	}
	if seqLT(c.sndUna, ack) {
		n := ack - c.sndUna
		if c.finSent && ack == c.sndNxt {
			n-- // the FIN's sequence number is not a byte of sbuf
		}
		c.sbuf = c.sbuf[:copy(c.sbuf, c.sbuf[min(int(n), len(c.sbuf)):])]
		c.sndUna = ack
		c.retries, c.rto = 0, tcpRTO
		// RFC 6298 §5.3: restart the timer when new data is acknowledged.
		c.rtoAt = time.Time{}
		if c.sndNxt != c.sndUna {
			c.rtoAt = now.Add(c.rto)
		}
		if c.state == tcpLastAck && c.finSent && ack == c.sndNxt {
			t.remove(c) // our FIN is acknowledged: done
			return nil, out, true
		}
	}
	return c, out, false
}

// receive takes seg's data and FIN into c (RFC 9293 §3.10.7.4, "seventh,
// process the segment text" and "eighth, check the FIN bit") and cuts the
// complete length-prefixed queries out of the receive buffer (RFC 1035
// §4.2.2). needAck reports that the segment must be acknowledged.
func (t *tcpDNS) receive(c *tcpConn, seg header.TCP) (queries [][]byte, needAck bool) {
	payload, seq := seg.Payload(), seg.Seq()
	fin := seg.Flags()&header.TCPFlagFIN != 0
	if len(payload) == 0 && !fin {
		return nil, false
	}
	if seqLT(seq, c.rcvNxt) {
		// Part or all of it was received before: keep the new tail.
		needAck = true
		if skip := c.rcvNxt - seq; uint64(skip) <= uint64(len(payload)) {
			payload, seq = payload[skip:], c.rcvNxt
		} else {
			payload, fin, seq = nil, false, c.rcvNxt
		}
	}
	switch {
	case seq != c.rcvNxt:
		// A gap: duplicate ACK, the peer resends (see the comment at the
		// top of this file).
		needAck, fin, payload = true, false, nil
	case c.finRcvd:
		needAck, fin, payload = true, false, nil
	case c.closing && len(payload) > 0:
		// We are closing (idle): no new queries.
		needAck, fin, payload = true, false, nil
	case c.pending >= tcpMaxPending && len(payload) > 0:
		// Too many queries in flight: do not take more bytes now.
		needAck, fin, payload = true, false, nil
		t.g.stats.drop(DropTCP)
	}
	if len(payload) > 0 {
		c.rbuf = append(c.rbuf, payload...)
		c.rcvNxt += uint32(len(payload))
		needAck = true
	}
	if fin {
		c.rcvNxt++
		c.finRcvd = true
		needAck = true
	}
	// What stays is one incomplete message, at most 2+65535 bytes.
	for len(c.rbuf) >= 2 {
		n := int(binary.BigEndian.Uint16(c.rbuf))
		if len(c.rbuf) < 2+n {
			break
		}
		queries = append(queries, append([]byte(nil), c.rbuf[2:2+n]...))
		c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[2+n:])]
	}
	c.pending += len(queries)
	return queries, needAck
}

// open answers a SYN with SYN-ACK (RFC 9293 §3.10.7.2, LISTEN).
func (t *tcpDNS) open(srcMAC header.MAC, ip header.IPv4, seg header.TCP, reply func([]byte), now time.Time, out []tcpOut) (*tcpConn, []tcpOut, [][]byte) {
	key := tcpKey{ip.Src(), seg.SrcPort()}
	if len(t.conns) >= tcpMaxConns || t.perIP[key.addr] >= tcpMaxConnsPerIP || key.addr.IsUnspecified() || key.port == 0 {
		t.g.stats.drop(DropTCP)
		t.g.stats.inc(TCPResets)
		return nil, t.rawSegment(out, reply, srcMAC, key, dnsPort, 0, seg.Seq()+1, header.TCPFlagRST|header.TCPFlagACK, nil, nil), nil
	}
	iss := rand.Uint32()
	c := &tcpConn{
		key: key, mac: srcMAC, reply: reply, state: tcpSynRcvd,
		iss: iss, sndUna: iss, sndNxt: iss + 1, sndWnd: uint32(seg.Window()),
		rcvNxt: seg.Seq() + 1, mss: peerMSS(seg.Options()),
		lastActive: now, rto: tcpRTO, rtoAt: now.Add(tcpRTO),
	}
	c.mss = min(c.mss, t.g.s.mtu-header.IPv4MinSize-header.TCPMinSize)
	t.conns[key] = c
	t.perIP[key.addr]++
	t.g.stats.inc(TCPConns)
	return c, t.synAck(c, out), nil
}

func (t *tcpDNS) synAck(c *tcpConn, out []tcpOut) []tcpOut {
	mss := uint16(t.g.s.mtu - header.IPv4MinSize - header.TCPMinSize)
	opt := []byte{2, 4, byte(mss >> 8), byte(mss)} // MSS option, RFC 9293 §3.2
	return t.rawSegment(out, c.reply, c.mac, c.key, dnsPort, c.iss, c.rcvNxt, header.TCPFlagSYN|header.TCPFlagACK, opt, nil)
}

// output sends what the window allows of sbuf, then our FIN when closing
// and everything is sent.
func (t *tcpDNS) output(c *tcpConn, out []tcpOut, now time.Time) []tcpOut {
	if c.state != tcpEstablished && c.state != tcpLastAck {
		return out
	}
	if c.finRcvd && c.pending == 0 {
		c.closing = true
	}
	for {
		sent := int(c.sndNxt - c.sndUna)
		if c.finSent {
			return out
		}
		unsent := len(c.sbuf) - sent
		wnd := int(int64(c.sndUna) + int64(c.sndWnd) - int64(c.sndNxt))
		if unsent <= 0 {
			break
		}
		if wnd <= 0 {
			if c.rtoAt.IsZero() {
				c.rtoAt = now.Add(c.rto) // zero window: the timer probes
			}
			return out
		}
		n := min(unsent, wnd, c.mss)
		out = t.segmentOut(c, out, c.sndNxt, c.sbuf[sent:sent+n], header.TCPFlagACK|header.TCPFlagPSH)
		c.sndNxt += uint32(n)
		if c.rtoAt.IsZero() {
			c.rtoAt = now.Add(c.rto)
		}
	}
	if c.closing && !c.finSent && int(c.sndNxt-c.sndUna) == len(c.sbuf) {
		out = t.segmentOut(c, out, c.sndNxt, nil, header.TCPFlagACK|header.TCPFlagFIN)
		c.sndNxt++
		c.finSent = true
		c.state = tcpLastAck
		if c.rtoAt.IsZero() {
			c.rtoAt = now.Add(c.rto)
		}
	}
	return out
}

// tick runs the retransmission and idle timers.
func (t *tcpDNS) tick(now time.Time) {
	var out []tcpOut
	t.mu.Lock()
	for _, c := range t.conns {
		idle := now.Sub(c.lastActive)
		if idle > tcpLinger {
			out = t.reset(c, out)
			continue
		}
		if idle > tcpIdle && c.state == tcpEstablished && !c.closing {
			c.closing = true
			out = t.output(c, out, now)
		}
		if c.rtoAt.IsZero() || now.Before(c.rtoAt) {
			continue
		}
		if c.sndNxt == c.sndUna && (len(c.sbuf) == 0 || c.sndWnd != 0) {
			c.rtoAt = time.Time{} // nothing outstanding
			continue
		}
		if c.retries++; c.retries > tcpMaxRetries {
			out = t.reset(c, out)
			continue
		}
		t.g.stats.inc(TCPRetransmits)
		c.rto = min(2*c.rto, 30*time.Second)
		c.rtoAt = now.Add(c.rto)
		if c.state == tcpSynRcvd {
			out = t.synAck(c, out)
			continue
		}
		// Go back N: resend from sndUna. With a zero window, a one-byte
		// probe (RFC 9293 §3.8.6.1).
		c.sndNxt, c.finSent = c.sndUna, false
		if c.sndWnd == 0 && len(c.sbuf) > 0 {
			out = t.segmentOut(c, out, c.sndNxt, c.sbuf[:1], header.TCPFlagACK)
			c.sndNxt++
			continue
		}
		out = t.output(c, out, now)
	}
	t.mu.Unlock()
	t.flush(out)
}

// reset sends RST on c and forgets it.
func (t *tcpDNS) reset(c *tcpConn, out []tcpOut) []tcpOut {
	t.g.stats.inc(TCPResets)
	out = t.segmentOut(c, out, c.sndNxt, nil, header.TCPFlagRST|header.TCPFlagACK)
	t.remove(c)
	return out
}

func (t *tcpDNS) remove(c *tcpConn) {
	if t.conns[c.key] != c {
		return
	}
	delete(t.conns, c.key)
	if t.perIP[c.key.addr]--; t.perIP[c.key.addr] <= 0 {
		delete(t.perIP, c.key.addr)
	}
}

// segmentOut builds one segment of connection c.
func (t *tcpDNS) segmentOut(c *tcpConn, out []tcpOut, seq uint32, data []byte, flags uint8) []tcpOut {
	return t.rawSegment(out, c.reply, c.mac, c.key, dnsPort, seq, c.rcvNxt, flags, nil, data)
}

// rawSegment builds a TCP segment from the gateway's port sport to key and
// appends it to out. The frame is freshly allocated: it outlives the lock.
func (t *tcpDNS) rawSegment(out []tcpOut, reply func([]byte), mac header.MAC, key tcpKey, sport uint16, seq, ack uint32, flags uint8, opts, data []byte) []tcpOut {
	tl := header.TCPMinSize + len(opts) + len(data)
	f := make([]byte, header.EthernetMinSize+header.IPv4MinSize+tl)
	off := t.g.encodeIPv4(f, mac, key.addr, header.ProtoTCP, tl)
	seg := header.TCP(f[off:])
	var wnd uint16
	if flags&header.TCPFlagRST == 0 {
		wnd = tcpRecvWindow
	}
	hl := seg.Encode(&header.TCPFields{SrcPort: sport, DstPort: key.port, Seq: seq, Ack: ack, Flags: flags, Window: wnd, Options: opts})
	copy(seg[hl:], data)
	seg.SetChecksum(^header.Checksum(seg, header.PseudoHeaderChecksum(header.ProtoTCP, t.g.s.gw, key.addr, uint16(tl))))
	return append(out, tcpOut{reply: reply, frame: f})
}

// peerMSS reads the MSS option (kind 2, RFC 9293 §3.2) of a SYN.
func peerMSS(opts []byte) int {
	for len(opts) > 0 {
		switch opts[0] {
		case 0: // end of option list
			return tcpDefaultMSS
		case 1: // no-operation
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			return tcpDefaultMSS
		}
		if opts[0] == 2 && opts[1] == 4 {
			if m := int(binary.BigEndian.Uint16(opts[2:])); m >= 64 {
				return m
			}
			return tcpDefaultMSS
		}
		opts = opts[opts[1]:]
	}
	return tcpDefaultMSS
}
