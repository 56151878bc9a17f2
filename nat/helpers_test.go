package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

var (
	extAddr   = netip.MustParseAddr("198.51.100.7")
	guestPfx  = netip.MustParsePrefix("192.168.127.0/24")
	guestA    = netip.MustParseAddr("192.168.127.2")
	guestB    = netip.MustParseAddr("192.168.127.3")
	remote    = netip.MustParseAddr("203.0.113.9")
	remote2   = netip.MustParseAddr("203.0.113.10")
	routerHop = netip.MustParseAddr("10.9.9.9")
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// fakeClock is an injected clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newEngine(t testing.TB, mod func(*Config)) (*Engine, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	cfg := Config{External: extAddr, GuestPrefix: guestPfx, Clock: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	require.NoError(t, err)
	return e, clk
}

// pkt describes a test packet.
type pkt struct {
	proto    Proto
	src, dst netip.AddrPort // for ICMP echo, the port of src is the identifier
	flags    uint8          // TCP flags
	payload  []byte
	reply    bool   // ICMP echo reply instead of request
	id       uint16 // IP identification
	frag     uint16 // IPv4 flags|offset word
	opts     []byte // IP options
	udpNoSum bool
}

// build returns the packet with correct, fully computed checksums.
func (p pkt) build() []byte {
	ihl := 20 + len(p.opts)
	var l4 []byte
	switch p.proto {
	case TCP:
		l4 = make([]byte, 20+len(p.payload))
		th := header.TCP(l4)
		th.Encode(&header.TCPFields{SrcPort: p.src.Port(), DstPort: p.dst.Port(), Seq: 1000, Ack: 2000,
			Flags: p.flags, Window: 65535})
		copy(l4[20:], p.payload)
		th.SetChecksum(^header.Checksum(l4, header.PseudoHeaderChecksum(6, p.src.Addr(), p.dst.Addr(), uint16(len(l4)))))
	case UDP:
		l4 = make([]byte, 8+len(p.payload))
		u := header.UDP(l4)
		u.Encode(&header.UDPFields{SrcPort: p.src.Port(), DstPort: p.dst.Port(), Length: uint16(len(l4))})
		copy(l4[8:], p.payload)
		if !p.udpNoSum {
			c := ^header.Checksum(l4, header.PseudoHeaderChecksum(17, p.src.Addr(), p.dst.Addr(), uint16(len(l4))))
			if c == 0 {
				c = 0xffff
			}
			u.SetChecksum(c)
		}
	case ICMP:
		l4 = make([]byte, 8+len(p.payload))
		typ := header.ICMPv4Echo
		id := p.src.Port()
		if p.reply {
			typ = header.ICMPv4EchoReply
			id = p.dst.Port()
		}
		header.ICMPv4(l4).Encode(&header.ICMPv4Fields{Type: typ, Rest: uint32(id)<<16 | 7}, p.payload)
	}
	b := make([]byte, ihl+len(l4), ihl+len(l4)+128)
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), ID: p.id, Flags: p.frag & 0xe000,
		FragOffset: (p.frag & 0x1fff) * 8, TTL: 64, Protocol: uint8(p.proto), Src: p.src.Addr(), Dst: p.dst.Addr(), Options: p.opts})
	copy(b[ihl:], l4)
	return b
}

// icmpError builds an ICMP error from src to dst about datagram emb.
func icmpError(src, dst netip.Addr, typ, code uint8, rest uint32, emb []byte) []byte {
	b := make([]byte, 28+len(emb), 28+len(emb)+64)
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: 1, Src: src, Dst: dst})
	header.ICMPv4(b[20:]).Encode(&header.ICMPv4Fields{Type: typ, Code: code, Rest: rest}, emb)
	return b
}

// checkSums verifies every checksum of a complete IPv4 packet by full
// recomputation, including the embedded datagram of an ICMP error when it
// is complete.
func checkSums(t testing.TB, b []byte) {
	t.Helper()
	ip := header.IPv4(b)
	require.True(t, ip.IsValid())
	require.True(t, ip.IsChecksumValid(), "ip checksum")
	l := b[ip.HeaderLen():ip.TotalLength()]
	if ip.IsFragment() && (ip.FragmentOffset() != 0 || ip.MoreFragments()) {
		return // the transport checksum covers the reassembled datagram
	}
	switch ip.Protocol() {
	case 6:
		require.Equal(t, uint16(0xffff), header.Checksum(l, ip.PseudoHeaderChecksum(6, uint16(len(l)))), "tcp checksum")
	case 17:
		if header.UDP(l).Checksum() != 0 {
			require.Equal(t, uint16(0xffff), header.Checksum(l, ip.PseudoHeaderChecksum(17, uint16(len(l)))), "udp checksum")
		}
	case 1:
		require.Equal(t, uint16(0xffff), header.Checksum(l, 0), "icmp checksum")
		if ic := header.ICMPv4(l); ic.IsError() {
			emb := ic.Payload()
			if header.IPv4(emb).IsValid() && int(header.IPv4(emb).TotalLength()) == len(emb) {
				checkSums(t, emb)
			}
		}
	}
}

// one translates a single packet and returns it.
func one(e *Engine, from Side, b []byte, fl Flags) Packet {
	ps := []Packet{{Buf: b, Flags: fl}}
	e.Translate(from, ps)
	return ps[0]
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// clone copies b with room to grow (for in-place ICMP replies).
func clone(b []byte) []byte { return append(make([]byte, 0, len(b)+128), b...) }
