package datapath

import (
	"bytes"
	"encoding/binary"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Receive coalescing (GRO) for uplinks that hand over wire-size frames.
//
// The TAP uplink gets TCP from the kernel already coalesced: the kernel's
// GRO (on the veth or NIC the stream came in on) gives the TAP one 64 KiB
// frame for up to 45 segments, and a guest takes it as one receive buffer
// chain, with one interrupt and one pass through its stack (virtio 1.2
// §5.1.6.4: VIRTIO_NET_F_GUEST_TSO4). Frames from an AF_XDP socket are the
// wire's, one per segment: a guest under QEMU's TCG, which spends most of
// its time per frame, downloaded 6 times slower through --uplink xdp than
// through the TAP, and the Go test guest's TCP lost most of the stream.
//
// Coalescer does what GRO does (Linux net/ipv4/tcp_offload.c,
// tcp_gro_receive) for the common case: each run of consecutive frames in a
// batch that are in-order segments of one TCP/IPv4 connection becomes one
// GSO frame (VIRTIO_NET_HDR_GSO_TCPV4, gso_size the segments' size), its
// payload the segments' own bytes in place (no copy), its headers the
// first segment's with the total length, the last segment's window and PSH,
// and the transport checksum left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM with
// the pseudo-header sum, as Linux leaves a GRO'd packet): the switch
// completes or segments it for a guest that did not negotiate the offloads
// (segment.go). A segment is merged only when both checksums (IPv4 and TCP)
// are right, so a frame damaged on the wire is never passed on as valid;
// everything else (other protocols, options in the IPv4 header, fragments,
// SYN, FIN, RST, URG, ECE or CWR, a segment out of order, a different
// ACK number or TCP options) goes through as it came, and ends the run.
// Segments of a run all have the same size but the last, which may be
// smaller, and no segment but the last has PSH; the IPv4 identification
// increases by one from segment to segment, or stays the same with DF set.

// groHeadMax bounds the headers Coalescer copies: Ethernet, IPv4 without
// options, TCP with the most options.
const groHeadMax = header.EthernetMinSize + header.IPv4MinSize + 60

// groMaxIPLen is the largest merged IPv4 packet (its total length field).
const groMaxIPLen = 65535

// groSeg is what Coalescer parsed of one frame of the batch.
type groSeg struct {
	ok    bool   // a segment that may be merged
	joins bool   // it follows the frame before it (ok both, follows)
	hl    int    // Ethernet + IPv4 + TCP header length
	plen  int    // TCP payload length
	end   int    // 14 + IPv4 total length: Ethernet padding after it
	seq   uint32 // TCP sequence number
	id    uint16 // IPv4 identification
	flags uint8  // TCP flags
}

// Coalescer merges runs of TCP segments in batches of frames (see above).
// It belongs to one goroutine; the frames it returns are valid until its
// next Coalesce and as long as the input frames' bytes are.
type Coalescer struct {
	seg   [MaxBatch]groSeg
	heads [MaxBatch][groHeadMax]byte
	segs  [2 * MaxBatch][]byte
	out   [MaxBatch]Frame

	// Merged counts the segments that went into merged frames, Frames the
	// merged frames (for statistics; the caller may reset them).
	Merged, Frames uint64
}

// Coalesce returns frames with every run of mergeable segments replaced by
// one GSO frame, in order; frames itself when there is none. At most
// MaxBatch frames are looked at; more are returned unmerged.
func (c *Coalescer) Coalesce(frames []Frame) []Frame {
	n := min(len(frames), MaxBatch)
	runs := false
	for i := range n {
		s := &c.seg[i]
		*s = parseSeg(&frames[i])
		s.joins = i > 0 && s.ok && c.seg[i-1].ok && follows(&frames[i-1], &c.seg[i-1], &frames[i], s)
		runs = runs || s.joins
	}
	if !runs {
		return frames
	}
	out := c.out[:0]
	ns := 0 // c.segs in use
	for i := 0; i < n; {
		// The run from i: as long as each next segment follows the one
		// before, all but the last are full-size (the first's size), and
		// the merged packet fits its length field. A frame that is not
		// a segment starts a run of one: it goes on as it came.
		first := &c.seg[i]
		mss := first.plen
		ipLen := first.hl - header.EthernetMinSize + first.plen
		j := i + 1
		for j < n && c.seg[j].joins && c.seg[j-1].plen == mss && c.seg[j-1].flags&header.TCPFlagPSH == 0 &&
			c.seg[j].plen <= mss && ipLen+c.seg[j].plen <= groMaxIPLen {
			ipLen += c.seg[j].plen
			j++
		}
		if j == i+1 {
			out = append(out, frames[i])
			i++
			continue
		}
		out = append(out, c.merge(frames[i:j], c.seg[i:j], len(out), &ns, ipLen))
		c.Merged += uint64(j - i)
		c.Frames++
		i = j
	}
	return append(out, frames[n:]...)
}

// merge builds the GSO frame of run (k: its index in c.out, for its head
// buffer) whose IPv4 packet is ipLen bytes.
func (c *Coalescer) merge(run []Frame, seg []groSeg, k int, ns *int, ipLen int) Frame {
	first, last := &seg[0], &seg[len(seg)-1]
	hl := first.hl
	head := c.heads[k][:hl]
	copy(head, run[0].Segs[0][:hl])
	ip := header.IPv4(head[header.EthernetMinSize:])
	ip.SetTotalLength(uint16(ipLen))
	ip.UpdateChecksum()
	tcp := header.TCP(head[header.EthernetMinSize+header.IPv4MinSize:])
	tcp.SetFlags(first.flags | last.flags&header.TCPFlagPSH)
	lastTCP := header.TCP(run[len(run)-1].Segs[0][header.EthernetMinSize+header.IPv4MinSize:])
	tcp.SetWindow(lastTCP.Window())
	tcpLen := ipLen - header.IPv4MinSize
	tcp.SetChecksum(header.ChecksumCombine(ip.PseudoHeaderChecksum(header.ProtoTCP, 0), uint16(tcpLen)))
	segs := c.segs[*ns:*ns:len(c.segs)]
	segs = append(segs, head)
	total := hl
	for i := range run {
		b := run[i].Segs[0]
		segs = append(segs, b[seg[i].hl:seg[i].end])
		total += seg[i].plen
	}
	*ns += len(segs)
	return Frame{
		Hdr: virtio.NetHdr{
			Flags:      virtio.NetHdrFNeedsCsum,
			GSOType:    virtio.NetHdrGSOTCPv4,
			GSOSize:    uint16(first.plen),
			HdrLen:     uint16(hl),
			CsumStart:  header.EthernetMinSize + header.IPv4MinSize,
			CsumOffset: header.TCPChecksumOffset,
		},
		Segs:  segs,
		Len:   total,
		Queue: run[0].Queue,
	}
}

// parseSeg looks at frame f: a TCP/IPv4 segment with data that may be
// merged (ok), with its fields, or not. Nothing beyond what it checked is
// trusted: the frame comes from the network.
func parseSeg(f *Frame) groSeg {
	var s groSeg
	if len(f.Segs) != 1 || f.Hdr.Flags != 0 || f.Hdr.GSOType != virtio.NetHdrGSONone {
		return s
	}
	b := f.Segs[0]
	const l3 = header.EthernetMinSize
	const l4 = l3 + header.IPv4MinSize
	if len(b) < l4+header.TCPMinSize || binary.BigEndian.Uint16(b[12:14]) != header.EtherTypeIPv4 {
		return s
	}
	ip := header.IPv4(b[l3:])
	if b[l3] != 0x45 || ip.Protocol() != header.ProtoTCP || ip.IsFragment() {
		return s
	}
	total := int(ip.TotalLength())
	if total < header.IPv4MinSize+header.TCPMinSize || l3+total > len(b) {
		return s
	}
	tcp := header.TCP(b[l4 : l3+total])
	thl := tcp.HeaderLen()
	if thl < header.TCPMinSize || thl > len(tcp) {
		return s
	}
	fl := tcp.Flags()
	if fl&header.TCPFlagACK == 0 || fl&^(header.TCPFlagACK|header.TCPFlagPSH) != 0 || len(tcp) == thl {
		return s
	}
	if !ip.IsChecksumValid() ||
		header.Checksum(tcp, ip.PseudoHeaderChecksum(header.ProtoTCP, uint16(len(tcp)))) != 0xffff {
		return s
	}
	return groSeg{ok: true, hl: l4 + thl, plen: len(tcp) - thl, end: l3 + total,
		seq: tcp.Seq(), id: ip.ID(), flags: fl}
}

// follows reports whether segment b (parsed as sb) comes right after a (sa)
// in the same connection, with the same headers but for the fields a
// segment changes: sequence number, identification, window, PSH, checksums,
// lengths.
func follows(a *Frame, sa *groSeg, b *Frame, sb *groSeg) bool {
	if sa.hl != sb.hl || sb.seq != sa.seq+uint32(sa.plen) {
		return false
	}
	x, y := a.Segs[0], b.Segs[0]
	const l3 = header.EthernetMinSize
	const l4 = l3 + header.IPv4MinSize
	df := binary.BigEndian.Uint16(y[l3+6:]) & header.IPv4FlagDF
	switch {
	case sb.id == sa.id+1:
	case sb.id == sa.id && df != 0:
	default:
		return false
	}
	return bytes.Equal(x[:l3], y[:l3]) && // MACs and EtherType
		x[l3+1] == y[l3+1] && // TOS
		binary.BigEndian.Uint16(x[l3+6:]) == binary.BigEndian.Uint16(y[l3+6:]) && // DF, no fragment
		x[l3+8] == y[l3+8] && // TTL
		bytes.Equal(x[l3+12:l3+20], y[l3+12:l3+20]) && // addresses
		bytes.Equal(x[l4:l4+4], y[l4:l4+4]) && // ports
		bytes.Equal(x[l4+8:l4+12], y[l4+8:l4+12]) && // acknowledgment number
		bytes.Equal(x[l4+header.TCPMinSize:sa.hl], y[l4+header.TCPMinSize:sb.hl]) // options
}
