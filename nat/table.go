package nat

// The flow table: a slab of flow records in fixed-size chunks (stable
// addresses, no copying on growth), an open-addressing index from the hash of
// a flowKey to a flow direction, and a small direct-mapped cache in front of the
// index.
//
// Why not a Go map: a map[flowKey]ref stores each key a second time and
// cannot be probed ahead in a batch. The index here holds 8-byte slots, half
// of them empty at most, and BenchmarkIndexVsMap compares the two.
//
// State per flow: the 64-byte record, 8 bytes of flowCold and two index
// slots (16 to 32 bytes with the index between 3/8 and 3/4 full; New sizes
// it for min(MaxFlows, 1M) flows, so a table below that holds more per flow
// until it fills): BenchmarkNewFlows reports 104 B/flow on a table of 1M
// flows, the index included. Both are advised onto huge pages on Linux
// (adviseHuge); the records of a table of at least slabChunks chunks' flows
// come in slabs of slabChunks chunks.

import (
	"sync/atomic"
	"unsafe"

	"github.com/arcnet/vhost-arcnet/internal/prefetch"
)

const (
	chunkShift = 10
	chunkSize  = 1 << chunkShift
)

// Flow flag bits.
const (
	flagUDPReplied = 1 << iota // UDP: traffic seen in both directions
	flagHairpin                // guest to guest through the external address
	flagDNAT                   // opened by a packet from the uplink (port forward or UDP mapping)
	flagFinOrig                // TCP: FIN seen in direction 0
	flagFinReply               // TCP: FIN seen in direction 1
)

// flow is one tracked connection: 64 bytes, one cache line, so that a
// packet costs two cache misses (index slot, flow record) and a batch can
// overlap them (translateBatch). Both keys are here so that the rewrite of
// either direction reads nothing else; what only opening and reclaiming a
// flow need is in flowCold.
//
// Packets of established flows read a record without the engine's lock
// (fast.go), so what they read is atomic: the keys, the checksum deltas and
// word, which holds the deadline and the fast class (what a packet may do
// without the lock). Everything else is the lock holder's.
type flow struct {
	kw    [2][2]atomic.Uint64 // [d]: key of direction d as flowKey.words; [0] as the first packet arrived, [1] the reply as it will arrive
	word  atomic.Uint64       // deadline (engine ns) << 3 | fast class; 0: dead
	delta atomic.Uint64       // checksum deltas (csumDeltaWords): direction d's address delta at bit 32*d, port delta at 32*d+16
	prev  uint32              // timing wheel links (0 = none); next is also the free list
	next  uint32
	slot  uint16   // timing wheel slot
	state TCPState // TCP only
	flags uint8
}

// Fast classes: which packets of a flow the lock-free path may translate,
// and the idle timeout they set. A state change (SYN, FIN, RST, the first
// UDP reply, a first fragment) needs the lock.
const (
	fastNone      = iota // the locked path only (also: dead)
	fastTCP              // established TCP, packets without SYN, FIN or RST
	fastUDPStream        // UDP that has seen replies: both directions
	fastUDPNew           // UDP without a reply yet: direction 0 only
	fastICMP             // ICMP echo
	fastClassMask = 7
)

// key returns the key of direction d.
func (f *flow) key(d uint32) flowKey { return keyOf(f.kw[d][0].Load(), f.kw[d][1].Load()) }

// proto returns the flow's protocol (that of the last flow, in a free record).
func (f *flow) proto() Proto { return Proto(f.kw[0][1].Load() >> 32) }

// setKeys sets both keys and the checksum deltas of a record that no lookup
// can return yet (or any more): the caller holds the lock and the record is
// dead (word 0), so that a packet that raced to it fails its CAS. The stores
// are releases (storeRel): the word that makes the record live again is
// stored after them.
func (f *flow) setKeys(k0, k1 *flowKey) {
	a0, b0 := k0.words()
	a1, b1 := k1.words()
	f.setKeysWords(a0, b0, a1, b1)
}

// setKeysWords is setKeys for keys as words. Direction d is rewritten to
// the reverse of the other direction's key (rewrite), whose 16-bit words
// are those of that key in another order: csumDeltaWords takes the key.
func (f *flow) setKeysWords(a0, b0, a1, b1 uint64) {
	storeRel4((*uint64)(unsafe.Pointer(&f.kw)), a0, b0, a1, b1)
	da0, dp0 := csumDeltaWords(a0, b0, a1, b1)
	da1, dp1 := csumDeltaWords(a1, b1, a0, b0)
	storeRel((*uint64)(unsafe.Pointer(&f.delta)), uint64(da0)|uint64(dp0)<<16|uint64(da1)<<32|uint64(dp1)<<48)
}

// deltas returns the address and port checksum deltas of direction d.
func deltas(dw uint64, d uint32) (addr, port uint16) {
	dw >>= 32 * d
	return uint16(dw), uint16(dw >> 16)
}

// deadline returns the flow's deadline in engine nanoseconds.
func (f *flow) deadline() int64 { return int64(f.word.Load() >> 3) }

// flowCold is the part of a flow that packets of an open flow never read.
type flowCold struct {
	owner   uint32 // index of the guest whose quota it uses
	mapping uint32 // UDP mapping index (0 = none)
}

// ref names a flow direction: flow index << 1 | direction. 0 is no flow
// (flow index 0 is never used).
type ref = uint32

// index is the open-addressing index. The lock holder changes it in place
// (atomic stores) and replaces it when it grows; lock-free readers load it
// once per batch and may see a stale one, which only makes them miss (the
// locked path then looks again) or find a candidate that the record's keys
// and CAS reject.
type index struct {
	slots []uint64 // hash low 32 bits << 32 | ref; 0 = empty
	mask  uint64
}

// table holds the flows and the index.
type table struct {
	dir  []atomic.Pointer[[chunkSize]flow] // the flow records, by chunk; fixed length, filled as needed
	cold [][]flowCold
	slab [][chunkSize]flow // chunks allocated but not used yet
	free uint32            // head of the free list
	n    int               // live flows
	live atomic.Int64
	// limit is MaxFlows; chunks counts the chunks allocated.
	limit  int
	chunks int

	slots []uint64 // the current index's, for the lock holder
	mask  uint64
	used  int
	ix    atomic.Pointer[index] // the current index, for lock-free readers

	cache     []uint64 // direct-mapped: hash high 32 bits << 32 | ref
	cacheMask uint64

	seed    [6]uint64
	sinkHit int // keeps loads made only to bring lines into the cache
}

func (t *table) init(limit, cache int, seed [6]uint64) {
	t.limit = limit
	t.seed = seed
	t.dir = make([]atomic.Pointer[[chunkSize]flow], limit>>chunkShift+1)
	t.setIndex(newSlots(indexSlots(min(limit, preallocFlows))))
	// Flow 0 is reserved: ref 0 means "none".
	t.addChunk(1)
	if cache > 0 {
		n := 1
		for n < cache {
			n <<= 1
		}
		t.cache = make([]uint64, n)
		t.cacheMask = uint64(n - 1)
	}
}

// preallocFlows is the number of flows the index is sized for at init (at
// most MaxFlows): growing it rehashes every entry at random addresses, which
// cost new flows about half their time when a table filled to 1M flows
// (BenchmarkNewFlows). The slots are reserved, not touched: the kernel maps
// their pages as flows land on them. Beyond it the index grows as needed.
const preallocFlows = 1 << 20

// indexSlots returns the index size for n flows (2n keys) at most 3/4 full.
func indexSlots(n int) int {
	s := 1024
	for s*3 < 2*n*4 {
		s <<= 1
	}
	return s
}

// addChunk allocates the next chunk of records and puts its records from
// first on onto the free list.
func (t *table) addChunk(first int) {
	var c *[chunkSize]flow
	if k := min(slabChunks, len(t.dir)-t.chunks); len(t.slab) == 0 && t.limit >= slabChunks<<chunkShift && k > 1 {
		// the next k chunks in one allocation, most of it on huge pages
		t.slab = make([][chunkSize]flow, k)
		adviseHuge(unsafe.Pointer(&t.slab[0]), unsafe.Sizeof(t.slab[0])*uintptr(k))
	}
	if len(t.slab) > 0 {
		c = &t.slab[0]
		t.slab = t.slab[1:]
	} else {
		c = new([chunkSize]flow)
	}
	base := uint32(t.chunks) << chunkShift
	for i := chunkSize - 1; i >= first; i-- {
		c[i].next = t.free
		t.free = base + uint32(i)
	}
	t.cold = append(t.cold, make([]flowCold, chunkSize))
	t.dir[t.chunks].Store(c)
	t.chunks++
}

// newSlots returns a zeroed index of n slots, advised onto huge pages
// (adviseHuge): lookups reach it at random.
func newSlots(n int) []uint64 {
	s := make([]uint64, n)
	adviseHuge(unsafe.Pointer(&s[0]), uintptr(n)*8)
	return s
}

// slabChunks is the number of chunks a table of at least that many chunks'
// flows allocates at once (fewer for the last ones MaxFlows allows): 4 MiB,
// so that at least 2 MiB of it are one aligned huge page (adviseHuge). A
// table holds up to slabChunks-1 chunks it does not use yet (under 4 MiB,
// untouched until used).
const slabChunks = 64

func (t *table) setIndex(s []uint64) {
	t.slots = s
	t.mask = uint64(len(s) - 1)
	t.ix.Store(&index{slots: s, mask: t.mask})
}

// flow returns record i. The address is computed from the chunk's without
// indexing through the chunk pointer, which costs a nil check: a load of
// the chunk's first line, at 1M flows another page per packet for the TLB.
func (t *table) flow(i uint32) *flow {
	c := unsafe.Pointer(t.dir[i>>chunkShift].Load())
	return (*flow)(unsafe.Add(c, uintptr(i&(chunkSize-1))*unsafe.Sizeof(flow{})))
}

func (t *table) coldOf(i uint32) *flowCold { return &t.cold[i>>chunkShift][i&(chunkSize-1)] }

// lookup returns the ref of the flow direction with key k (hash h), or 0.
func (t *table) lookup(k *flowKey, h uint64) ref {
	w0, w1 := k.words()
	return t.lookupWords(w0, w1, h)
}

// lookupWords is lookup for a key as words.
func (t *table) lookupWords(w0, w1, h uint64) ref {
	if t.cache != nil {
		c := t.cache[h&t.cacheMask]
		if c>>32 == h>>32 {
			if r := ref(c); r != 0 && keyIsWords(t.flow(r>>1), r&1, w0, w1) {
				return r
			}
		}
	}
	r := t.lookupIndexWords(w0, w1, h)
	if r != 0 && t.cache != nil {
		t.cache[h&t.cacheMask] = h>>32<<32 | uint64(r)
	}
	return r
}

// lookupIndexWords is lookup (of the key with words w0, w1) without the
// cache in front of the index: for a key that is most likely not there
// (pickPort's check that a reply key is free), where the cache's line is
// one more miss that can only say "maybe".
func (t *table) lookupIndexWords(w0, w1, h uint64) ref {
	tag := h & 0xffffffff
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := t.slots[i]
		if s == 0 {
			return 0
		}
		if s>>32 == tag {
			if r := ref(s); keyIsWords(t.flow(r>>1), r&1, w0, w1) {
				return r
			}
		}
	}
}

// alloc takes a flow record from the free list, growing the slab by a chunk
// when needed. It returns 0 when MaxFlows flows are live.
func (t *table) alloc() uint32 {
	if t.n >= t.limit {
		return 0
	}
	if t.free == 0 {
		t.addChunk(0)
	}
	i := t.free
	f := t.flow(i)
	t.free = f.next
	f.next = 0
	t.n++
	storeRel((*uint64)(unsafe.Pointer(&t.live)), uint64(t.n))
	return i
}

// release returns a flow record (already dead: word 0, and removed from the
// index and the cache) to the free list. Its keys stay: a lock-free reader
// that still finds the record rejects it by its word, and a free record is
// one whose word is 0 (a live flow's deadline is positive). Zeroing them
// would cost five more locked stores per flow, each a barrier that keeps
// the next flow's cache misses from overlapping with this one's.
func (t *table) release(i uint32) {
	f := t.flow(i)
	f.prev, f.slot, f.state, f.flags = 0, 0, 0, 0
	f.next = t.free
	*t.coldOf(i) = flowCold{}
	t.free = i
	t.n--
	storeRel((*uint64)(unsafe.Pointer(&t.live)), uint64(t.n))
}

// insert adds both directions of flow i to the index.
func (t *table) insert(i uint32) {
	f := t.flow(i)
	t.insertHashed(i, t.hashOf(f, 0), t.hashOf(f, 1))
}

// insertHashed is insert for a caller that has the hashes of both keys.
func (t *table) insertHashed(i uint32, h0, h1 uint64) {
	if (t.used+2)*4 > len(t.slots)*3 {
		t.grow()
	}
	t.put(h0, i<<1)
	t.put(h1, i<<1|1)
}

func (t *table) put(h uint64, r ref) {
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		if t.slots[j] == 0 {
			storeRel(&t.slots[j], h<<32|uint64(r))
			t.used++
			return
		}
	}
}

// grow doubles the index. It costs O(flows) once per doubling; the slots
// keep the low 32 bits of the hash, so no key is rehashed. The new index is
// filled before lock-free readers see it.
func (t *table) grow() {
	old := t.slots
	t.slots = newSlots(2 * len(old))
	t.mask = uint64(len(t.slots) - 1)
	t.used = 0
	for _, s := range old {
		if s != 0 {
			t.put(s>>32, ref(s))
		}
	}
	t.setIndex(t.slots)
}

// hashOf returns the hash of direction d's key of f.
func (t *table) hashOf(f *flow, d uint32) uint64 {
	return hashWords(f.kw[d][0].Load(), f.kw[d][1].Load(), &t.seed)
}

// prefetchSlots starts bringing the home index slots of both directions of
// f into the cache, for a remove that follows, and returns the hashes of
// its keys.
func (t *table) prefetchSlots(f *flow) (h0, h1 uint64) {
	h0, h1 = t.hashOf(f, 0), t.hashOf(f, 1)
	s0, s1 := &t.slots[h0&t.mask], &t.slots[h1&t.mask]
	a0, a1 := uintptr(unsafe.Pointer(s0)), uintptr(unsafe.Pointer(s1))
	// and the line after each, where the backward shift usually reads on
	// (a prefetch past the end of the index is harmless)
	a := [4]uintptr{a0, a1, a0 + 64, a1 + 64}
	if prefetch.Available {
		prefetch.Lines(a[:])
	} else if *s0+*s1 == 0x5eed {
		t.sinkHit++
	}
	return h0, h1
}

// remove deletes both directions of flow i, whose keys hash to h0 and h1
// (hashOf), from the index and the cache, by backward-shift deletion (no
// tombstones, so probe chains stay short). A lock-free reader probing
// meanwhile may miss an entry being moved; it then takes the locked path.
//
// Both home slots are loaded first, so that their cache misses overlap. The
// index stores are releases (storeRel): a reader sees them in order.
func (t *table) remove(i uint32, h0, h1 uint64) {
	hs := [2]uint64{h0, h1}
	if t.slots[hs[0]&t.mask]+t.slots[hs[1]&t.mask] == 0x5eed {
		t.sinkHit++
	}
	for d := uint32(0); d < 2; d++ {
		h := hs[d]
		if t.cache != nil {
			c := &t.cache[h&t.cacheMask]
			if ref(*c) == i<<1|d {
				*c = 0
			}
		}
		r := uint64(i<<1 | d)
		j := h & t.mask
		for t.slots[j]&0xffffffff != r {
			if t.slots[j] == 0 {
				return // not indexed (cannot happen)
			}
			j = (j + 1) & t.mask
		}
		storeRel(&t.slots[j], 0)
		t.used--
		// Shift later entries of the run back over the hole when their home
		// slot is not in (hole, k].
		hole := j
		for k := (j + 1) & t.mask; t.slots[k] != 0; k = (k + 1) & t.mask {
			home := (t.slots[k] >> 32) & t.mask
			if (k-home)&t.mask >= (k-hole)&t.mask {
				storeRel(&t.slots[hole], t.slots[k])
				storeRel(&t.slots[k], 0)
				hole = k
			}
		}
	}
}
