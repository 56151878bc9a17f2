package nat

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestTableModel checks the index (linear probing, backward-shift deletion,
// growth) and the cache against a Go map over random inserts and removals.
func TestTableModel(t *testing.T) {
	var tab table
	tab.init(1<<16, 64, [6]uint64{1, 2, 3, 4, 5, 6})
	r := rand.New(rand.NewPCG(7, 8))
	model := map[flowKey]uint32{} // key -> ref
	live := []uint32{}
	randKey := func() flowKey {
		var k flowKey
		k.Src = mapped([]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(256))})
		k.Dst = mapped([]byte{1, 1, 1, byte(r.IntN(8))})
		k.SrcPort, k.DstPort = uint16(r.IntN(64)), uint16(r.IntN(4))
		k.Proto = TCP
		return k
	}
	for step := range 40000 {
		if len(live) > 0 && (r.IntN(3) == 0 || tab.n >= tab.limit) {
			j := r.IntN(len(live))
			i := live[j]
			live[j] = live[len(live)-1]
			live = live[:len(live)-1]
			f := tab.flow(i)
			delete(model, f.key(0))
			delete(model, f.key(1))
			tab.remove(i, tab.hashOf(f, 0), tab.hashOf(f, 1))
			tab.release(i)
		} else {
			k0, k1 := randKey(), randKey()
			k1.Side = Uplink
			if _, ok := model[k0]; ok {
				continue
			}
			if _, ok := model[k1]; ok {
				continue
			}
			i := tab.alloc()
			require.NotZero(t, i)
			f := tab.flow(i)
			f.setKeys(&k0, &k1)
			tab.insert(i)
			model[k0], model[k1] = i<<1, i<<1|1
			live = append(live, i)
		}
		if step%997 == 0 {
			for k, want := range model {
				require.Equal(t, want, tab.lookup(&k, k.hash(&tab.seed)))
			}
			for range 100 {
				k := randKey()
				_, ok := model[k]
				if !ok {
					require.Zero(t, tab.lookup(&k, k.hash(&tab.seed)))
				}
			}
			require.Equal(t, len(model), tab.used)
		}
	}
}

// TestFlowLayout guards the sizes the cache-miss budget depends on: a flow
// record is one cache line, a key is 16 bytes.
func TestFlowLayout(t *testing.T) {
	if s := unsafe.Sizeof(flow{}); s != 64 {
		t.Errorf("flow is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(flowKey{}); s != 16 {
		t.Errorf("flowKey is %d bytes, want 16", s)
	}
}
