package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// groSpec is one TCP/IPv4 segment for the coalescing tests.
type groSpec struct {
	seq, ack uint32
	id       uint16
	df       bool
	flags    uint8
	window   uint16
	opts     []byte // TCP options
	ipOpts   []byte
	payload  int
	pad      int // Ethernet padding after the packet
	sport    uint16
	ttl      uint8
}

var (
	groSrc = netip.MustParseAddr("203.0.113.7")
	groDst = netip.MustParseAddr("192.168.127.10")
	groTS  = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
)

// groFrame builds the frame of s with correct checksums.
func groFrame(s groSpec) []byte {
	if s.sport == 0 {
		s.sport = 443
	}
	if s.ttl == 0 {
		s.ttl = 63
	}
	ipl := header.IPv4MinSize + len(s.ipOpts)
	tcpl := header.TCPMinSize + len(s.opts)
	total := ipl + tcpl + s.payload
	b := make([]byte, header.EthernetMinSize+total+s.pad)
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: header.MAC{0x52, 0x54, 0, 0, 0, 1}, Src: header.MAC{0x02, 0, 0, 0, 0, 9}, EtherType: header.EtherTypeIPv4})
	var fl uint16
	if s.df {
		fl = header.IPv4FlagDF
	}
	ip := header.IPv4(b[header.EthernetMinSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), ID: s.id, Flags: fl, TTL: s.ttl, Protocol: header.ProtoTCP,
		Src: groSrc, Dst: groDst, Options: s.ipOpts})
	tcp := header.TCP(b[header.EthernetMinSize+ipl : header.EthernetMinSize+total])
	tcp.Encode(&header.TCPFields{SrcPort: s.sport, DstPort: 40000, Seq: s.seq, Ack: s.ack, Flags: s.flags,
		Window: s.window, Options: s.opts})
	for i := range s.payload {
		tcp[tcpl+i] = byte(s.seq + uint32(i))
	}
	tcp.SetChecksum(^header.Checksum(tcp, ip.PseudoHeaderChecksum(header.ProtoTCP, uint16(len(tcp)))))
	return b
}

// stream returns n full segments of mss bytes from seq 1000, IDs from 7.
func stream(n, mss int) []groSpec {
	var s []groSpec
	for i := range n {
		s = append(s, groSpec{seq: 1000 + uint32(i*mss), ack: 55, id: 7 + uint16(i), df: true, window: 500,
			flags: header.TCPFlagACK, opts: groTS, payload: mss})
	}
	return s
}

func framesOf(specs []groSpec) ([]Frame, [][]byte) {
	var fs []Frame
	var raw [][]byte
	for _, s := range specs {
		b := groFrame(s)
		raw = append(raw, b)
		fs = append(fs, Frame{Segs: [][]byte{b}, Len: len(b), Queue: 3})
	}
	return fs, raw
}

// resegment splits a merged frame back with the switch's software GSO
// (complete checksums) and returns the segments' bytes.
func resegment(t *testing.T, f Frame) [][]byte {
	t.Helper()
	var e emitter
	var tmpl [maxSegHdr]byte
	for i := range e.segs {
		e.segs[i] = make([][]byte, 0, 4)
	}
	rec := newCapPort("cap")
	e.dst = rec
	require.True(t, segmentFrame(&e, &f, &tmpl, false, 0))
	e.flush()
	return rec.Frames()
}

// TestCoalesceStream: a run of in-order segments becomes one GSO frame whose
// header says so, with the segments' payload in place; split again by the
// switch's software GSO it gives back the very frames that came in.
func TestCoalesceStream(t *testing.T) {
	for _, c := range []struct {
		name  string
		specs []groSpec
	}{
		{"full", stream(8, 1448)},
		{"short last", func() []groSpec { s := stream(5, 1000); s[4].payload = 300; return s }()},
		{"psh last", func() []groSpec { s := stream(4, 1448); s[3].flags |= header.TCPFlagPSH; return s }()},
		{"no options", func() []groSpec {
			s := stream(3, 1460)
			for i := range s {
				s[i].opts = nil
			}
			return s
		}()},
		{"fixed id with df", func() []groSpec {
			s := stream(3, 1448)
			for i := range s {
				s[i].id = 0
			}
			return s
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, raw := framesOf(c.specs)
			var co Coalescer
			out := co.Coalesce(in)
			require.Len(t, out, 1)
			m := out[0]
			mss := c.specs[0].payload
			hl := header.EthernetMinSize + header.IPv4MinSize + header.TCPMinSize + len(c.specs[0].opts)
			require.Equal(t, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4,
				GSOSize: uint16(mss), HdrLen: uint16(hl), CsumStart: 34, CsumOffset: 16}, m.Hdr)
			require.Equal(t, uint16(3), m.Queue)
			require.Len(t, m.Segs, len(in)+1)
			for i := range in {
				// the payload is the segment's own bytes, not a copy
				require.Same(t, &raw[i][hl], &m.Segs[i+1][0])
			}
			require.Equal(t, len(flat(m.Segs)), m.Len)
			require.EqualValues(t, len(in), co.Merged)
			got := resegment(t, m)
			if c.name == "fixed id with df" {
				// re-segmented with increasing IDs (Linux's GSO does
				// the same with DF): compare the rest
				for i := range got {
					header.IPv4(got[i][14:]).SetID(0)
					header.IPv4(got[i][14:]).UpdateChecksum()
				}
			}
			require.Equal(t, raw, got)
		})
	}
}

// onRaw makes a TestCoalesceBreaks change of the built frames (the
// harness calls each change with the specs first, then with the frames).
func onRaw(f func(raw [][]byte)) func([]groSpec, [][]byte) {
	return func(_ []groSpec, raw [][]byte) {
		if raw != nil {
			f(raw)
		}
	}
}

// TestCoalesceBreaks: what may not be merged goes through as it came and
// ends the run; the frames around it still merge where they can.
func TestCoalesceBreaks(t *testing.T) {
	type mod func(s []groSpec, raw [][]byte)
	for _, c := range []struct {
		name string
		mod  mod
		want []int // run lengths of the output, in order (1: passed as is)
	}{
		{"none", nil, []int{6}},
		{"out of order", func(s []groSpec, _ [][]byte) { s[3].seq += 1448; s[4].seq += 1448; s[5].seq += 1448 }, []int{3, 3}},
		{"other ack", func(s []groSpec, _ [][]byte) { s[2].ack++ }, []int{2, 1, 3}},
		{"fin", func(s []groSpec, _ [][]byte) { s[2].flags |= header.TCPFlagFIN }, []int{2, 1, 3}},
		{"syn", func(s []groSpec, _ [][]byte) { s[0].flags = header.TCPFlagSYN | header.TCPFlagACK }, []int{1, 5}},
		{"rst", func(s []groSpec, _ [][]byte) { s[5].flags = header.TCPFlagRST | header.TCPFlagACK }, []int{5, 1}},
		{"urg", func(s []groSpec, _ [][]byte) { s[1].flags |= header.TCPFlagURG }, []int{1, 1, 4}},
		{"psh in the middle", func(s []groSpec, _ [][]byte) { s[2].flags |= header.TCPFlagPSH }, []int{3, 3}},
		{"small in the middle", func(s []groSpec, _ [][]byte) {
			s[2].payload = 100
			for i := 3; i < 6; i++ {
				s[i].seq -= 1348
			}
		}, []int{3, 3}},
		{"no payload", func(s []groSpec, _ [][]byte) {
			s[2].payload = 0
			for i := 3; i < 6; i++ {
				s[i].seq -= 1448
			}
		}, []int{2, 1, 3}},
		{"other options", func(s []groSpec, _ [][]byte) {
			s[3].opts = []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 2}
		}, []int{3, 1, 2}},
		{"ip options", func(s []groSpec, _ [][]byte) { s[1].ipOpts = []byte{1, 1, 1, 0} }, []int{1, 1, 4}},
		{"id jump", func(s []groSpec, _ [][]byte) { s[3].id += 5; s[4].id += 5; s[5].id += 5 }, []int{3, 3}},
		{"fixed id without df", func(s []groSpec, _ [][]byte) {
			for i := range s {
				s[i].id, s[i].df = 9, false
			}
		}, []int{1, 1, 1, 1, 1, 1}},
		{"other ttl", func(s []groSpec, _ [][]byte) { s[4].ttl = 9 }, []int{4, 1, 1}},
		{"other port", func(s []groSpec, _ [][]byte) { s[4].sport = 9 }, []int{4, 1, 1}},
		{"bad tcp checksum", onRaw(func(raw [][]byte) { raw[2][len(raw[2])-1] ^= 1 }), []int{2, 1, 3}},
		{"bad ip checksum", onRaw(func(raw [][]byte) { raw[2][14+10] ^= 1 }), []int{2, 1, 3}},
		{"fragment", onRaw(func(raw [][]byte) {
			ip := header.IPv4(raw[2][14:])
			ip.SetFlagsFragmentOffset(header.IPv4FlagMF)
			ip.UpdateChecksum()
		}), []int{2, 1, 3}},
		{"udp", onRaw(func(raw [][]byte) {
			ip := header.IPv4(raw[2][14:])
			ip.SetProtocol(header.ProtoUDP)
			ip.UpdateChecksum()
		}), []int{2, 1, 3}},
		{"vlan", onRaw(func(raw [][]byte) { binary.BigEndian.PutUint16(raw[2][12:], header.EtherTypeVLAN) }), []int{2, 1, 3}},
		{"truncated", onRaw(func(raw [][]byte) {
			header.IPv4(raw[2][14:]).SetTotalLength(5000)
			header.IPv4(raw[2][14:]).UpdateChecksum()
		}), []int{2, 1, 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := stream(6, 1448)
			if c.mod != nil {
				c.mod(s, nil)
			}
			var raw [][]byte
			for _, sp := range s {
				raw = append(raw, groFrame(sp))
			}
			if c.mod != nil {
				c.mod(make([]groSpec, 6), raw)
			}
			var in []Frame
			for _, b := range raw {
				in = append(in, Frame{Segs: [][]byte{b}, Len: len(b)})
			}
			var co Coalescer
			out := co.Coalesce(in)
			var runs []int
			k := 0
			for _, f := range out {
				if f.Hdr.GSOType == virtio.NetHdrGSONone {
					require.Equal(t, raw[k], flat(f.Segs), "frame %d passed as it came", k)
					runs = append(runs, 1)
					k++
					continue
				}
				n := len(f.Segs) - 1
				runs = append(runs, n)
				require.Equal(t, bytes.Join(raw[k:k+n], nil), bytes.Join(resegment(t, f), nil))
				k += n
			}
			require.Equal(t, c.want, runs)
			require.Equal(t, len(raw), k)
		})
	}
}

// TestCoalescePaddingAndLimits: Ethernet padding after a small segment is
// not payload; a merged packet stays within the 16-bit IPv4 total length;
// frames with offload metadata or in pieces pass through.
func TestCoalescePaddingAndLimits(t *testing.T) {
	s := stream(3, 20)
	for i := range s {
		s[i].pad = 6
		s[i].opts = nil
	}
	in, _ := framesOf(s)
	var co Coalescer
	out := co.Coalesce(in)
	require.Len(t, out, 1)
	require.Equal(t, 54+60, out[0].Len)

	in, _ = framesOf(stream(50, 1448))
	out = co.Coalesce(in)
	require.Len(t, out, 2)
	// 52 bytes of headers and 45 segments of 1448: 65212; a 46th would not fit
	ipLen := header.IPv4MinSize + header.TCPMinSize + len(groTS) + 45*1448
	require.Len(t, out[0].Segs, 46)
	require.Equal(t, uint16(ipLen), header.IPv4(out[0].Segs[0][14:]).TotalLength())
	require.Len(t, out[1].Segs, 6)

	in, _ = framesOf(stream(3, 1448))
	in[1].Hdr.Flags = virtio.NetHdrFDataValid
	require.Len(t, co.Coalesce(in), 3)
	in, raw := framesOf(stream(3, 1448))
	in[1].Segs = [][]byte{raw[1][:100], raw[1][100:]}
	require.Len(t, co.Coalesce(in), 3)
}

// TestCoalesceWindowAndPush: the merged header carries the last segment's
// window and its PSH.
func TestCoalesceWindowAndPush(t *testing.T) {
	s := stream(3, 1448)
	s[1].window, s[2].window = 600, 700
	s[2].flags |= header.TCPFlagPSH
	in, _ := framesOf(s)
	var co Coalescer
	out := co.Coalesce(in)
	require.Len(t, out, 1)
	tcp := header.TCP(out[0].Segs[0][34:])
	require.Equal(t, uint16(700), tcp.Window())
	require.Equal(t, header.TCPFlagACK|header.TCPFlagPSH, tcp.Flags())
	require.True(t, header.IPv4(out[0].Segs[0][14:]).IsChecksumValid())
}

func TestCoalesceDoesNotAllocate(t *testing.T) {
	in, _ := framesOf(stream(64, 1448))
	mixed, _ := framesOf(append(stream(10, 1448), stream(5, 1000)...))
	var co Coalescer
	require.Zero(t, testing.AllocsPerRun(100, func() {
		co.Coalesce(in)
		co.Coalesce(mixed)
	}))
}

// fixChecksums makes the IPv4 and TCP checksums of b right if b looks
// like an Ethernet frame with an IPv4 header and TCP whose lengths fit, so
// that fuzzed headers get past Coalescer's checksum checks.
func fixChecksums(b []byte) {
	if len(b) < 54 || binary.BigEndian.Uint16(b[12:]) != header.EtherTypeIPv4 || b[14]>>4 != 4 {
		return
	}
	ip := header.IPv4(b[14:])
	hl, total := ip.HeaderLen(), int(ip.TotalLength())
	if hl < 20 || total < hl+20 || 14+total > len(b) {
		return
	}
	ip.UpdateChecksum()
	if ip.Protocol() != header.ProtoTCP {
		return
	}
	tcp := header.TCP(b[14+hl : 14+total])
	tcp.SetChecksum(0)
	tcp.SetChecksum(^header.Checksum(tcp, ip.PseudoHeaderChecksum(header.ProtoTCP, uint16(len(tcp)))))
}

// FuzzCoalesce: frames from the network, cut from arbitrary bytes, never
// make Coalesce fail; the frames it returns hold every byte of payload
// that went in, in order, and a merged frame splits again (software GSO)
// into segments of the size it says. A frame whose length prefix has its
// top bit set gets its checksums made right first (fixChecksums), so that
// the fuzzer's headers reach the merge rules.
func FuzzCoalesce(f *testing.F) {
	var seed, fixed []byte
	for _, sp := range stream(4, 100) {
		b := groFrame(sp)
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(b)))
		seed = append(seed, b...)
		fixed = binary.BigEndian.AppendUint16(fixed, uint16(len(b))|0x8000)
		fixed = append(fixed, b...)
	}
	f.Add(seed)
	f.Add(fixed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var in []Frame
		for len(data) >= 2 && len(in) < MaxBatch {
			l := binary.BigEndian.Uint16(data)
			n := min(int(l&0x7fff), len(data)-2)
			b := bytes.Clone(data[2 : 2+n])
			if l&0x8000 != 0 {
				fixChecksums(b)
			}
			in = append(in, Frame{Segs: [][]byte{b}, Len: n})
			data = data[2+n:]
		}
		var co Coalescer
		out := co.Coalesce(in)
		k := 0
		for _, fr := range out {
			if fr.Hdr.GSOType == virtio.NetHdrGSONone {
				if !bytes.Equal(flat(fr.Segs), flat(in[k].Segs)) {
					t.Fatalf("frame %d changed", k)
				}
				k++
				continue
			}
			n := len(fr.Segs) - 1
			var want []byte
			for _, f := range in[k : k+n] {
				s := parseSeg(&f)
				want = append(want, f.Segs[0][s.hl:s.end]...)
			}
			if !bytes.Equal(want, flat(fr.Segs[1:])) {
				t.Fatalf("payload of frames %d..%d not kept", k, k+n)
			}
			segs := resegment(t, fr)
			if len(segs) != n {
				t.Fatalf("%d segments merged, %d after segmentation", n, len(segs))
			}
			k += n
		}
		if k != len(in) {
			t.Fatalf("%d frames in, %d accounted for", len(in), k)
		}
	})
}
