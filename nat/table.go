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
// slots (16 to 32 bytes with the index between 3/8 and 3/4 full):
// BenchmarkNewFlows reports 104 B/flow on a table of 1M flows.

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
type flow struct {
	key      [2]flowKey                     // [0] as the first packet arrived, [1] the reply as it will arrive
	deadline int64                          // engine nanoseconds; the flow is dead at or after it
	delta    [2]struct{ addr, port uint16 } // checksum deltas per direction (csumDelta)
	prev     uint32                         // timing wheel links (0 = none); next is also the free list
	next     uint32
	slot     uint16   // timing wheel slot
	state    TCPState // TCP only
	flags    uint8
}

// flowCold is the part of a flow that packets of an open flow never read.
type flowCold struct {
	owner   uint32 // index of the guest whose quota it uses
	mapping uint32 // UDP mapping index (0 = none)
}

// ref names a flow direction: flow index << 1 | direction. 0 is no flow
// (flow index 0 is never used).
type ref = uint32

// table holds the flows and the index.
type table struct {
	chunks [][]flow
	cold   [][]flowCold
	free   uint32 // head of the free list
	n      int    // live flows
	limit  int    // MaxFlows

	slots []uint64 // index: hash low 32 bits << 32 | ref; 0 = empty
	mask  uint64
	used  int

	cache     []uint64 // direct-mapped: hash high 32 bits << 32 | ref
	cacheMask uint64

	seed [6]uint64
}

func (t *table) init(limit, cache int, seed [6]uint64) {
	t.limit = limit
	t.seed = seed
	t.slots = make([]uint64, 1024)
	t.mask = 1023
	t.chunks = append(t.chunks, make([]flow, chunkSize))
	t.cold = append(t.cold, make([]flowCold, chunkSize))
	// Flow 0 is reserved: ref 0 means "none".
	for i := chunkSize - 1; i >= 1; i-- {
		t.chunks[0][i].next = t.free
		t.free = uint32(i)
	}
	if cache > 0 {
		n := 1
		for n < cache {
			n <<= 1
		}
		t.cache = make([]uint64, n)
		t.cacheMask = uint64(n - 1)
	}
}

func (t *table) flow(i uint32) *flow { return &t.chunks[i>>chunkShift][i&(chunkSize-1)] }

func (t *table) coldOf(i uint32) *flowCold { return &t.cold[i>>chunkShift][i&(chunkSize-1)] }

// lookup returns the ref of the flow direction with key k (hash h), or 0.
func (t *table) lookup(k *flowKey, h uint64) ref {
	if t.cache != nil {
		c := t.cache[h&t.cacheMask]
		if c>>32 == h>>32 {
			if r := ref(c); r != 0 && t.flow(r >> 1).key[r&1].eq(k) {
				return r
			}
		}
	}
	tag := h & 0xffffffff
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := t.slots[i]
		if s == 0 {
			return 0
		}
		if s>>32 == tag {
			if r := ref(s); t.flow(r >> 1).key[r&1].eq(k) {
				if t.cache != nil {
					t.cache[h&t.cacheMask] = h>>32<<32 | uint64(r)
				}
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
		base := uint32(len(t.chunks)) << chunkShift
		t.chunks = append(t.chunks, make([]flow, chunkSize))
		t.cold = append(t.cold, make([]flowCold, chunkSize))
		for i := chunkSize - 1; i >= 0; i-- {
			t.chunks[len(t.chunks)-1][i].next = t.free
			t.free = base + uint32(i)
		}
	}
	i := t.free
	f := t.flow(i)
	t.free = f.next
	f.next = 0
	t.n++
	return i
}

// release returns a flow record (already removed from the index) to the free
// list. Its keys are zeroed so that stale cache entries never match: no
// packet has protocol 0.
func (t *table) release(i uint32) {
	f := t.flow(i)
	*f = flow{next: t.free}
	*t.coldOf(i) = flowCold{}
	t.free = i
	t.n--
}

// insert adds both directions of flow i to the index.
func (t *table) insert(i uint32) {
	if (t.used+2)*4 > len(t.slots)*3 {
		t.grow()
	}
	f := t.flow(i)
	for d := uint32(0); d < 2; d++ {
		t.put(f.key[d].hash(&t.seed), i<<1|d)
	}
}

func (t *table) put(h uint64, r ref) {
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		if t.slots[j] == 0 {
			t.slots[j] = h<<32 | uint64(r)
			t.used++
			return
		}
	}
}

// grow doubles the index. It costs O(flows) once per doubling; the slots
// keep the low 32 bits of the hash, so no key is rehashed.
func (t *table) grow() {
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	t.mask = uint64(len(t.slots) - 1)
	t.used = 0
	for _, s := range old {
		if s != 0 {
			t.put(s>>32, ref(s))
		}
	}
}

// remove deletes both directions of flow i from the index and the cache, by
// backward-shift deletion (no tombstones, so probe chains stay short).
func (t *table) remove(i uint32) {
	f := t.flow(i)
	for d := uint32(0); d < 2; d++ {
		h := f.key[d].hash(&t.seed)
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
		t.slots[j] = 0
		t.used--
		// Shift later entries of the run back over the hole when their home
		// slot is not in (hole, k].
		hole := j
		for k := (j + 1) & t.mask; t.slots[k] != 0; k = (k + 1) & t.mask {
			home := (t.slots[k] >> 32) & t.mask
			if (k-home)&t.mask >= (k-hole)&t.mask {
				t.slots[hole] = t.slots[k]
				t.slots[k] = 0
				hole = k
			}
		}
	}
}
