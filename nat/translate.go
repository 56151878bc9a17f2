package nat

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/arcnet/vhost-arcnet/internal/prefetch"
)

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
	w0    uint64 // key.words()
	w1    uint64
	hash  uint64 // hashWords(w0, w1): the key's (open inserts the flow with it)
	ref   ref
	l4    uint16 // offset of the transport header
	kind  uint8
	first bool // first fragment of a fragmented datagram
	echo  bool // ICMP echo request (the identifier is the source port)
	// noCandidate: translateBatch probed the index for the key and found
	// no slot with its tag (fast then leaves the packet to the lock).
	noCandidate bool
}

// batchScratch is the scratch of one pass of translateBatch.
type batchScratch [maxBatch]meta

func be16(b []byte) uint16     { return binary.BigEndian.Uint16(b) }
func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }

// translateBatch handles at most maxBatch packets in passes so that the
// cache misses of different packets overlap: parse and hash every packet;
// prefetch every packet's home index slot; walk every packet's probe to the
// first slot with its tag and prefetch the flow record it names (or, for a
// guest packet that matches nothing, the home slot of the reply key that
// pickPort tries first); then translate, each packet with its two lines
// already in cache. The prefetches are one assembly loop per pass
// (internal/prefetch): loads in a Go loop kept only about a dozen packets'
// misses in flight, as many as the reorder buffer holds (1M flows in
// BenchmarkTranslate). Where there is no assembly, the passes load
// instead.
//
// Nothing here takes the lock: the slots and records are read atomically,
// and the refs found are only candidates that the last pass checks
// (packet, fast.go).
func (e *Engine) translateBatch(from Side, pkts []Packet, now int64, ps *pass) {
	t := &e.tab
	if !batchPrefetch || t.live.Load() < prefetchMinFlows {
		e.translateSerial(from, pkts, now, ps)
		return
	}
	var sc batchScratch
	var addrs [2 * maxBatch]uintptr
	ix := t.ix.Load()
	for i := range pkts {
		m := &sc[i]
		m.kind = e.parse(from, &pkts[i], m)
		m.hash = hashWords(m.w0, m.w1, &t.seed)
		addrs[i] = uintptr(unsafe.Pointer(&ix.slots[m.hash&ix.mask]))
	}
	// Every packet's home slot: all misses in flight at once.
	var sink uint64
	if prefetch.Available {
		prefetch.Lines(addrs[:len(pkts)])
	} else {
		for i := range pkts {
			sink += atomic.LoadUint64(&ix.slots[sc[i].hash&ix.mask])
		}
	}
	// Find the first slot of each probe whose tag matches (usually the home
	// slot or the next, in the line just fetched), fetch the flow record it
	// names and keep that ref as the packet's candidate.
	n := 0
	for i := range pkts {
		m := &sc[i]
		m.ref = 0
		if m.kind != kindFlow {
			continue
		}
		if m.ref = firstTag(ix, m.hash); m.ref != 0 {
			f := t.flow(m.ref >> 1)
			if prefetch.Available {
				addrs[n] = uintptr(unsafe.Pointer(f))
				n++
			} else {
				sink += f.word.Load()
			}
			continue
		}
		// No candidate: fast leaves the packet to the locked path, whose
		// lookup also finds a flow an earlier packet of the batch opened
		// since (or one this lock-free probe missed).
		m.noCandidate = true
		if from == Guest && Proto(m.w1>>32) != UDP {
			// Probably a new flow: pickPort will first try the guest's own
			// port, so fetch the slot of that reply key too.
			r0, r1 := replyWords(m.w0&0xffffffff|uint64(e.ext)<<32, m.w1, Uplink)
			sl := &ix.slots[hashWords(r0, r1, &t.seed)&ix.mask]
			if prefetch.Available {
				addrs[n] = uintptr(unsafe.Pointer(sl))
				addrs[n+1] = addrs[n] + 64
				n += 2
			} else {
				sink += atomic.LoadUint64(sl)
			}
		}
	}
	prefetch.Lines(addrs[:n])
	if sink == 0x5eed {
		e.sinkHit.Add(1)
	}
	for i := range pkts {
		if sc[i].kind != kindFlow || !e.fast(from, &pkts[i], &sc[i], now, ps) {
			e.slow(from, &pkts[i], &sc[i], now, ps)
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
func (e *Engine) translateSerial(from Side, pkts []Packet, now int64, ps *pass) {
	var m meta
	for i := range pkts {
		p := &pkts[i]
		m.kind = e.parse(from, p, &m)
		m.ref = 0
		if m.kind == kindFlow {
			m.hash = hashWords(m.w0, m.w1, &e.tab.seed)
			if e.fast(from, p, &m, now, ps) {
				continue
			}
		}
		e.slow(from, p, &m, now, ps)
	}
}

// parse validates the headers of p, and for kindFlow sets m.w0 and m.w1 (the
// packet's flowKey as words: the slow path builds m.key from them) and m.l4.
// Nothing here trusts a length field beyond what it checked.
func (e *Engine) parse(from Side, p *Packet, m *meta) uint8 {
	p.Verdict, p.Reason = Drop, ReasonNone
	b := p.Buf
	if len(b) < 20 {
		p.Reason = ReasonMalformed
		return kindDrop
	}
	h := (*[20]byte)(b) // the fixed header: one bounds check for its fields
	if h[0]>>4 != 4 {
		if h[0]>>4 == 6 {
			p.Reason = ReasonUnsupported
		} else {
			p.Reason = ReasonMalformed
		}
		return kindDrop
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl || (p.Flags&GSO == 0 && int(binary.BigEndian.Uint16(h[2:])) < ihl) {
		p.Reason = ReasonMalformed
		return kindDrop
	}
	if from == Guest {
		if binary.BigEndian.Uint32(h[12:])&e.pfxMask4 != e.pfx4 {
			p.Reason = ReasonAddress
			return kindDrop
		}
	} else if binary.BigEndian.Uint32(h[16:]) != e.ext4 {
		p.Reason = ReasonAddress
		return kindDrop
	}
	ff := binary.BigEndian.Uint16(h[6:])
	if ff&0x1fff != 0 {
		return kindLaterFrag
	}
	m.first = ff&0x2000 != 0
	m.l4 = uint16(ihl)
	// The key's words (flowKey.words): source and destination address are
	// the 8 bytes at 12 as one big-endian integer; the ports are the 4
	// bytes at the transport header's start, source first (word1).
	m.w0 = binary.BigEndian.Uint64(h[12:])
	l := b[ihl:]
	switch h[9] {
	case 6:
		if len(l) < 20 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		m.w1 = word1(from, TCP, 0, 0) | portsWord(l)
	case 17:
		if len(l) < 8 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		m.w1 = word1(from, UDP, 0, 0) | portsWord(l)
	case 1:
		if len(l) < 8 {
			p.Reason = ReasonMalformed
			return kindDrop
		}
		switch l[0] {
		case 8: // echo request: the identifier is the source port
			m.w1 = word1(from, ICMP, be16(l[4:]), 0)
			m.echo = true
		case 0: // echo reply: the identifier is the destination port
			m.w1 = word1(from, ICMP, 0, be16(l[4:]))
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

// portsWord is word1's port half for a transport header starting with
// the source and destination ports (TCP, UDP): source in the low 16 bits.
func portsWord(l []byte) uint64 {
	return uint64(bits.RotateLeft32(binary.BigEndian.Uint32(l), 16))
}

// translateFlow finds or opens the flow of a kindFlow packet and rewrites it,
// holding the lock.
func (e *Engine) translateFlow(from Side, p *Packet, m *meta, now int64) {
	t := &e.tab
	r := t.lookupWords(m.w0, m.w1, m.hash)
	if r != 0 {
		if e.kill(t.flow(r>>1), now) {
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
			e.extend(f, now+e.timeouts[TCPEstablished])
		} else {
			e.tcpTrack(i, f, d, fl, now)
		}
	case UDP:
		switch {
		case d == 1 && f.flags&flagUDPReplied == 0:
			f.flags |= flagUDPReplied
			e.setDeadline(f, now+e.udpStr)
		case f.flags&flagUDPReplied != 0:
			e.extend(f, now+e.udpStr)
		default:
			e.extend(f, now+e.udp)
		}
	default:
		e.extend(f, now+e.icmp)
	}
	o0, o1 := f.kw[d^1][0].Load(), f.kw[d^1][1].Load()
	da, dp := deltas(f.delta.Load(), d)
	rewrite(p, m, o0, o1, da, dp)
	if m.first {
		e.recordFragment(b, f, d, now)
	}
	if Side(o1>>40) == Guest {
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

// rewrite applies a translation to p: the packet gets the reverse of the
// key of the flow's other direction (as flowKey.words: o0, o1), and every
// checksum is adjusted by the direction's precomputed RFC 1624 deltas (da
// for the addresses, dp for the ports).
func rewrite(p *Packet, m *meta, o0, o1 uint64, da, dp uint16) {
	// Fixed-size views of the headers (parse checked their lengths): one
	// bounds check each instead of one per field.
	ip := (*[20]byte)(p.Buf)
	// The fields of keyOf(o0, o1), without building the key: the new
	// destination and source addresses are o0's halves swapped, one store.
	sport, dport := uint16(o1), uint16(o1>>16)
	binary.BigEndian.PutUint64(ip[12:], bits.RotateLeft64(o0, 32))
	put16(ip[10:], adjust(be16(ip[10:]), da))
	partial := p.Flags&(CsumPartial|GSO) != 0
	switch Proto(m.w1 >> 32) {
	case TCP:
		l := (*[18]byte)(p.Buf[m.l4:])
		binary.BigEndian.PutUint32(l[:], uint32(dport)<<16|uint32(sport))
		if partial {
			put16(l[16:], add(be16(l[16:]), da))
		} else {
			put16(l[16:], adjust(be16(l[16:]), add(da, dp)))
		}
	case UDP:
		l := (*[8]byte)(p.Buf[m.l4:])
		binary.BigEndian.PutUint32(l[:], uint32(dport)<<16|uint32(sport))
		if partial {
			put16(l[6:], add(be16(l[6:]), da))
		} else if c := be16(l[6:]); c != 0 {
			// RFC 768: 0 means no checksum and stays 0; a computed 0 is sent
			// as 0xffff.
			c = adjust(c, add(da, dp))
			if c == 0 {
				c = 0xffff
			}
			put16(l[6:], c)
		}
	case ICMP:
		l := (*[8]byte)(p.Buf[m.l4:])
		if m.echo {
			put16(l[4:], dport)
		} else {
			put16(l[4:], sport)
		}
		if !partial {
			put16(l[2:], adjust(be16(l[2:]), dp))
		}
	}
}
