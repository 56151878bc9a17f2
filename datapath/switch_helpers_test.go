package datapath

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
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

// capPort records copies of the frames sent to it (what it keeps is
// headertest.Recorder's) and counts them in its TxPackets. It is
// datapathtest.Capture, which these tests cannot import (it imports this
// package). It is safe for concurrent use.
type capPort struct {
	headertest.Recorder
	name  string
	stats Stats
}

func newCapPort(name string) *capPort { return &capPort{name: name} }

func (c *capPort) Name() string  { return c.name }
func (c *capPort) Stats() *Stats { return &c.stats }
func (c *capPort) Send(frames []Frame) {
	if c.Call(len(frames)) {
		for _, f := range frames {
			c.Add(f.Segs, f.Len, f.Hdr, f.Queue)
		}
	}
	c.stats.TxPackets.Add(uint64(len(frames)))
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
	return headertest.Frame{Dst: dst, Src: src, EtherType: et, Payload: payload}.Build()
}

// udp4Frame builds an Ethernet/IPv4/UDP frame with n payload bytes and
// correct checksums.
func udp4Frame(dst, src header.MAC, sip, dip netip.Addr, sport, dport uint16, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return headertest.Frame{Dst: dst, Src: src, IPv4: &headertest.IPv4Header{ID: 1, Src: sip, Dst: dip},
		UDP: &headertest.UDPHeader{SrcPort: sport, DstPort: dport}, Payload: p}.Build()
}

// arpFrame builds an ARP request from src (Ethernet) with the given sender
// fields.
func arpFrame(src, sender header.MAC, sip, tip netip.Addr) []byte {
	return headertest.Frame{Dst: header.BroadcastMAC, Src: src,
		ARP: &header.ARPFields{Op: header.ARPRequest, SenderMAC: sender, SenderIP: sip, TargetIP: tip}}.Build()
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

var (
	ip6A = netip.MustParseAddr("fd00::a")
	ip6B = netip.MustParseAddr("fd00::b")
)

// tcpGSOFrame builds a TCP GSO frame as Linux hands it to a virtio-net
// device: correct headers for the whole super-frame, the pseudo-header sum
// (with length 0, as tcp_gso_segment would recompute anyway) seeded in the
// checksum field, NEEDS_CSUM and gso_type/gso_size set.
func tcpGSOFrame(s gsoSpec, src, dst header.MAC) ([]byte, virtio.NetHdr) {
	f := headertest.Frame{Dst: dst, Src: src, VLAN: s.vlan, VLANTCI: 0x64,
		TCP: &headertest.TCPHeader{SrcPort: 40000, DstPort: 5201, Seq: 0xfffff000, Ack: 77, Flags: s.flags, Window: 512,
			Options: tcpOpts, Csum: headertest.CsumPartialNoLength}}
	gso := virtio.NetHdrGSOTCPv4
	if s.v6 {
		f.IPv6, gso = &headertest.IPv6Header{Src: ip6A, Dst: ip6B}, virtio.NetHdrGSOTCPv6
	} else {
		f.IPv4 = &headertest.IPv4Header{ID: 0x1234, Flags: header.IPv4FlagDF, Src: ipA, Dst: ipB}
		if s.ipOpts {
			f.IPv4.Options = []byte{1, 1, 1, 1}
		}
	}
	f.Payload = gsoPayload(f.HeaderLen(), s.payload, func(i int) byte { return byte(i*13 + i>>8) })
	return f.BuildGSO(gso, s.mss)
}

// udpGSOFrame builds a UFO frame (GSO_UDP): one UDP datagram larger than
// the MTU with a partial checksum.
func udpGSOFrame(s gsoSpec, src, dst header.MAC) ([]byte, virtio.NetHdr) {
	f := headertest.Frame{Dst: dst, Src: src, UDP: &headertest.UDPHeader{SrcPort: 5000, DstPort: 6000}}
	if s.v6 {
		f.IPv6 = &headertest.IPv6Header{Src: ip6A, Dst: ip6B}
	} else {
		f.IPv4 = &headertest.IPv4Header{ID: 0x4321, Src: ipA, Dst: ipB}
	}
	f.Payload = gsoPayload(f.HeaderLen(), s.payload, func(i int) byte { return byte(i*5 + i>>9) })
	return f.BuildGSO(virtio.NetHdrGSOUDP, s.mss)
}

// gsoPayload returns n payload bytes that start at offset off of the
// frame, byte i of the frame being pattern(i).
func gsoPayload(off, n int, pattern func(i int) byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = pattern(off + i)
	}
	return p
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
