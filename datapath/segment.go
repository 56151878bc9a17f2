package datapath

import (
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Software GSO: the switch cuts a GSO frame (virtio 1.2 §5.1.6.2, a TCP
// segment or UDP datagram larger than the MTU, sent with gso_type and
// gso_size) into MTU-sized frames when the port it goes to did not
// negotiate that offload (virtio 1.2 §5.1.6.4.1: "the device MUST NOT send
// ... TSO4 packets unless VIRTIO_NET_F_GUEST_TSO4 was negotiated", and so
// on). The result matches what Linux's GSO makes of the same frame
// (net/ipv4/tcp_offload.c, net/ipv4/udp_offload.c):
//
//   - TCP (GSO_TCPV4, GSO_TCPV6): segments of gso_size payload bytes; each
//     gets the headers, the IPv4 identification incremented per segment,
//     its own IPv4 total length or IPv6 payload length and header
//     checksum, sequence number seq+offset, FIN and PSH only on the last
//     segment and CWR only on the first (RFC 3168 §6.1.2), and a TCP
//     checksum over its own pseudo-header (RFC 9293 §3.1).
//   - UDP (GSO_UDP, "UFO"): IP fragments (RFC 791 §2.3, RFC 8200 §4.5) of
//     gso_size bytes (rounded down to a multiple of 8) of the datagram,
//     whose UDP checksum is completed over the whole datagram first.
//
// Every checksum is recomputed from scratch (headers and payload); nothing
// trusts the sender's length fields, hdr_len or the seed in its checksum
// field. The headers are parsed from one private copy (the template), so
// the guest cannot change them while they are cut; payloads stay in place
// (guest memory) and are referenced, not copied, until the receiver copies
// them once into its buffers.

const (
	// maxSegHdr is room for the headers a segment carries: Ethernet with
	// an 802.1Q tag (18), IPv4 with options (60), TCP with options (60).
	// IPv6 (40) plus a fragment header (8) and UDP (8) is smaller.
	maxSegHdr = 160
	// maxSegments bounds the frames one GSO frame may be cut into (a
	// 64 KiB frame with a 64-byte gso_size), so a guest cannot make the
	// switch amplify one descriptor into tens of thousands of frames.
	maxSegments = 1024
	// ipv6FragHdrLen is the IPv6 Fragment extension header (RFC 8200 §4.5).
	ipv6FragHdrLen    = 8
	ipv6ProtoFragment = 44
)

// gsoKind is the kind of segmentation a frame needs.
type gsoKind uint8

const (
	gsoTCP4 gsoKind = iota + 1
	gsoTCP6
	gsoUDP4
	gsoUDP6
)

// gsoPlan is a GSO frame parsed from the template, the private copy of its
// first bytes.
type gsoPlan struct {
	kind   gsoKind
	l3, l4 int // offsets of the IP and transport headers
	hdrLen int // bytes of headers: through TCP options, or through the UDP header
	mss    int // TCP: payload per segment; UDP: IP payload per fragment
	total  int // frame length
	n      int // segments (fragments) to make
}

// planGSO parses the GSO frame of length total whose header is h and whose
// first min(total, maxSegHdr) bytes are tmpl. It reports false for a frame
// that cannot be segmented: headers that do not match the GSO type, IPv6
// extension headers, an IPv4 fragment, a zero gso_size, too many segments.
func planGSO(h *virtio.NetHdr, tmpl []byte, total int) (gsoPlan, bool) {
	var p gsoPlan
	p.total = total
	eth := header.Ethernet(tmpl)
	if !eth.IsValid() {
		return p, false
	}
	p.l3 = eth.HeaderLen()
	et := eth.EtherType()
	proto := header.ProtoTCP
	switch h.GSOType &^ virtio.NetHdrGSOECN {
	case virtio.NetHdrGSOTCPv4:
		p.kind = gsoTCP4
	case virtio.NetHdrGSOTCPv6:
		p.kind = gsoTCP6
	case virtio.NetHdrGSOUDP:
		proto = header.ProtoUDP
		p.kind = gsoUDP4
		if et == header.EtherTypeIPv6 {
			p.kind = gsoUDP6
		}
	default:
		return p, false
	}
	switch p.kind {
	case gsoTCP4, gsoUDP4:
		ip := header.IPv4(tmpl[p.l3:])
		if et != header.EtherTypeIPv4 || !ip.IsValid() || ip.IsFragment() || ip.Protocol() != proto {
			return p, false
		}
		p.l4 = p.l3 + ip.HeaderLen()
	default:
		ip := header.IPv6(tmpl[p.l3:])
		if et != header.EtherTypeIPv6 || !ip.IsValid() || ip.NextHeader() != proto {
			return p, false
		}
		p.l4 = p.l3 + header.IPv6FixedSize
	}
	p.mss = int(h.GSOSize)
	if proto == header.ProtoTCP {
		tcp := header.TCP(tmpl[p.l4:])
		if !tcp.IsValid() {
			return p, false
		}
		p.hdrLen = p.l4 + tcp.HeaderLen()
		if p.mss == 0 || p.hdrLen > total {
			return p, false
		}
		p.n = max(1, (total-p.hdrLen+p.mss-1)/p.mss)
		ipLen := p.hdrLen - p.l4 + min(p.mss, total-p.hdrLen) // IPv6 payload length
		if p.kind == gsoTCP4 {
			ipLen += p.l4 - p.l3 // IPv4 total length
		}
		if ipLen > 0xffff {
			return p, false
		}
	} else {
		p.hdrLen = p.l4 + header.UDPSize
		p.mss &^= 7 // fragment offsets count 8-byte units
		udpLen := total - p.l4
		if p.mss == 0 || p.hdrLen > len(tmpl) || udpLen > 0xffff {
			return p, false
		}
		p.n = (udpLen + p.mss - 1) / p.mss
		ipLen := min(p.mss, udpLen) + ipv6FragHdrLen // IPv6 payload length
		if p.kind == gsoUDP4 {
			ipLen = min(p.mss, udpLen) + p.l4 - p.l3 // IPv4 total length
		}
		if ipLen > 0xffff {
			return p, false
		}
	}
	return p, p.n <= maxSegments
}

// emitter collects the frames for one destination port and hands them over
// in batches of up to MaxBatch, with a header buffer per frame for
// segments. Frames it holds are valid until the flush that sends them.
type emitter struct {
	dst  Port
	n    int
	out  [MaxBatch]Frame
	hdr  [MaxBatch][maxSegHdr]byte
	segs [MaxBatch][][]byte
}

// add queues a copy of f.
func (e *emitter) add(f *Frame) {
	if e.n == len(e.out) {
		e.flush()
	}
	e.out[e.n] = *f
	e.n++
}

// slot returns the index of the next free output frame, flushing first if
// all are taken; the caller fills out/hdr/segs at that index and then
// increments n.
func (e *emitter) slot() int {
	if e.n == len(e.out) {
		e.flush()
	}
	return e.n
}

// flush sends the queued frames.
func (e *emitter) flush() {
	if e.n > 0 {
		e.dst.Send(e.out[:e.n])
		e.n = 0
	}
}

// segReader walks a scatter list.
type segReader struct {
	segs [][]byte
	i    int // current segment
	off  int // offset in it
}

// skip advances n bytes.
func (r *segReader) skip(n int) {
	for n > 0 && r.i < len(r.segs) {
		k := min(n, len(r.segs[r.i])-r.off)
		n -= k
		r.off += k
		if r.off == len(r.segs[r.i]) {
			r.i, r.off = r.i+1, 0
		}
	}
}

// take appends to dst the slices that hold the next n bytes (fewer if the
// list ends) and returns dst.
func (r *segReader) take(dst [][]byte, n int) [][]byte {
	for n > 0 && r.i < len(r.segs) {
		s := r.segs[r.i][r.off:]
		k := min(n, len(s))
		if k > 0 {
			dst = append(dst, s[:k])
		}
		n -= k
		r.off += k
		if r.off == len(r.segs[r.i]) {
			r.i, r.off = r.i+1, 0
		}
	}
	return dst
}

// segmentFrame cuts GSO frame f (of length f.Len, which must be the true
// length of f.Segs) into e. partial: the receiver takes partial checksums,
// so TCP segments carry VIRTIO_NET_HDR_F_NEEDS_CSUM with the pseudo-header
// sum seeded (as Linux's GSO leaves them for a device with checksum
// offload); otherwise every checksum is complete. fragID is the
// identification of IPv6 fragments. tmpl is scratch for the headers'
// private copy. It reports false, sending nothing, for a frame planGSO
// refuses.
func segmentFrame(e *emitter, f *Frame, tmpl *[maxSegHdr]byte, partial bool, fragID uint32) bool {
	t := tmpl[:copyFrame(tmpl[:min(f.Len, maxSegHdr)], f.Segs)]
	p, ok := planGSO(&f.Hdr, t, f.Len)
	if !ok {
		return false
	}
	switch p.kind {
	case gsoTCP4, gsoTCP6:
		segmentTCP(e, f, t, &p, partial)
	case gsoUDP4:
		fragmentUDP4(e, f, t, &p)
	case gsoUDP6:
		fragmentUDP6(e, f, t, &p, fragID)
	}
	return true
}

// segmentTCP emits the TCP segments of plan p (virtio 1.2 §5.1.6.2.1:
// "the device ... segments ... as the driver would").
func segmentTCP(e *emitter, f *Frame, t []byte, p *gsoPlan, partial bool) {
	v4 := p.kind == gsoTCP4
	var base uint16 // pseudo-header sum without the length
	var id0 uint16
	if v4 {
		ip := header.IPv4(t[p.l3:p.l4])
		base = ip.PseudoHeaderChecksum(header.ProtoTCP, 0)
		id0 = ip.ID()
	} else {
		ip := header.IPv6(t[p.l3:])
		base = header.PseudoHeaderChecksum(header.ProtoTCP, ip.Src(), ip.Dst(), 0)
	}
	th := header.TCP(t[p.l4:p.hdrLen])
	seq0, flags0 := th.Seq(), th.Flags()
	tcpLen := p.hdrLen - p.l4
	payload := p.total - p.hdrLen
	r := segReader{segs: f.Segs}
	r.skip(p.hdrLen)
	for j := 0; j < p.n; j++ {
		plen := min(p.mss, payload-j*p.mss)
		k := e.slot()
		hdr := e.hdr[k][:p.hdrLen]
		copy(hdr, t[:p.hdrLen])
		l4len := tcpLen + plen
		if v4 {
			ip := header.IPv4(hdr[p.l3:p.l4])
			ip.SetTotalLength(uint16(p.l4 - p.l3 + l4len))
			ip.SetID(id0 + uint16(j))
			ip.UpdateChecksum()
		} else {
			header.IPv6(hdr[p.l3:]).SetPayloadLength(uint16(l4len))
		}
		tcp := header.TCP(hdr[p.l4:])
		tcp.SetSeq(seq0 + uint32(j*p.mss))
		fl := flags0
		if j < p.n-1 {
			fl &^= header.TCPFlagFIN | header.TCPFlagPSH
		}
		if j > 0 {
			fl &^= header.TCPFlagCWR
		}
		tcp.SetFlags(fl)
		segs := append(e.segs[k][:0], hdr)
		segs = r.take(segs, plen)
		e.segs[k] = segs
		ph := header.ChecksumCombine(base, uint16(l4len))
		var h virtio.NetHdr
		if partial {
			tcp.SetChecksum(ph)
			h.Flags = virtio.NetHdrFNeedsCsum
			h.CsumStart = uint16(p.l4)
			h.CsumOffset = header.TCPChecksumOffset
		} else {
			tcp.SetChecksum(0)
			s := header.Checksum(hdr[p.l4:], ph)
			s = header.ChecksumCombine(s, partialSum(segs[1:], 0))
			tcp.SetChecksum(^s)
		}
		e.out[k] = Frame{Hdr: h, Segs: segs, Len: p.hdrLen + plen, Queue: f.Queue}
		e.n++
	}
}

// udpChecksum completes the UDP header at t[l4:l4+8] of a datagram of
// udpLen bytes whose pseudo-header sum (without length) is base: the
// length field is set and the checksum computed over the header and the
// data (f from offset l4+8), RFC 768 (a zero result is sent as all ones).
func udpChecksum(t []byte, l4, udpLen int, base uint16, f *Frame) {
	u := header.UDP(t[l4 : l4+header.UDPSize])
	u.SetLength(uint16(udpLen))
	u.SetChecksum(0)
	s := header.Checksum(u, header.ChecksumCombine(base, uint16(udpLen)))
	s = header.ChecksumCombine(s, partialSum(f.Segs, l4+header.UDPSize))
	c := ^s
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksum(c)
}

// fragmentUDP4 emits the IPv4 fragments of a UFO datagram (RFC 791 §3.2,
// "fragmentation"): every fragment repeats the IP header (as Linux's UFO
// does, options included) with its own total length, offset, MF flag and
// header checksum; the first carries the UDP header.
func fragmentUDP4(e *emitter, f *Frame, t []byte, p *gsoPlan) {
	ihl := p.l4 - p.l3
	udpLen := p.total - p.l4
	udpChecksum(t, p.l4, udpLen, header.IPv4(t[p.l3:p.l4]).PseudoHeaderChecksum(header.ProtoUDP, 0), f)
	r := segReader{segs: f.Segs}
	r.skip(p.hdrLen)
	for j, off := 0, 0; j < p.n; j, off = j+1, off+p.mss {
		plen := min(p.mss, udpLen-off) // IP payload of this fragment
		hl, data := p.l4, plen
		if j == 0 {
			hl, data = p.hdrLen, plen-header.UDPSize
		}
		k := e.slot()
		hdr := e.hdr[k][:hl]
		copy(hdr, t[:hl])
		ip := header.IPv4(hdr[p.l3:p.l4])
		ip.SetTotalLength(uint16(ihl + plen))
		fo := uint16(off >> 3)
		if j < p.n-1 {
			fo |= header.IPv4FlagMF
		}
		ip.SetFlagsFragmentOffset(fo)
		ip.UpdateChecksum()
		segs := append(e.segs[k][:0], hdr)
		segs = r.take(segs, data)
		e.segs[k] = segs
		e.out[k] = Frame{Segs: segs, Len: hl + data, Queue: f.Queue}
		e.n++
	}
}

// fragmentUDP6 emits the IPv6 fragments of a UFO datagram (RFC 8200 §4.5):
// a Fragment header with identification fragID after the fixed header of
// each fragment; the first fragment carries the UDP header. A datagram that
// fits one fragment is sent whole, without a Fragment header.
func fragmentUDP6(e *emitter, f *Frame, t []byte, p *gsoPlan, fragID uint32) {
	udpLen := p.total - p.l4
	ip := header.IPv6(t[p.l3:])
	udpChecksum(t, p.l4, udpLen, header.PseudoHeaderChecksum(header.ProtoUDP, ip.Src(), ip.Dst(), 0), f)
	r := segReader{segs: f.Segs}
	r.skip(p.hdrLen)
	if p.n == 1 {
		k := e.slot()
		hdr := e.hdr[k][:p.hdrLen]
		copy(hdr, t[:p.hdrLen])
		header.IPv6(hdr[p.l3:]).SetPayloadLength(uint16(udpLen))
		segs := r.take(append(e.segs[k][:0], hdr), udpLen-header.UDPSize)
		e.segs[k] = segs
		e.out[k] = Frame{Segs: segs, Len: p.total, Queue: f.Queue}
		e.n++
		return
	}
	for j, off := 0, 0; j < p.n; j, off = j+1, off+p.mss {
		plen := min(p.mss, udpLen-off)
		hl, data := p.l4+ipv6FragHdrLen, plen
		if j == 0 {
			hl, data = p.l4+ipv6FragHdrLen+header.UDPSize, plen-header.UDPSize
		}
		k := e.slot()
		hdr := e.hdr[k][:hl]
		copy(hdr, t[:p.l4])
		v6 := header.IPv6(hdr[p.l3:])
		v6.SetNextHeader(ipv6ProtoFragment)
		v6.SetPayloadLength(uint16(ipv6FragHdrLen + plen))
		fh := hdr[p.l4 : p.l4+ipv6FragHdrLen]
		fh[0], fh[1] = header.ProtoUDP, 0
		fo := uint16(off) // offset in 8-byte units, in the top 13 bits
		if j < p.n-1 {
			fo |= 1 // M flag
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], fragID)
		if j == 0 {
			copy(hdr[p.l4+ipv6FragHdrLen:], t[p.l4:p.hdrLen])
		}
		segs := append(e.segs[k][:0], hdr)
		segs = r.take(segs, data)
		e.segs[k] = segs
		e.out[k] = Frame{Segs: segs, Len: hl + data, Queue: f.Queue}
		e.n++
	}
}
