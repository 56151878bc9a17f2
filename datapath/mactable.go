package datapath

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// macTable is the switch's filtering database (IEEE 802.1Q-2018 §8.8): MAC
// address -> port index, with ageing. It is a fixed-size, 8-way
// set-associative hash table of atomics:
//
//   - Lookups and the refresh of an entry's age take no lock: they are a
//     handful of atomic loads in one bucket (O(1) per frame).
//   - Inserts, moves and removals take the lock of the bucket's shard; they
//     happen when a MAC is new or moves, not per frame.
//   - Ageing is lazy: an entry not refreshed within the ageing time reads as
//     absent and its slot is reused by the next insert into its bucket. No
//     sweep ever runs on the hot path.
//
// A static entry (a port's own MAC) never ages and is never evicted by a
// dynamic one. A bucket full of live entries evicts its least recently seen
// dynamic entry, so a flood of new source MACs costs flooding, never memory.
//
// Races between the lock-free readers and a writer are benign: a reader may
// see an entry's new port with its previous age (or the reverse) for one
// frame, which at worst floods or delivers one frame to where the MAC was a
// moment ago, as a hardware switch does during a move.
type macTable struct {
	seed   uint64
	shift  uint  // 64 - log2(number of buckets)
	ageing int64 // nanoseconds
	// refresh is how stale an entry's age may get before a lookup by its
	// own port stores a new one: stores stay rare (one per entry per
	// refresh period) so the entry's cache line is not written per frame.
	refresh int64
	keys    []atomic.Uint64 // mac<<16 | port index+1; 0 = empty
	seen    []atomic.Int64  // last seen, ns since the switch's epoch; staticSeen = static
	shards  [macShards]sync.Mutex
}

const (
	macWays   = 8
	macShards = 64
	// staticSeen marks a static entry: it never ages.
	staticSeen = math.MaxInt64
	// macNone is the key of no MAC (empty slot).
	macNone = 0
)

// learnResult says what learn did with a source address.
type learnResult int

const (
	learned     learnResult = iota // known (or now recorded) on this port
	learnedNot                     // not recorded: the bucket is full of static entries (the MAC floods)
	learnRefuse                    // the MAC is another port's own address
)

func newMACTable(entries int, ageing int64) *macTable {
	nb := max(entries/macWays, 8)
	nb = 1 << bits.Len(uint(nb-1)) // round up to a power of two (>= 8, so shift < 64)
	t := &macTable{
		seed:    rand.Uint64() | 1,
		shift:   uint(64 - bits.TrailingZeros(uint(nb))),
		ageing:  ageing,
		refresh: max(ageing/16, 1),
		keys:    make([]atomic.Uint64, nb*macWays),
		seen:    make([]atomic.Int64, nb*macWays),
	}
	return t
}

// macKey packs a MAC address (network order) into the low 48 bits.
func macKey(b []byte) uint64 {
	_ = b[5]
	return uint64(binary.BigEndian.Uint16(b))<<32 | uint64(binary.BigEndian.Uint32(b[2:]))
}

// isGroupKey reports whether the MAC key has the I/G (group) bit set: a
// multicast or broadcast address (IEEE 802-2014 §8.2).
func isGroupKey(k uint64) bool { return k&(1<<40) != 0 }

// bucket returns the index of the first slot of mac's bucket.
func (t *macTable) bucket(mac uint64) int {
	h := (mac ^ t.seed) * 0x9e3779b97f4a7c15
	return int(h>>t.shift) * macWays
}

func (t *macTable) shard(b int) *sync.Mutex { return &t.shards[(b/macWays)%macShards] }

// lookup returns the port index mac was last seen on, if that is within the
// ageing time (static entries always are).
func (t *macTable) lookup(mac uint64, now int64) (int, bool) {
	b := t.bucket(mac)
	for i := b; i < b+macWays; i++ {
		k := t.keys[i].Load()
		if k != macNone && k>>16 == mac {
			if now-t.seen[i].Load() > t.ageing {
				return 0, false
			}
			return int(k&0xffff) - 1, true
		}
	}
	return 0, false
}

// learn records that mac was seen as a source on port idx at now. refuse
// reports whether port idx may not have mac (another port owns it, or idx
// is being detached); it is only asked on the slow path, under the shard
// lock, so that an insert cannot slip past removePort.
func (t *macTable) learn(mac uint64, idx int, now int64, refuse func(mac uint64) bool) learnResult {
	b := t.bucket(mac)
	key := mac<<16 | uint64(idx+1)
	for i := b; i < b+macWays; i++ {
		k := t.keys[i].Load()
		if k == key {
			s := t.seen[i].Load()
			if s != staticSeen && now-s >= t.refresh {
				t.seen[i].Store(now) // lock-free: only the age changes
			}
			return learned
		}
		if k != macNone && k>>16 == mac && t.seen[i].Load() == staticSeen {
			return learnRefuse // another port's own MAC
		}
	}
	mu := t.shard(b)
	mu.Lock()
	defer mu.Unlock()
	if refuse(mac) {
		return learnRefuse
	}
	slot := -1
	for i := b; i < b+macWays; i++ {
		if k := t.keys[i].Load(); k != macNone && k>>16 == mac {
			if t.seen[i].Load() == staticSeen && int(k&0xffff)-1 != idx {
				return learnRefuse
			}
			slot = i // a move, or the refresh of an entry a racing writer made
			break
		}
	}
	if slot < 0 {
		slot = t.victim(b, now)
		if slot < 0 {
			return learnedNot
		}
	}
	// The age first, then the key: a reader that sees the new key sees a
	// fresh age or the slot's previous one (see the type's comment).
	t.seen[slot].Store(now)
	t.keys[slot].Store(key)
	return learned
}

// victim returns the slot of bucket b to reuse: an empty or aged-out one,
// else the least recently seen dynamic entry; -1 if all are static. Caller
// holds the shard lock.
func (t *macTable) victim(b int, now int64) int {
	best, bestSeen := -1, int64(math.MaxInt64)
	for i := b; i < b+macWays; i++ {
		if t.keys[i].Load() == macNone {
			return i
		}
		s := t.seen[i].Load()
		if s == staticSeen {
			continue
		}
		if now-s > t.ageing {
			return i
		}
		if s < bestSeen {
			best, bestSeen = i, s
		}
	}
	return best
}

// setStatic records mac as port idx's own address: a static entry that
// replaces any dynamic one. It reports false if the bucket is full of
// static entries (mac then floods; ownership is still enforced by the
// switch's owner map).
func (t *macTable) setStatic(mac uint64, idx int) bool {
	b := t.bucket(mac)
	mu := t.shard(b)
	mu.Lock()
	defer mu.Unlock()
	slot := -1
	for i := b; i < b+macWays; i++ {
		if k := t.keys[i].Load(); k != macNone && k>>16 == mac {
			slot = i
			break
		}
	}
	for i := b; i < b+macWays && slot < 0; i++ {
		if t.keys[i].Load() == macNone {
			slot = i
		}
	}
	for i := b; i < b+macWays && slot < 0; i++ {
		if t.seen[i].Load() != staticSeen {
			slot = i // evict a dynamic entry
		}
	}
	if slot < 0 {
		return false
	}
	t.seen[slot].Store(staticSeen)
	t.keys[slot].Store(mac<<16 | uint64(idx+1))
	return true
}

// removePort deletes every entry of port idx: a full scan, for Detach
// (control path) only.
func (t *macTable) removePort(idx int) {
	for b := 0; b < len(t.keys); b += macWays {
		mu := t.shard(b)
		mu.Lock()
		for i := b; i < b+macWays; i++ {
			if k := t.keys[i].Load(); k != macNone && int(k&0xffff)-1 == idx {
				t.keys[i].Store(macNone)
				t.seen[i].Store(0)
			}
		}
		mu.Unlock()
	}
}

// entries calls fn for every live entry (control path: tests, debugging).
func (t *macTable) entries(now int64, fn func(mac uint64, idx int, static bool)) {
	for i := range t.keys {
		k := t.keys[i].Load()
		if k == macNone {
			continue
		}
		s := t.seen[i].Load()
		if s != staticSeen && now-s > t.ageing {
			continue
		}
		fn(k>>16, int(k&0xffff)-1, s == staticSeen)
	}
}
