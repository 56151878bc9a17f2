package nat

// IPv4 fragments (RFC 791 §3.2). Only the first fragment carries the
// transport header, so it is translated like any packet of its flow and
// leaves a note in a fixed-size, direct-mapped table keyed by (source,
// destination, protocol, identification, side). Later fragments of the same
// datagram find the note and get the same address rewrite; their transport
// bytes are payload and need no change (the first fragment's transport
// checksum already covers the whole datagram). A later fragment that arrives
// before its first fragment is dropped (no reassembly, no buffering): memory
// stays bounded by Config.MaxFragments entries, and a colliding datagram
// evicts the older note.

type fragEntry struct {
	src, dst uint32 // before translation
	id       uint16
	proto    uint8
	side     Side
	valid    bool
	toGuest  bool
	nsrc     uint32 // after translation
	ndst     uint32
	delta    uint16 // IP header checksum delta
	deadline int64
}

func (e *Engine) fragSlot(src, dst uint32, id uint16, proto uint8, side Side) *fragEntry {
	h := uint64(src)<<32 | uint64(dst)
	h = mum(h^e.tab.seed[0], uint64(id)|uint64(proto)<<16|uint64(side)<<24^e.tab.seed[1])
	return &e.frags[h&e.fragMask]
}

// recordFragment remembers the translation of a first fragment b (already
// rewritten) of flow f, direction d.
func (e *Engine) recordFragment(b []byte, f *flow, d uint32, now int64) {
	k := f.key(d)
	src, dst := k.Src.v4(), k.Dst.v4()
	id := be16(b[4:])
	da, _ := deltas(f.delta.Load(), d)
	s := e.fragSlot(src, dst, id, b[9], k.Side)
	*s = fragEntry{src: src, dst: dst, id: id, proto: b[9], side: k.Side, valid: true,
		toGuest: f.key(d^1).Side == Guest, nsrc: be32(b[12:]), ndst: be32(b[16:]),
		delta: da, deadline: now + e.fragTO}
}

// translateFragment rewrites a non-first fragment after its first fragment.
func (e *Engine) translateFragment(from Side, p *Packet, now int64) {
	b := p.Buf
	src, dst, id := be32(b[12:]), be32(b[16:]), be16(b[4:])
	s := e.fragSlot(src, dst, id, b[9], from)
	if !s.valid || s.src != src || s.dst != dst || s.id != id || s.proto != b[9] || s.side != from || s.deadline <= now {
		p.Reason = ReasonFragment
		return
	}
	b[12], b[13], b[14], b[15] = byte(s.nsrc>>24), byte(s.nsrc>>16), byte(s.nsrc>>8), byte(s.nsrc)
	b[16], b[17], b[18], b[19] = byte(s.ndst>>24), byte(s.ndst>>16), byte(s.ndst>>8), byte(s.ndst)
	put16(b[10:], adjust(be16(b[10:]), s.delta))
	if s.toGuest {
		p.Verdict = ToGuest
	} else {
		p.Verdict = ToUplink
	}
	e.stats.Fragments++
}
