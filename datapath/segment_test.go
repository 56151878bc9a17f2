package datapath

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// segmentAll runs segmentFrame on frame b (header h) cut into pieces by
// layout and returns what the receiver got.
func segmentAll(t *testing.T, b []byte, h virtio.NetHdr, layout [][]byte, partial bool) (*capPort, bool) {
	t.Helper()
	orig := append([]byte{}, b...)
	cp := newCapPort("rx")
	e := &emitter{dst: cp}
	var tmpl [maxSegHdr]byte
	f := Frame{Hdr: h, Segs: layout, Len: len(b), Queue: 3}
	ok := segmentFrame(e, &f, &tmpl, partial, 0xabcd1234)
	e.flush()
	require.Equal(t, orig, b, "segmentation wrote into the source frame")
	return cp, ok
}

// layouts returns scatter lists of b worth testing: whole, headers split
// at odd points, 1000-byte pieces, random pieces.
func layouts(b []byte, r *rand.Rand) map[string][][]byte {
	return map[string][][]byte{
		"whole":  {b},
		"tiny":   append(chop(b[:61], 7), b[61:]),
		"1000":   chop(b, 1000),
		"random": split(r, b),
	}
}

// checkTCPSegments checks that segs (with headers hdrs) are the
// segmentation of TCP GSO frame orig: sizes, IP lengths, ids and header
// checksums, TCP sequence numbers, flags and checksums (every one
// recomputed here from scratch), payload.
func checkTCPSegments(t *testing.T, orig []byte, h virtio.NetHdr, segs [][]byte, hdrs []virtio.NetHdr, partial bool) {
	t.Helper()
	eth := header.Ethernet(orig)
	l3 := eth.HeaderLen()
	v6 := eth.EtherType() == header.EtherTypeIPv6
	l4 := l3 + 40
	if !v6 {
		l4 = l3 + header.IPv4(orig[l3:]).HeaderLen()
	}
	oth := header.TCP(orig[l4:])
	hdrLen := l4 + oth.HeaderLen()
	payload := orig[hdrLen:]
	mss := int(h.GSOSize)
	n := max(1, (len(payload)+mss-1)/mss)
	require.Len(t, segs, n)
	var got []byte
	for j, s := range segs {
		plen := min(mss, len(payload)-j*mss)
		require.Len(t, s, hdrLen+plen, "segment %d", j)
		require.Equal(t, orig[:l3], s[:l3], "segment %d Ethernet header", j)
		var pseudo uint16
		if v6 {
			ip, oip := header.IPv6(s[l3:]), header.IPv6(orig[l3:])
			require.EqualValues(t, len(s)-l3-40, ip.PayloadLength())
			require.Equal(t, oip.Src(), ip.Src())
			require.Equal(t, oip.Dst(), ip.Dst())
			pseudo = header.PseudoHeaderChecksum(header.ProtoTCP, ip.Src(), ip.Dst(), uint16(len(s)-l4))
		} else {
			ip, oip := header.IPv4(s[l3:]), header.IPv4(orig[l3:])
			require.True(t, ip.IsValid())
			require.True(t, ip.IsChecksumValid(), "segment %d IPv4 header checksum", j)
			require.EqualValues(t, len(s)-l3, ip.TotalLength())
			require.Equal(t, oip.ID()+uint16(j), ip.ID())
			require.Equal(t, oip.FlagsFragmentOffset(), ip.FlagsFragmentOffset())
			require.Equal(t, []byte(oip.Options()), []byte(ip.Options()))
			pseudo = ip.PseudoHeaderChecksum(header.ProtoTCP, uint16(len(s)-l4))
		}
		th := header.TCP(s[l4:])
		require.Equal(t, oth.Seq()+uint32(j*mss), th.Seq(), "segment %d seq", j)
		require.Equal(t, oth.Ack(), th.Ack())
		require.Equal(t, oth.SrcPort(), th.SrcPort())
		require.Equal(t, oth.Window(), th.Window())
		require.Equal(t, []byte(oth.Options()), []byte(th.Options()))
		want := oth.Flags()
		if j < n-1 {
			want &^= header.TCPFlagFIN | header.TCPFlagPSH
		}
		if j > 0 {
			want &^= header.TCPFlagCWR
		}
		require.Equal(t, want, th.Flags(), "segment %d flags", j)
		require.Zero(t, hdrs[j].GSOType)
		if partial {
			require.Equal(t, virtio.NetHdrFNeedsCsum, hdrs[j].Flags)
			require.EqualValues(t, l4, hdrs[j].CsumStart)
			require.EqualValues(t, 16, hdrs[j].CsumOffset)
			// Complete it as a receiver would: the field holds the
			// pseudo-header sum.
			require.Equal(t, pseudo, th.Checksum(), "segment %d seeded pseudo-header sum", j)
			c := append([]byte{}, s...)
			header.TCP(c[l4:]).SetChecksum(0)
			header.TCP(c[l4:]).SetChecksum(^header.Checksum(c[l4:], pseudo))
			s = c
		} else {
			require.Zero(t, hdrs[j].Flags)
		}
		require.Equal(t, uint16(0xffff), header.Checksum(s[l4:], pseudo), "segment %d TCP checksum", j)
		got = append(got, s[hdrLen:]...)
	}
	require.Equal(t, string(payload), string(got))
}

func TestSegmentTCP(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	cases := []gsoSpec{
		{payload: 64000, mss: 1448, flags: header.TCPFlagACK | header.TCPFlagPSH},
		{payload: 3000, mss: 1448, flags: header.TCPFlagACK | header.TCPFlagPSH | header.TCPFlagFIN | header.TCPFlagCWR},
		{payload: 1448 * 3, mss: 1448, flags: header.TCPFlagACK, vlan: true, ipOpts: true},
		{payload: 1000, mss: 1448, flags: header.TCPFlagACK}, // fits one segment
		{payload: 7, mss: 3, flags: header.TCPFlagACK},       // odd sizes
		{payload: 65000, mss: 1428, v6: true, flags: header.TCPFlagACK | header.TCPFlagPSH},
		{payload: 5001, mss: 1000, v6: true, vlan: true, flags: header.TCPFlagACK | header.TCPFlagFIN | header.TCPFlagCWR},
		{payload: 0, mss: 1448, flags: header.TCPFlagACK | header.TCPFlagFIN}, // no payload: one segment
	}
	for _, c := range cases {
		b, h := tcpGSOFrame(c, macA, macB)
		for name, l := range layouts(b, r) {
			for _, partial := range []bool{false, true} {
				t.Run(fmt.Sprintf("v6=%v/vlan=%v/%d/%d/%s/partial=%v", c.v6, c.vlan, c.payload, c.mss, name, partial), func(t *testing.T) {
					cp, ok := segmentAll(t, b, h, l, partial)
					require.True(t, ok)
					checkTCPSegments(t, b, h, cp.Frames(), cp.Hdrs(), partial)
					for _, q := range cp.Queues() {
						require.EqualValues(t, 3, q)
					}
				})
			}
		}
	}
}

// reassemble4 checks IPv4 fragments of one datagram and returns its
// payload (the UDP datagram).
func reassemble4(t *testing.T, orig []byte, frags [][]byte, fragSize int) []byte {
	t.Helper()
	oip := header.IPv4(orig[14:])
	out := make([]byte, 0, len(orig))
	for j, f := range frags {
		ip := header.IPv4(f[14:])
		require.True(t, ip.IsValid())
		require.True(t, ip.IsChecksumValid(), "fragment %d header checksum", j)
		require.EqualValues(t, len(f)-14, ip.TotalLength())
		require.Equal(t, oip.ID(), ip.ID())
		require.Equal(t, len(out), ip.FragmentOffset(), "fragment %d offset", j)
		require.Equal(t, j < len(frags)-1, ip.MoreFragments())
		if j < len(frags)-1 {
			require.Equal(t, fragSize, len(ip.Payload()))
		}
		out = append(out, ip.Payload()...)
	}
	return out
}

// checkUDP checks a reassembled UDP datagram against the original's.
func checkUDP(t *testing.T, dgram, origDgram []byte, pseudo uint16) {
	t.Helper()
	require.Len(t, dgram, len(origDgram))
	u := header.UDP(dgram)
	require.EqualValues(t, len(dgram), u.Length())
	require.NotZero(t, u.Checksum())
	require.Equal(t, uint16(0xffff), header.Checksum(dgram, pseudo), "UDP checksum")
	require.Equal(t, origDgram[8:], dgram[8:])
	require.Equal(t, origDgram[:4], dgram[:4], "ports")
}

func TestSegmentUFO(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []gsoSpec{
		{payload: 8000, mss: 1480},
		{payload: 20000, mss: 1483}, // rounded down to 1480
		{payload: 1000, mss: 1480},  // one fragment
		{payload: 4000, mss: 1448, v6: true},
		{payload: 500, mss: 1448, v6: true}, // one fragment: sent whole
	} {
		b, h := udpGSOFrame(c, macA, macB)
		for name, l := range layouts(b, r) {
			t.Run(fmt.Sprintf("v6=%v/%d/%d/%s", c.v6, c.payload, c.mss, name), func(t *testing.T) {
				cp, ok := segmentAll(t, b, h, l, true)
				require.True(t, ok)
				fs := int(c.mss) &^ 7
				udpLen := 8 + c.payload
				for _, hd := range cp.Hdrs() {
					require.Zero(t, hd.Flags, "UFO fragments carry complete checksums")
					require.Zero(t, hd.GSOType)
				}
				if !c.v6 {
					require.Len(t, cp.Frames(), (udpLen+fs-1)/fs)
					dgram := reassemble4(t, b, cp.Frames(), fs)
					ip := header.IPv4(b[14:])
					checkUDP(t, dgram, b[34:], ip.PseudoHeaderChecksum(header.ProtoUDP, uint16(udpLen)))
					return
				}
				pseudo := header.PseudoHeaderChecksum(header.ProtoUDP, netip.MustParseAddr("fd00::a"), netip.MustParseAddr("fd00::b"), uint16(udpLen))
				if udpLen <= fs {
					require.Len(t, cp.Frames(), 1)
					f := cp.Frames()[0]
					require.EqualValues(t, header.ProtoUDP, header.IPv6(f[14:]).NextHeader())
					require.EqualValues(t, udpLen, header.IPv6(f[14:]).PayloadLength())
					checkUDP(t, f[54:], b[54:], pseudo)
					return
				}
				require.Len(t, cp.Frames(), (udpLen+fs-1)/fs)
				var dgram []byte
				for j, f := range cp.Frames() {
					ip := header.IPv6(f[14:])
					require.EqualValues(t, ipv6ProtoFragment, ip.NextHeader())
					require.EqualValues(t, len(f)-54, ip.PayloadLength())
					fh := f[54:62]
					require.EqualValues(t, header.ProtoUDP, fh[0])
					require.Equal(t, len(dgram), int(be16(fh[2:])&^7), "fragment %d offset", j)
					require.Equal(t, j < len(cp.Frames())-1, be16(fh[2:])&1 == 1)
					require.Equal(t, []byte{0xab, 0xcd, 0x12, 0x34}, fh[4:8])
					dgram = append(dgram, f[62:]...)
				}
				checkUDP(t, dgram, b[54:], pseudo)
			})
		}
	}
}

func TestSegmentRefuses(t *testing.T) {
	good, gh := tcpGSOFrame(gsoSpec{payload: 5000, mss: 1448, flags: header.TCPFlagACK}, macA, macB)
	v6, _ := tcpGSOFrame(gsoSpec{payload: 5000, mss: 1448, v6: true}, macA, macB)
	udp, uh := udpGSOFrame(gsoSpec{payload: 5000, mss: 1480}, macA, macB)
	frag := append([]byte{}, good...)
	header.IPv4(frag[14:]).SetFlagsFragmentOffset(header.IPv4FlagMF)
	ext := append([]byte{}, v6...)
	header.IPv6(ext[14:]).SetNextHeader(0) // hop-by-hop options
	with := func(h virtio.NetHdr, f func(*virtio.NetHdr)) virtio.NetHdr { f(&h); return h }
	for _, c := range []struct {
		name string
		b    []byte
		h    virtio.NetHdr
	}{
		{"TCPv6 type on IPv4", good, with(gh, func(h *virtio.NetHdr) { h.GSOType = virtio.NetHdrGSOTCPv6 })},
		{"TCPv4 type on IPv6", v6, gh},
		{"UDP type on TCP", good, with(gh, func(h *virtio.NetHdr) { h.GSOType = virtio.NetHdrGSOUDP })},
		{"TCP type on UDP", udp, with(uh, func(h *virtio.NetHdr) { h.GSOType = virtio.NetHdrGSOTCPv4 })},
		{"USO", udp, with(uh, func(h *virtio.NetHdr) { h.GSOType = virtio.NetHdrGSOUDPL4 })},
		{"zero gso_size", good, with(gh, func(h *virtio.NetHdr) { h.GSOSize = 0 })},
		{"UFO gso_size below 8", udp, with(uh, func(h *virtio.NetHdr) { h.GSOSize = 7 })},
		{"too many segments", good, with(gh, func(h *virtio.NetHdr) { h.GSOSize = 4 })},
		{"IPv4 fragment", frag, gh},
		{"IPv6 extension header", ext, with(gh, func(h *virtio.NetHdr) { h.GSOType = virtio.NetHdrGSOTCPv6 })},
		{"truncated headers", good[:50], gh},
		{"runt", good[:10], gh},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp, ok := segmentAll(t, c.b, c.h, [][]byte{c.b}, false)
			require.False(t, ok)
			require.Zero(t, cp.Count())
		})
	}
}

// TestSegmentChunks checks that more segments than MaxBatch go out in
// several batches, in order.
func TestSegmentChunks(t *testing.T) {
	b, h := tcpGSOFrame(gsoSpec{payload: 60000, mss: 500, flags: header.TCPFlagACK}, macA, macB)
	cp, ok := segmentAll(t, b, h, [][]byte{b}, false)
	require.True(t, ok)
	require.Equal(t, 2, cp.Calls())
	checkTCPSegments(t, b, h, cp.Frames(), cp.Hdrs(), false)
}

func FuzzSegment(f *testing.F) {
	b, h := tcpGSOFrame(gsoSpec{payload: 300, mss: 100, flags: header.TCPFlagACK}, macA, macB)
	f.Add(b, h.GSOType, h.GSOSize, uint8(40))
	u, uh := udpGSOFrame(gsoSpec{payload: 300, mss: 96, v6: true}, macA, macB)
	f.Add(u, uh.GSOType, uh.GSOSize, uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, typ uint8, size uint16, cut uint8) {
		c := int(cut) % (len(b) + 1)
		cp := newCapPort("rx")
		e := &emitter{dst: cp}
		var tmpl [maxSegHdr]byte
		fr := Frame{Hdr: virtio.NetHdr{GSOType: typ, GSOSize: size}, Segs: [][]byte{b[:c], b[c:]}, Len: len(b)}
		orig := append([]byte{}, b...)
		if !segmentFrame(e, &fr, &tmpl, cut%2 == 0, 1) {
			return
		}
		e.flush()
		if !bytes.Equal(orig, b) {
			t.Fatal("source written")
		}
		total := 0
		for _, s := range cp.Frames() {
			if len(s) > maxSegHdr+int(size) {
				t.Fatalf("segment of %d bytes for gso_size %d", len(s), size)
			}
			total += len(s)
		}
		if len(cp.Frames()) == 0 || len(cp.Frames()) > maxSegments {
			t.Fatalf("%d segments", len(cp.Frames()))
		}
	})
}
