package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
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

func newEngine(t testing.TB, mod func(*Config)) (*Engine, *testclock.Clock) {
	t.Helper()
	clk := testclock.New(time.Unix(1_000_000, 0))
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
	f := headertest.Frame{Payload: p.payload, IPv4: &headertest.IPv4Header{ID: p.id, Flags: p.frag & 0xe000,
		FragOffset: (p.frag & 0x1fff) * 8, Protocol: uint8(p.proto), Src: p.src.Addr(), Dst: p.dst.Addr(), Options: p.opts}}
	switch p.proto {
	case TCP:
		f.TCP = &headertest.TCPHeader{SrcPort: p.src.Port(), DstPort: p.dst.Port(), Seq: 1000, Ack: 2000, Flags: p.flags, Window: 65535}
	case UDP:
		f.UDP = &headertest.UDPHeader{SrcPort: p.src.Port(), DstPort: p.dst.Port()}
		if p.udpNoSum {
			f.UDP.Csum = headertest.CsumZero
		}
	case ICMP:
		typ, id := header.ICMPv4Echo, p.src.Port()
		if p.reply {
			typ, id = header.ICMPv4EchoReply, p.dst.Port()
		}
		f.ICMP = &headertest.ICMPHeader{Type: typ, Rest: uint32(id)<<16 | 7}
	default:
		f.Payload = nil
	}
	return clone(f.Packet())
}

// icmpError builds an ICMP error from src to dst about datagram emb.
func icmpError(src, dst netip.Addr, typ, code uint8, rest uint32, emb []byte) []byte {
	b := headertest.Frame{IPv4: &headertest.IPv4Header{Src: src, Dst: dst},
		ICMP: &headertest.ICMPHeader{Type: typ, Code: code, Rest: rest}, Payload: emb}.Packet()
	return append(make([]byte, 0, len(b)+64), b...)
}

// checkSums verifies every checksum of a complete IPv4 packet by full
// recomputation, including the embedded datagram of an ICMP error when it
// is complete. A UDP checksum may be zero (the engine keeps "no
// checksum"), and a fragment has only its header checksum checked.
func checkSums(t testing.TB, b []byte) {
	t.Helper()
	headertest.CheckIPv4Packet(t, b, headertest.UDPChecksumOptional(), headertest.Fragments())
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
