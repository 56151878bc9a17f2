package router

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// neighbours maps guest IPv4 addresses (big-endian) to MACs: learned from
// the frames guests send (the switch's anti-spoofing has checked that the
// address is the sender's lease) and from the lease table. Lookups read a
// copy-on-write map without locks; a change copies the map, which happens
// once per guest address, not per packet.
type neighbours struct {
	m   atomic.Pointer[map[uint32]header.MAC]
	gen atomic.Uint64 // the NeighbourGen value the map was built under
	mu  sync.Mutex    // serialises writers
}

func (n *neighbours) init() { n.m.Store(&map[uint32]header.MAC{}) }

func (n *neighbours) lookup(a uint32) (header.MAC, bool) {
	m, ok := (*n.m.Load())[a]
	return m, ok
}

// learn records that a is at mac.
func (n *neighbours) learn(a uint32, mac header.MAC) {
	if cur, ok := n.lookup(a); ok && cur == mac {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	old := *n.m.Load()
	var m map[uint32]header.MAC
	if len(old) >= maxNeighbours {
		m = map[uint32]header.MAC{}
	} else {
		m = maps.Clone(old)
	}
	m[a] = mac
	n.m.Store(&m)
}

// checkGen drops the cache when the lease table's generation moved (an
// address bound to another MAC, released or declined).
func (n *neighbours) checkGen(gen func() uint64) {
	if gen == nil {
		return
	}
	g := gen()
	if n.gen.Load() == g {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen.Load() != g {
		n.m.Store(&map[uint32]header.MAC{})
		n.gen.Store(g)
	}
}
