package nat

import "encoding/binary"

// Packet kinds found by parse.
const (
	kindDrop      = iota // p.Reason says why
	kindFlow             // TCP, UDP or ICMP echo with its transport header
	kindLaterFrag        // a fragment with a non-zero offset
	kindICMPError        // an ICMP error with an embedded header
)

// meta is what parse learns about one packet of a batch.
type meta struct {
	key   flowKey
	hash  uint64
	ref   ref
	l4    uint16 // offset of the transport header
	kind  uint8
	first bool // first fragment of a fragmented datagram
	echo  bool // ICMP echo request (the identifier is the source port)
}

// batchScratch is per-engine scratch for one pass of translateBatch.
type batchScratch [maxBatch]meta

func be16(b []byte) uint16          { return binary.BigEndian.Uint16(b) }
func put16(b []byte, v uint16)      { binary.BigEndian.PutUint16(b, v) }
func (e *Engine) sc() *batchScratch { return &e.scratch }

// translateBatch handles at most maxBatch packets in passes so that the
// cache misses of different packets overlap: parse and hash every packet;
// touch every packet's home index slot; walk every packet's probe to the
// first slot with its tag and touch the flow record it names (or, for a
// guest packet that matches nothing, the home slot of the reply key that
// pickPort tries first); then translate, each packet with its two lines
// already in cache. Go has no prefetch
// instruction, but independent loads in a tight loop (results summed into a
// sink) let the CPU keep many misses in flight; in a loop that also parses,
// the reorder window holds only one or two packets.
func (e *Engine) translateBatch(from Side, pkts []Packet, now int64) {
	if !batchPrefetch || e.tab.n < prefetchMinFlows {
		e.translateSerial(from, pkts, now)
		return
	}
	sc := e.sc()
	t := &e.tab
	for i := range pkts {
		m := &sc[i]
		m.kind = e.parse(from, &pkts[i], m)
		m.hash = m.key.hash(&t.seed)
	}
	// Touch every packet's home slot: independent loads, many misses in
	// flight.
	var sink uint64
	for i := range pkts {
		sink += t.slots[sc[i].hash&t.mask]
	}
	// Find the first slot of each probe whose tag matches (usually the home
	// slot or the next, in the line just touched), touch the flow record it
	// names and keep that ref as the packet's candidate: the last pass
	// checks the key before trusting it.
	for i := range pkts {
		m := &sc[i]
		m.ref = 0
		if m.kind != kindFlow {
			continue
		}
		h := m.hash
		tag := h & 0xffffffff
		for j := h & t.mask; ; j = (j + 1) & t.mask {
			s := t.slots[j]
			if s == 0 {
				break
			}
			if s>>32 == tag {
				r := ref(s)
				sink += uint64(t.flow(r >> 1).deadline)
				m.ref = r
				break
			}
		}
		if m.ref == 0 && from == Guest && m.key.Proto != UDP {
			// Probably a new flow: pickPort will first try the guest's own
			// port, so touch the slot of that reply key too.
			k := &m.key
			r := flowKey{Src: k.Dst, Dst: e.ext, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto, Side: Uplink}
			sink += t.slots[r.hash(&t.seed)&t.mask]
		}
	}
	e.sink = sink
	gen := e.gen
	for i := range pkts {
		m := &sc[i]
		p := &pkts[i]
		switch m.kind {
		case kindFlow:
			if m.ref != 0 && (e.gen != gen || !t.flow(m.ref >> 1).key[m.ref&1].eq(&m.key)) {
				// Another key with the same tag, or a flow was freed during
				// this pass (the ref may be stale).
				m.ref = 0
			}
			e.translateFlow(from, p, m, now)
		case kindLaterFrag:
			e.translateFragment(from, p, now)
		case kindICMPError:
			e.translateICMPError(from, p, m, now)
		}
		if p.Verdict == Drop {
			e.stats.Drops[p.Reason]++
		}
	}
}

// batchPrefetch selects the three-pass batch loop; false runs one packet
// at a time (kept for benchmarks: BenchmarkTranslate compares them).
var batchPrefetch = true

// prefetchMinFlows is the table size below which the flow records and the
// index fit in a core's L2 (8192 flows take about 1.3 MB) and the extra
// passes cost more than they save.
const prefetchMinFlows = 8192

// translateSerial handles one packet after the other.
func (e *Engine) translateSerial(from Side, pkts []Packet, now int64) {
	var m meta
	for i := range pkts {
		p := &pkts[i]
		switch e.parse(from, p, &m) {
		case kindFlow:
			m.hash = m.key.hash(&e.tab.seed)
			m.ref = 0
			e.translateFlow(from, p, &m, now)
		case kindLaterFrag:
			e.translateFragment(from, p, now)
		case kindICMPError:
			e.translateICMPError(from, p, &m, now)
		}
		if p.Verdict == Drop {
			e.stats.Drops[p.Reason]++
		}
	}
}

// parse validates the headers of p, and for kindFlow fills m.key and m.l4.
// Nothing here trusts a length field beyond what it checked.
func (e *Engine) parse(from Side, p *Packet, m *meta) uint8 {
	p.Verdict, p.Reason = Drop, ReasonNone
	b := p.Buf
	if len(b) < 20 {
		p.Reason = ReasonMalformed
		return kindDrop
	}
	if b[0]>>4 != 4 {
		if b[0]>>4 == 6 {
			p.Reason = ReasonUnsupported
		} else {
			p.Reason = ReasonMalformed
		}
		return kindDrop
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl || (p.Flags&GSO == 0 && int(be16(b[2:])) < ihl) {
		p.Reason = ReasonMalformed
		return kindDrop
	}
	if from == Guest {
		if be32(b[12:])&e.pfxMask4 != e.pfx4 {
			p.Reason = ReasonAddress
			return kindDrop
		}
	} else if be32(b[16:]) != e.ext4 {
		p.Reason = ReasonAddress
		return kindDrop
	}
	ff := be16(b[6:])
	if ff&0x1fff != 0 {
		return kindLaterFrag
	}
	m.first = ff&0x2000 != 0
	m.l4 = uint16(ihl)
	k := &m.key
	k.Src = mapped(b[12:])
	k.Dst = mapped(b[16:])
	k.Side = from
	l := b[ihl:]
	switch b[9] {
	case 6:
		if len(l) < 20 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		k.Proto = TCP
		k.SrcPort, k.DstPort = be16(l), be16(l[2:])
	case 17:
		if len(l) < 8 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		k.Proto = UDP
		k.SrcPort, k.DstPort = be16(l), be16(l[2:])
	case 1:
		if len(l) < 8 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		k.Proto = ICMP
		switch l[0] {
		case 8: // echo request
			k.SrcPort, k.DstPort = be16(l[4:]), 0
			m.echo = true
		case 0: // echo reply
			k.SrcPort, k.DstPort = 0, be16(l[4:])
			m.echo = false
		case 3, 11, 12: // destination unreachable, time exceeded, parameter problem
			if m.first {
				p.Reason = ReasonICMPError // an error split in fragments: not worth it
				return kindDrop
			}
			return kindICMPError
		default:
			p.Reason = ReasonUnsupported
			return kindDrop
		}
	default:
		p.Reason = ReasonUnsupported
		return kindDrop
	}
	return kindFlow
}

// translateFlow finds or opens the flow of a kindFlow packet and rewrites it.
func (e *Engine) translateFlow(from Side, p *Packet, m *meta, now int64) {
	t := &e.tab
	r := m.ref
	if r == 0 {
		// Not found in its home slot, or stale: an earlier packet of this
		// batch may have opened or closed it.
		r = t.lookup(&m.key, m.hash)
	}
	if r != 0 {
		if f := t.flow(r >> 1); f.deadline <= now {
			e.reclaim(r >> 1)
			e.stats.Expired++
			r = 0
		}
	}
	if r == 0 {
		if r = e.open(from, p, m, now); r == 0 {
			return
		}
	}
	i, d := r>>1, r&1
	f := t.flow(i)
	b := p.Buf
	l := b[m.l4:]
	switch m.key.Proto {
	case TCP:
		fl := l[13]
		if fl&(tcpSYN|tcpFIN|tcpRST) == 0 && f.state == TCPEstablished {
			f.deadline = now + e.timeouts[TCPEstablished]
		} else {
			e.tcpTrack(i, f, d, fl, now)
		}
	case UDP:
		if d == 1 && f.flags&flagUDPReplied == 0 {
			f.flags |= flagUDPReplied
		}
		if f.flags&flagUDPReplied != 0 {
			f.deadline = now + e.udpStr
		} else {
			f.deadline = now + e.udp
		}
	default:
		f.deadline = now + e.icmp
	}
	e.rewrite(p, m, f, d)
	if m.first {
		e.recordFragment(b, f, d, now)
	}
	if f.key[d^1].Side == Guest {
		p.Verdict = ToGuest
	} else {
		p.Verdict = ToUplink
	}
	if from == Guest {
		e.stats.Outbound++
	} else {
		e.stats.Inbound++
	}
	if f.flags&flagHairpin != 0 {
		e.stats.Hairpin++
	}
}

// rewrite applies the translation of direction d of f to p: the packet gets
// the reverse of the other direction's key, and every checksum is adjusted
// by the flow's precomputed RFC 1624 deltas.
func (e *Engine) rewrite(p *Packet, m *meta, f *flow, d uint32) {
	nk := &f.key[d^1]
	dl := f.delta[d]
	b := p.Buf
	binary.BigEndian.PutUint32(b[12:], nk.Dst.v4())
	binary.BigEndian.PutUint32(b[16:], nk.Src.v4())
	put16(b[10:], adjust(be16(b[10:]), dl.addr))
	l := b[m.l4:]
	partial := p.Flags&(CsumPartial|GSO) != 0
	switch m.key.Proto {
	case TCP:
		put16(l, nk.DstPort)
		put16(l[2:], nk.SrcPort)
		if partial {
			put16(l[16:], add(be16(l[16:]), dl.addr))
		} else {
			put16(l[16:], adjust(be16(l[16:]), add(dl.addr, dl.port)))
		}
	case UDP:
		put16(l, nk.DstPort)
		put16(l[2:], nk.SrcPort)
		if partial {
			put16(l[6:], add(be16(l[6:]), dl.addr))
		} else if c := be16(l[6:]); c != 0 {
			// RFC 768: 0 means no checksum and stays 0; a computed 0 is sent
			// as 0xffff.
			c = adjust(c, add(dl.addr, dl.port))
			if c == 0 {
				c = 0xffff
			}
			put16(l[6:], c)
		}
	case ICMP:
		if m.echo {
			put16(l[4:], nk.DstPort)
		} else {
			put16(l[4:], nk.SrcPort)
		}
		if !partial {
			put16(l[2:], adjust(be16(l[2:]), dl.port))
		}
	}
}
