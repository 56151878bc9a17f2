package nat

import "sync/atomic"

// The lock-free path: packets of established flows (fast classes, table.go)
// are translated without the engine's mutex, so that queues translating at
// once do not contend. Only holders of the mutex change the table; a packet
// here reads the index and a flow record with atomic loads and commits with
// one CAS on the record's word (deadline << 3 | fast class):
//
//  1. load the word w: a live flow of a class that lets this packet through,
//     deadline after now;
//  2. compare the record's key of the packet's direction with the packet's,
//     and read the other direction's key and the checksum deltas;
//  3. CAS the word from w to the new deadline (or, when another packet
//     already moved it further, load it again and require w unchanged).
//
// A lock holder that changes what step 2 reads first changes the word:
// kill swaps it to 0 before a record is reclaimed, and a reused record gets
// a word with a later deadline than any it had before (a flow is reclaimed
// only at or after its deadline, and the new one's deadline is the clock
// plus a positive timeout; the engine's clock is monotonic). A lock holder
// that changes the state of a live flow stores a new word. So when step 3
// succeeds, everything step 2 read belongs to one live flow whose class and
// deadline were as in w, and the packet is translated as if the lock had
// been held from step 1 to step 3. When a step fails, the packet takes the
// locked path, which looks the flow up again.
//
// The lock holder writes index slots, the keys and deltas of records that
// are not live, and the word that makes a record live with release stores
// (storeRel, asm.go), not sequentially consistent ones: the argument above
// needs only that a packet which reads a key or delta stored after kill's
// CAS then also sees that CAS (or a later word) when it loads the word
// again, which release stores and acquire loads give.
//
// The index is read through the pointer the lock holder publishes: a stale
// one (the index grew), or a probe meeting a backward-shift deletion, can
// only make a packet miss (locked path) or find a candidate that step 2
// rejects.

// pass is the state of one Translate call across its batches.
type pass struct {
	ix      *index // the index as last loaded
	locked  bool   // the engine's mutex is held
	fast    uint64 // packets translated without the lock
	hairpin uint64 // of which hairpinned
}

// slow translates one parsed packet that fast did not (or could not): with
// the lock, taken on first need and held to the end of the Translate call.
func (e *Engine) slow(from Side, p *Packet, m *meta, now int64, ps *pass) {
	if !ps.locked {
		e.mu.Lock()
		ps.locked = true
	}
	switch m.kind {
	case kindFlow:
		m.key.setWords(m.w0, m.w1)
		e.translateFlow(from, p, m, now)
	case kindLaterFrag:
		e.translateFragment(from, p, now)
	case kindICMPError:
		e.translateICMPError(from, p, m, now)
	}
	if p.Verdict == Drop {
		e.stats.Drops[p.Reason]++
	}
	ps.ix = e.tab.ix.Load() // a new flow may have grown it
}

// The lock-free path moves a deadline only when it would move by more than
// 1/256 of the timeout, at most one wheel tick (about 1 s): a CAS costs
// several times the rest of a packet's work in cache (BenchmarkTranslateWallClock),
// and this way a busy flow's record is written about once per slack period
// instead of once per packet (as nf_flow_table's flow_offload_refresh does
// with one second). A flow thus expires between its timeout minus the slack
// and its timeout after its last packet.
func fastSlack(to int64) int64 { return min(to>>8, 1<<tickShift) }

// fastRetries bounds the CAS attempts of one packet on one flow (another
// queue refreshing the same flow at the same moment).
const fastRetries = 4

// fast translates p without the lock if it belongs to a live flow whose
// fast class allows it, and reports whether it did. m.ref, when not 0, is a
// candidate from the batch passes.
//
// This is the common case in straight line: the first slot whose tag
// matches names the flow, and its deadline need not move. Anything else
// (another key under the tag, a deadline to move by CAS, a word that
// changed while the record was read) goes to fastLoop, which starts over:
// nothing here has written anything by then.
func (e *Engine) fast(from Side, p *Packet, m *meta, now int64, ps *pass) bool {
	if m.first {
		return false // the fragment table needs the lock
	}
	r := m.ref
	if r == 0 {
		if m.noCandidate {
			return false
		}
		if r = firstTag(ps.ix, m.hash); r == 0 {
			return false
		}
	}
	f := e.tab.flow(r >> 1)
	d := r & 1
	w := f.word.Load()
	if f.kw[d][0].Load() != m.w0 || f.kw[d][1].Load() != m.w1 {
		m.ref = 0
		return e.fastLoop(from, p, m, now, ps)
	}
	dl := int64(w) >> 3
	if dl <= now {
		return false
	}
	c := w & fastClassMask
	if !admits(c, d, p, m) {
		return false
	}
	o0, o1 := f.kw[d^1][0].Load(), f.kw[d^1][1].Load()
	dw := f.delta.Load()
	if now+e.fastTO[c] > dl+e.fastSlack[c] || f.word.Load() != w {
		return e.fastLoop(from, p, m, now, ps)
	}
	ps.count(from, p, o1)
	da, dp := deltas(dw, d)
	rewrite(p, m, o0, o1, da, dp) // last: nothing lives across the call
	return true
}

// admits reports whether a flow of fast class c lets p, a packet of its
// direction d, through the lock-free path: what changes a flow's state (a
// TCP SYN, FIN or RST; the first UDP reply) needs the lock.
func admits(c uint64, d uint32, p *Packet, m *meta) bool {
	switch c {
	case fastTCP:
		return p.Buf[m.l4+13]&(tcpSYN|tcpFIN|tcpRST) == 0
	case fastUDPNew:
		return d == 0 // the first reply changes the class
	}
	return c != fastNone
}

// count counts a packet the lock-free path translates and sets its
// verdict: where the other direction's key (its second word o1) leads.
func (ps *pass) count(from Side, p *Packet, o1 uint64) {
	ps.fast++
	if Side(o1>>40) == Guest {
		p.Verdict = ToGuest
		if from == Guest {
			ps.hairpin++
		}
	} else {
		p.Verdict = ToUplink
	}
}

// firstTag returns the ref of the first slot of hash's probe in ix whose
// tag matches, or 0 when the probe meets an empty slot first.
func firstTag(ix *index, hash uint64) ref {
	tag := hash & 0xffffffff
	for j := hash & ix.mask; ; j = (j + 1) & ix.mask {
		s := atomic.LoadUint64(&ix.slots[j])
		if s == 0 {
			return 0
		}
		if s>>32 == tag {
			return ref(s)
		}
	}
}

// fastLoop is fast in full: it probes on past keys that share a tag,
// moves the deadline by CAS when it must and retries when the word
// changes under it.
func (e *Engine) fastLoop(from Side, p *Packet, m *meta, now int64, ps *pass) bool {
	t := &e.tab
	ix := ps.ix
	k0, k1 := m.w0, m.w1
	h := m.hash
	tag := h & 0xffffffff
	j := h & ix.mask
	r := m.ref
	for {
		if r == 0 {
			for {
				s := atomic.LoadUint64(&ix.slots[j])
				if s == 0 {
					return false
				}
				j = (j + 1) & ix.mask
				if s>>32 == tag {
					r = ref(s)
					break
				}
			}
		}
		f := t.flow(r >> 1)
		d := r & 1
		matched := false
		for try := 0; try < fastRetries; try++ {
			w := f.word.Load()
			if f.kw[d][0].Load() != k0 || f.kw[d][1].Load() != k1 {
				break // another key with this tag: probe on
			}
			matched = true
			dl := int64(w) >> 3
			if dl <= now {
				return false
			}
			c := w & fastClassMask
			if !admits(c, d, p, m) {
				return false
			}
			o0, o1 := f.kw[d^1][0].Load(), f.kw[d^1][1].Load()
			dw := f.delta.Load()
			if nd := now + e.fastTO[c]; nd > dl+e.fastSlack[c] {
				if !f.word.CompareAndSwap(w, uint64(nd)<<3|w&fastClassMask) {
					continue
				}
			} else if f.word.Load() != w {
				continue
			}
			ps.count(from, p, o1)
			da, dp := deltas(dw, d)
			rewrite(p, m, o0, o1, da, dp)
			return true
		}
		if matched {
			return false // the flow changed under us: let the lock decide
		}
		// Another key with the same tag (or the batch's candidate went
		// stale): probe on; a candidate is retried from the home slot.
		m.ref = 0
		r = 0
	}
}
