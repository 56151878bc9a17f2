//go:build linux

package uplink

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// A minimal TCP for the guest: enough to open a connection (actively or
// passively), send in order (segments of one MSS, or TSO frames) with a
// crude go-back-N retransmission, receive in order with cumulative ACKs,
// and no close (tests end with a RST). Sequence numbers are absolute.

const (
	guestMSS    = 1448
	ourWscale   = 7
	ourWindow   = 0xffff // << ourWscale: 8 MiB
	tsoPayload  = 44 * guestMSS
	tcpHdrBytes = 20
)

type tcpConn struct {
	g             *guest
	local, remote netip.AddrPort

	sndUna, sndNxt uint32
	sndWnd         uint32 // the peer's window in bytes
	sndShift       uint8  // the peer's window scale
	rcvNxt         uint32

	recvd   []byte // in-order data received, unless discard
	discard bool
	fin     bool
	// GSO frames received, and the longest frame.
	gsoFrames, maxFrame int
	// Data segments that were not the next expected (retransmissions,
	// out of order), and the last such sequence number.
	ooo       int
	lastOOO   uint32
	oooRanges [][2]uint32 // benchmark receiver: ranges beyond rcvNxt
	buf       []byte      // frame scratch
}

// synOptions: MSS 1460, NOP, window scale 7.
var synOptions = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, ourWscale}

// frame builds an Ethernet/IPv4/TCP frame for the connection into c.buf;
// with partial the TCP checksum field holds the pseudo-header sum (the
// virtio-net NEEDS_CSUM convention), else the full checksum.
func (c *tcpConn) frame(flags uint8, seq uint32, opts, payload []byte, partial bool) []byte {
	n := 34 + tcpHdrBytes + len(opts) + len(payload)
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	fr := c.buf[:n]
	copy(fr[34+tcpHdrBytes+len(opts):], payload)
	c.headers(fr, flags, seq, opts, partial)
	return fr
}

// headers writes the Ethernet, IPv4 and TCP headers (and checksums) of a
// segment into fr, whose payload (after the headers with opts) is in
// place already.
func (c *tcpConn) headers(fr []byte, flags uint8, seq uint32, opts []byte, partial bool) {
	header.Ethernet(fr).Encode(&header.EthernetFields{Dst: c.g.gwMAC, Src: c.g.mac, EtherType: header.EtherTypeIPv4})
	dst := c.remote.Addr()
	c.g.ipID++
	header.IPv4(fr[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(len(fr) - 14), ID: c.g.ipID,
		Flags: header.IPv4FlagDF, TTL: 64, Protocol: header.ProtoTCP, Src: c.local.Addr(), Dst: dst})
	seg := fr[34:]
	header.TCP(seg).Encode(&header.TCPFields{SrcPort: c.local.Port(), DstPort: c.remote.Port(), Seq: seq,
		Ack: c.rcvNxt, Flags: flags, Window: ourWindow, Options: opts})
	ps := header.PseudoHeaderChecksum(header.ProtoTCP, c.local.Addr(), dst, uint16(len(seg)))
	if partial {
		header.TCP(seg).SetChecksum(ps)
	} else {
		header.TCP(seg).SetChecksum(^header.Checksum(seg, ps))
	}
}

// partialHdr is the virtio-net header of a checksum-partial TCP frame,
// and of a TSO frame when gso is true.
func partialHdr(gso bool) virtio.NetHdr {
	h := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16, HdrLen: 54}
	if gso {
		h.GSOType, h.GSOSize = virtio.NetHdrGSOTCPv4, guestMSS
	}
	return h
}

// dial opens a connection from the guest's lport to remote.
func (g *guest) dial(remote netip.AddrPort, lport uint16) *tcpConn {
	g.t.Helper()
	c := &tcpConn{g: g, local: netip.AddrPortFrom(g.ip, lport), remote: remote}
	iss := rand.Uint32()
	c.sndUna, c.sndNxt = iss, iss+1
	g.send(c.frame(header.TCPFlagSYN, iss, synOptions, nil, false))
	g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
		s, ok := c.seg(fr)
		if !ok || s.Flags()&(header.TCPFlagSYN|header.TCPFlagACK) != header.TCPFlagSYN|header.TCPFlagACK || s.Ack() != iss+1 {
			return false
		}
		c.synced(s)
		return true
	}, "SYN-ACK from "+remote.String())
	c.sndUna = iss + 1
	c.ack()
	return c
}

// accept waits for a SYN to the guest's port and completes the handshake.
func (g *guest) accept(port uint16) *tcpConn {
	g.t.Helper()
	c := &tcpConn{g: g, local: netip.AddrPortFrom(g.ip, port)}
	var syn header.TCP
	g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
		ip, l4, ok := ipv4Of(fr, header.ProtoTCP)
		if !ok || ip.Dst() != g.ip || !header.TCP(l4).IsValid() || header.TCP(l4).DstPort() != port ||
			header.TCP(l4).Flags()&(header.TCPFlagSYN|header.TCPFlagACK) != header.TCPFlagSYN {
			return false
		}
		c.remote = netip.AddrPortFrom(ip.Src(), header.TCP(l4).SrcPort())
		syn = append(header.TCP(nil), l4...)
		return true
	}, "SYN to port "+strconv.Itoa(int(port)))
	c.synced(syn)
	iss := rand.Uint32()
	c.sndUna, c.sndNxt = iss, iss+1
	g.send(c.frame(header.TCPFlagSYN|header.TCPFlagACK, iss, synOptions, nil, false))
	g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
		s, ok := c.seg(fr)
		return ok && s.Flags()&header.TCPFlagACK != 0 && s.Ack() == iss+1
	}, "ACK of the SYN-ACK")
	c.sndUna = iss + 1
	return c
}

// synced takes the peer's initial sequence number and options from its SYN.
func (c *tcpConn) synced(s header.TCP) {
	c.rcvNxt = s.Seq() + 1
	c.sndWnd = uint32(s.Window())
	opts := s.Options()
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			i = len(opts)
			continue
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			break
		}
		if opts[i] == 3 && opts[i+1] == 3 && i+2 < len(opts) {
			c.sndShift = opts[i+2]
		}
		i += int(opts[i+1])
	}
}

// seg returns the TCP segment of fr if it belongs to the connection.
func (c *tcpConn) seg(fr []byte) (header.TCP, bool) {
	ip, l4, ok := ipv4Of(fr, header.ProtoTCP)
	s := header.TCP(l4)
	if !ok || !s.IsValid() || ip.Dst() != c.local.Addr() || ip.Src() != c.remote.Addr() ||
		s.DstPort() != c.local.Port() || s.SrcPort() != c.remote.Port() {
		return nil, false
	}
	return s, true
}

// ack sends a pure ACK.
func (c *tcpConn) ack() {
	c.g.send(c.frame(header.TCPFlagACK, c.sndNxt, nil, nil, false))
}

// rst aborts the connection.
func (c *tcpConn) rst() {
	c.g.send(c.frame(header.TCPFlagRST|header.TCPFlagACK, c.sndNxt, nil, nil, false))
}

// handle processes a frame; it reports whether it was the connection's and
// whether it calls for an ACK (data or an out-of-order segment).
func (c *tcpConn) handle(h virtio.NetHdr, fr []byte) (mine, needAck bool) {
	s, ok := c.seg(fr)
	if !ok {
		return false, false
	}
	if s.Flags()&header.TCPFlagRST != 0 {
		c.g.t.Fatalf("tcp %v -> %v: RST from the peer", c.local, c.remote)
	}
	if h.GSOType != virtio.NetHdrGSONone {
		c.gsoFrames++
	}
	c.maxFrame = max(c.maxFrame, len(fr))
	if s.Flags()&header.TCPFlagACK != 0 {
		if a := s.Ack(); int32(a-c.sndUna) > 0 && int32(a-c.sndNxt) <= 0 {
			c.sndUna = a
		}
		c.sndWnd = uint32(s.Window()) << c.sndShift
	}
	data := s.Payload()
	fin := s.Flags()&header.TCPFlagFIN != 0
	if len(data) == 0 && !fin {
		return true, false
	}
	if h.Flags&virtio.NetHdrFNeedsCsum == 0 && h.Flags&virtio.NetHdrFDataValid == 0 {
		ip, l4, _ := ipv4Of(fr, header.ProtoTCP)
		if !l4ChecksumOK(ip, l4) {
			c.g.t.Errorf("tcp %v -> %v: bad checksum on a %d-byte segment", c.remote, c.local, len(data))
			return true, false
		}
	}
	if s.Seq() == c.rcvNxt {
		if !c.discard {
			c.recvd = append(c.recvd, data...)
		}
		c.rcvNxt += uint32(len(data))
		if fin {
			c.rcvNxt++
			c.fin = true
		}
	} else {
		c.ooo++
		c.lastOOO = s.Seq()
	}
	return true, true
}

// pump receives frames for up to wait and handles them, ACKing data.
func (c *tcpConn) pump(wait time.Duration) {
	h, fr, ok := c.g.recv(wait)
	for ok {
		if _, need := c.handle(h, fr); need {
			c.ack()
		}
		h, fr, ok = c.g.recv(0)
	}
}

// write sends data in order and waits until all of it is acknowledged:
// TSO frames of up to tsoPayload bytes with tso, else MSS segments with
// full checksums. No progress for a second resends from the first
// unacknowledged byte.
func (c *tcpConn) write(data []byte, tso bool) {
	t := c.g.t
	t.Helper()
	start := c.sndNxt
	size := guestMSS
	if tso {
		size = tsoPayload
	}
	deadline := time.Now().Add(c.g.timeout)
	progress := time.Now()
	lastUna := c.sndUna
	for c.sndUna != start+uint32(len(data)) {
		for off := int(c.sndNxt - start); off < len(data); off = int(c.sndNxt - start) {
			n := min(size, len(data)-off)
			if c.sndNxt-c.sndUna+uint32(n) > c.sndWnd {
				break
			}
			if tso && n > guestMSS {
				c.g.sendHdr(partialHdr(true), c.frame(header.TCPFlagACK|header.TCPFlagPSH, c.sndNxt, nil, data[off:off+n], true))
			} else {
				c.g.send(c.frame(header.TCPFlagACK|header.TCPFlagPSH, c.sndNxt, nil, data[off:off+n], false))
			}
			c.sndNxt += uint32(n)
		}
		c.pump(100 * time.Millisecond)
		if c.sndUna != lastUna {
			lastUna, progress = c.sndUna, time.Now()
		} else if time.Since(progress) > time.Second {
			c.sndNxt, progress = c.sndUna, time.Now() // go back N
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp %v -> %v: %d of %d bytes acknowledged after %v", c.local, c.remote,
				c.sndUna-start, len(data), c.g.timeout)
		}
	}
}

// read receives until n bytes are in c.recvd.
func (c *tcpConn) read(n int) []byte {
	t := c.g.t
	t.Helper()
	deadline := time.Now().Add(c.g.timeout)
	for len(c.recvd) < n {
		if time.Now().After(deadline) {
			t.Fatalf("tcp %v <- %v: %d of %d bytes after %v (next %d; %d segments out of order, the last at %d)",
				c.local, c.remote, len(c.recvd), n, c.g.timeout, c.rcvNxt, c.ooo, c.lastOOO)
		}
		c.pump(100 * time.Millisecond)
	}
	return c.recvd[:n]
}

// pattern is deterministic test data: byte i of a stream is pattern(i).
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i%251) ^ byte(i>>16)
	}
	return b
}
