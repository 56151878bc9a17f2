package vhostusertest

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Receive buffers in a chosen region: after memory hotplug (ADD_MEM_REG) a
// guest's driver allocates buffers from the new memory too. SetRxRegion
// makes the receive queue of a queue pair take its new buffers from a
// region; frames the backend writes there prove it mapped the region.

// rxPool hands out SlotSize buffers from the top of one region.
type rxPool struct {
	r    *Region
	free []uint64 // offsets in r.Data
}

// extChain is a receive chain posted from a pool.
type extChain struct {
	pool *rxPool
	elem []virtiotest.Elem
	offs []uint64
}

// SetRxRegion makes later FillRx calls for queue pair qp post buffers from
// the top n SlotSize buffers of r (which must not hold rings). Buffers
// already posted stay until the backend uses them.
func (f *Frontend) SetRxRegion(qp int, r *Region, n int) error {
	slot := uint64(f.opts.SlotSize)
	need := uint64(n) * slot
	if need > r.Size || r.Size-need < r.next {
		return fmt.Errorf("vhostusertest: region %#x has no room for %d receive buffers", r.GPA, n)
	}
	p := &rxPool{r: r}
	for i := 0; i < n; i++ {
		p.free = append(p.free, r.Size-need+uint64(i)*slot)
	}
	if f.rxPools == nil {
		f.rxPools = map[int]*rxPool{}
	}
	f.rxPools[qp] = p
	return nil
}

// RxInRegion returns how many receive buffers of r the backend has filled
// (and the frontend read) so far.
func (f *Frontend) RxInRegion(r *Region) uint64 { return f.rxInRegion.get(r) }

// addPoolChain posts one receive chain of lens from qp's pool on d.
func (f *Frontend) addPoolChain(qp int, d *virtiotest.Driver, p *rxPool, lens []uint32) error {
	if len(p.free) < len(lens) {
		return virtiotest.ErrFull
	}
	c := &extChain{pool: p}
	for _, l := range lens {
		off := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		c.offs = append(c.offs, off)
		c.elem = append(c.elem, virtiotest.Elem{GPA: p.r.GPA + off, Len: l, Write: true})
	}
	head, err := d.AddElems(c.elem, false)
	if err != nil {
		p.free = append(p.free, c.offs...)
		return err
	}
	ps := f.pair(qp)
	if ps.rxExt == nil {
		ps.rxExt = map[uint16]*extChain{}
	}
	ps.rxExt[head] = c
	return nil
}

// readExt copies n bytes of pool chain c out of its region, gives its
// buffers back to the pool and counts them.
func (f *Frontend) readExt(c *extChain, n uint32) ([]byte, error) {
	out := make([]byte, 0, n)
	for i, e := range c.elem {
		k := min(e.Len, n-uint32(len(out)))
		out = append(out, c.pool.r.Data[c.offs[i]:c.offs[i]+uint64(k)]...)
		if uint32(len(out)) == n {
			break
		}
	}
	if uint32(len(out)) != n {
		return nil, fmt.Errorf("used length %d exceeds the %d-byte chain", n, len(out))
	}
	c.pool.free = append(c.pool.free, c.offs...)
	f.rxInRegion.add(c.pool.r)
	return out, nil
}
