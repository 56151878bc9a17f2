package datapath

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Test helpers for the switch: fake ports, clock and lease table, and
// frame builders.

var (
	macA  = header.MAC{0x52, 0x54, 0, 0, 0, 0x0a}
	macB  = header.MAC{0x52, 0x54, 0, 0, 0, 0x0b}
	macC  = header.MAC{0x52, 0x54, 0, 0, 0, 0x0c}
	macGW = header.MAC{0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee}
	macX  = header.MAC{0x02, 0, 0, 0, 0, 0x99}
	mcast = header.MAC{0x01, 0x00, 0x5e, 0, 0, 0xfb}
	ipA   = netip.MustParseAddr("192.168.127.10")
	ipB   = netip.MustParseAddr("192.168.127.11")
	ipGW  = netip.MustParseAddr("192.168.127.1")
)

// capPort records copies of the frames sent to it and how often Send was
// called. It is safe for concurrent use.
type capPort struct {
	name   string
	stats  Stats
	mu     sync.Mutex
	calls  int
	frames [][]byte
	hdrs   []virtio.NetHdr
	heads  []*byte // &Segs[0][0] of each frame, to check what it aliases
	queues []uint16
}

func newCapPort(name string) *capPort { return &capPort{name: name} }

func (c *capPort) Name() string  { return c.name }
func (c *capPort) Stats() *Stats { return &c.stats }
func (c *capPort) Send(frames []Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	for _, f := range frames {
		b := make([]byte, f.Len)
		if n := copyFrame(b, f.Segs); n != f.Len {
			panic("frame length does not match its segments")
		}
		c.frames = append(c.frames, b)
		c.hdrs = append(c.hdrs, f.Hdr)
		c.queues = append(c.queues, f.Queue)
		if len(f.Segs) > 0 && len(f.Segs[0]) > 0 {
			c.heads = append(c.heads, &f.Segs[0][0])
		} else {
			c.heads = append(c.heads, nil)
		}
	}
	c.stats.TxPackets.Add(uint64(len(frames)))
}

func (c *capPort) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *capPort) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls, c.frames, c.hdrs, c.heads, c.queues = 0, nil, nil, nil, nil
}

// offlPort is a capPort that declares its receive offloads.
type offlPort struct {
	*capPort
	off RxOffloads
}

func (o offlPort) RxOffloads() RxOffloads { return o.off }

// countPort counts frames and bytes only (benchmarks, alloc tests).
type countPort struct {
	name  string
	stats Stats
	calls atomic.Int64
	n     atomic.Int64
}

func (c *countPort) Name() string  { return c.name }
func (c *countPort) Stats() *Stats { return &c.stats }
func (c *countPort) Send(frames []Frame) {
	c.calls.Add(1)
	c.n.Add(int64(len(frames)))
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeLeases is a LeaseTable.
type fakeLeases struct {
	mu  sync.Mutex
	m   map[header.MAC]netip.Addr
	gen atomic.Uint64
	n   atomic.Int64 // LeasedIP calls
}

func newFakeLeases() *fakeLeases { return &fakeLeases{m: map[header.MAC]netip.Addr{}} }

func (l *fakeLeases) LeasedIP(mac header.MAC) (netip.Addr, bool) {
	l.n.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.m[mac]
	return a, ok
}

func (l *fakeLeases) LeaseGeneration() uint64 { return l.gen.Load() }

func (l *fakeLeases) set(mac header.MAC, a netip.Addr) {
	l.setQuiet(mac, a)
	l.gen.Add(1)
}

// setQuiet changes a lease without moving the generation.
func (l *fakeLeases) setQuiet(mac header.MAC, a netip.Addr) {
	l.mu.Lock()
	if a.IsValid() {
		l.m[mac] = a
	} else {
		delete(l.m, mac)
	}
	l.mu.Unlock()
}

// ethFrame builds an Ethernet frame.
func ethFrame(dst, src header.MAC, et uint16, payload []byte) []byte {
	b := make([]byte, header.EthernetMinSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: et})
	copy(b[header.EthernetMinSize:], payload)
	return b
}

// udp4Frame builds an Ethernet/IPv4/UDP frame with n payload bytes and
// correct checksums.
func udp4Frame(dst, src header.MAC, sip, dip netip.Addr, sport, dport uint16, n int) []byte {
	b := make([]byte, 14+20+8+n)
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: header.EtherTypeIPv4})
	ip := header.IPv4(b[14:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(20 + 8 + n), TTL: 64, Protocol: header.ProtoUDP, Src: sip, Dst: dip, ID: 1})
	u := header.UDP(b[34:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(8 + n)})
	for i := 0; i < n; i++ {
		b[42+i] = byte(i*7 + 3)
	}
	c := ^header.Checksum(b[34:], ip.PseudoHeaderChecksum(header.ProtoUDP, uint16(8+n)))
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksum(c)
	return b
}

// arpFrame builds an ARP request from src (Ethernet) with the given sender
// fields.
func arpFrame(src, sender header.MAC, sip, tip netip.Addr) []byte {
	a := make([]byte, header.ARPSize)
	header.ARP(a).Encode(&header.ARPFields{Op: header.ARPRequest, SenderMAC: sender, SenderIP: sip, TargetIP: tip})
	return ethFrame(header.BroadcastMAC, src, header.EtherTypeARP, a)
}

// tcpOpts are TCP options of a typical Linux data segment: NOP NOP
// timestamps.
var tcpOpts = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}

// gsoSpec describes a GSO frame for tcpGSOFrame/udpGSOFrame.
type gsoSpec struct {
	v6, vlan bool
	payload  int
	mss      uint16
	flags    uint8 // TCP flags
	ipOpts   bool  // IPv4 options (NOP x4)
}

// tcpGSOFrame builds a TCP GSO frame as Linux hands it to a virtio-net
// device: correct headers for the whole super-frame, the pseudo-header sum
// (with length 0, as tcp_gso_segment would recompute anyway) seeded in the
// checksum field, NEEDS_CSUM and gso_type/gso_size set.
func tcpGSOFrame(s gsoSpec, src, dst header.MAC) ([]byte, virtio.NetHdr) {
	l2 := 14
	if s.vlan {
		l2 = 18
	}
	l3len := 20
	if s.ipOpts {
		l3len = 24
	}
	if s.v6 {
		l3len = 40
	}
	tcpLen := 20 + len(tcpOpts)
	b := make([]byte, l2+l3len+tcpLen+s.payload)
	et := header.EtherTypeIPv4
	if s.v6 {
		et = header.EtherTypeIPv6
	}
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: et, VLAN: s.vlan, VLANTCI: 0x64})
	var ph uint16
	h := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOSize: s.mss, CsumStart: uint16(l2 + l3len), CsumOffset: 16, HdrLen: uint16(l2 + l3len + tcpLen)}
	if s.v6 {
		header.IPv6(b[l2:]).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen + s.payload), NextHeader: header.ProtoTCP, HopLimit: 64,
			Src: netip.MustParseAddr("fd00::a"), Dst: netip.MustParseAddr("fd00::b")})
		ph = header.PseudoHeaderChecksum(header.ProtoTCP, netip.MustParseAddr("fd00::a"), netip.MustParseAddr("fd00::b"), 0)
		h.GSOType = virtio.NetHdrGSOTCPv6
	} else {
		var opts []byte
		if s.ipOpts {
			opts = []byte{1, 1, 1, 1}
		}
		ip := header.IPv4(b[l2:])
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(l3len + tcpLen + s.payload), ID: 0x1234, Flags: header.IPv4FlagDF, TTL: 64,
			Protocol: header.ProtoTCP, Src: ipA, Dst: ipB, Options: opts})
		ph = ip.PseudoHeaderChecksum(header.ProtoTCP, 0)
		h.GSOType = virtio.NetHdrGSOTCPv4
	}
	th := header.TCP(b[l2+l3len:])
	th.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 5201, Seq: 0xfffff000, Ack: 77, Flags: s.flags, Window: 512, Options: tcpOpts})
	th.SetChecksum(ph)
	for i := l2 + l3len + tcpLen; i < len(b); i++ {
		b[i] = byte(i*13 + i>>8)
	}
	return b, h
}

// udpGSOFrame builds a UFO frame (GSO_UDP): one UDP datagram larger than
// the MTU with a partial checksum.
func udpGSOFrame(s gsoSpec, src, dst header.MAC) ([]byte, virtio.NetHdr) {
	l3len := 20
	if s.v6 {
		l3len = 40
	}
	b := make([]byte, 14+l3len+8+s.payload)
	et := header.EtherTypeIPv4
	if s.v6 {
		et = header.EtherTypeIPv6
	}
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: et})
	udpLen := 8 + s.payload
	var ph uint16
	if s.v6 {
		header.IPv6(b[14:]).Encode(&header.IPv6Fields{PayloadLength: uint16(udpLen), NextHeader: header.ProtoUDP, HopLimit: 64,
			Src: netip.MustParseAddr("fd00::a"), Dst: netip.MustParseAddr("fd00::b")})
		ph = header.PseudoHeaderChecksum(header.ProtoUDP, netip.MustParseAddr("fd00::a"), netip.MustParseAddr("fd00::b"), uint16(udpLen))
	} else {
		ip := header.IPv4(b[14:])
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(20 + udpLen), ID: 0x4321, TTL: 64, Protocol: header.ProtoUDP, Src: ipA, Dst: ipB})
		ph = ip.PseudoHeaderChecksum(header.ProtoUDP, uint16(udpLen))
	}
	u := header.UDP(b[14+l3len:])
	u.Encode(&header.UDPFields{SrcPort: 5000, DstPort: 6000, Length: uint16(udpLen)})
	u.SetChecksum(ph)
	for i := 14 + l3len + 8; i < len(b); i++ {
		b[i] = byte(i*5 + i>>9)
	}
	h := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOUDP, GSOSize: s.mss,
		CsumStart: uint16(14 + l3len), CsumOffset: 6, HdrLen: uint16(14 + l3len + 8)}
	return b, h
}

// chop cuts b into pieces of at most n bytes.
func chop(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// be16 reads a big-endian uint16.
func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
