package virtio_test

import (
	"fmt"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// popEach is the reference PopN: Pop over cs until the first ok=false or
// error.
func popEach(q *virtio.Queue, cs []virtio.Chain) (int, error) {
	n := 0
	for n < len(cs) {
		ok, err := q.Pop(&cs[n])
		if err != nil {
			return n, err
		}
		if !ok {
			break
		}
		n++
	}
	return n, nil
}

// pushEach is the reference PushN: Push over cs until the first error.
func pushEach(q *virtio.Queue, cs []virtio.Chain, written uint32) error {
	for i := range cs {
		if err := q.Push(cs[i].Head, written); err != nil {
			return err
		}
	}
	return nil
}

// batchRun is what one side of TestPopNPushN saw: per batch the chains
// (their GPAs and lengths: the two sides have their own memory), counts
// and errors, then the queue's state and all of guest memory and the log.
type batchRun struct {
	batches   []string
	lastAvail uint16
	usedIdx   uint16
	err       string
	mem       []byte
	log       []byte
}

// chainString names c by head, lengths and segment GPAs and lengths.
func chainString(c *virtio.Chain) string {
	s := fmt.Sprintf("head=%d out=%d in=%d", c.Head, c.OutLen, c.InLen)
	for _, g := range c.Out {
		s += fmt.Sprintf(" o%#x/%d/%d", g.GPA, len(g.Buf), cap(g.Buf))
	}
	for _, g := range c.In {
		s += fmt.Sprintf(" i%#x/%d/%d", g.GPA, len(g.Buf), cap(g.Buf))
	}
	return s
}

// TestPopNPushN: PopN and PushN leave the ring, the chains, guest memory
// and the dirty log exactly as Pop and Push one chain at a time do, for
// the one-buffer chains of the fast path, every chain it leaves to Pop,
// and bad input that breaks the queue, with and without EVENT_IDX and
// notifications, across the ring's wrap.
func TestPopNPushN(t *testing.T) {
	buf := uint64(memGPA + 0x80000)
	one := func(i int) virtiotest.Desc { return virtiotest.Desc{Addr: buf + uint64(i)*0x100, Len: 60 + uint32(i)} }
	type step struct {
		desc  map[uint16]virtiotest.Desc
		heads []uint16
		avail int // >0: avail->idx set to last avail + avail instead
	}
	ones := func(heads ...uint16) step {
		s := step{desc: map[uint16]virtiotest.Desc{}, heads: heads}
		for _, h := range heads {
			s.desc[h] = one(int(h))
		}
		return s
	}
	with := func(s step, h uint16, d virtiotest.Desc) step { s.desc[h] = d; return s }
	for _, tc := range []struct {
		name     string
		size     uint16
		features uint64
		batch    int
		notify   bool // EnableNotify before each batch
		pushBad  bool // push a head out of range at the end of the first batch
		steps    []step
	}{
		{"all one readable", 8, 0, 4, false, false, []step{ones(0, 1, 2, 3, 4, 5, 6)}},
		{"event idx, notify off", 8, virtio.FEventIdx, 4, false, false, []step{ones(0, 1, 2, 3, 4, 5)}},
		{"event idx, notify on", 8, virtio.FEventIdx, 3, true, false, []step{ones(0, 1, 2, 3, 4, 5, 6, 7)}},
		{"wraps the ring", 4, virtio.FEventIdx, 3, true, false, []step{ones(0, 1, 2), ones(3, 0, 1, 2), ones(3, 1, 2)}},
		{"batch larger than ring", 4, 0, 16, false, false, []step{ones(3, 2, 1, 0), ones(0, 1)}},
		{"two descriptors in the middle", 8, 0, 8, false, false, []step{with(with(ones(0, 1, 2, 3), 1, virtiotest.Desc{Addr: buf, Len: 12, Flags: virtiotest.DescFNext, Next: 5}), 5, one(5))}},
		{"writable in the middle", 8, 0, 8, false, false, []step{with(ones(0, 1, 2), 1, virtiotest.Desc{Addr: buf, Len: 64, Flags: virtiotest.DescFWrite})}},
		{"zero length first", 8, 0, 8, false, false, []step{with(ones(0, 1, 2), 0, virtiotest.Desc{Addr: buf})}},
		{"unknown flag", 8, 0, 8, false, false, []step{with(ones(0, 1, 2), 2, virtiotest.Desc{Addr: buf, Len: 64, Flags: 8})}},
		{"indirect", 8, virtio.FIndirectDesc, 8, false, false, []step{with(ones(0, 1, 2), 1, virtiotest.Desc{Addr: buf + 0x1000, Len: 16, Flags: virtiotest.DescFIndirect})}},
		{"indirect not negotiated", 8, 0, 8, false, false, []step{with(ones(0, 1, 2), 1, virtiotest.Desc{Addr: buf + 0x1000, Len: 16, Flags: virtiotest.DescFIndirect})}},
		{"head out of range", 8, 0, 8, false, false, []step{{desc: map[uint16]virtiotest.Desc{0: one(0)}, heads: []uint16{0, 9, 0}}}},
		{"outside memory", 8, virtio.FEventIdx, 8, true, false, []step{with(ones(0, 1, 2), 2, virtiotest.Desc{Addr: memGPA + 1<<20 - 8, Len: 64})}},
		{"address wraps", 8, 0, 8, false, false, []step{with(ones(0, 1, 2), 1, virtiotest.Desc{Addr: ^uint64(0) - 4, Len: 64})}},
		{"avail idx too far", 8, 0, 4, false, false, []step{ones(0, 1), {avail: 9}}},
		{"avail idx too far after a batch", 8, 0, 2, false, false, []step{ones(0, 1, 2, 3), {avail: 12}}},
		{"push head out of range", 8, 0, 4, false, true, []step{ones(0, 1, 2, 3, 4)}},
		{"packed", 8, virtio.FRingPacked | virtio.FEventIdx, 3, true, false, []step{ones(0, 1, 2, 3, 4)}},
		// popReadable reads ahead popAhead (64) chains at a time.
		{"more than a read-ahead", 256, virtio.FEventIdx, 200, true, false, []step{ones(heads(0, 150)...), ones(heads(150, 256)...)}},
		{"two descriptors after a read-ahead", 256, 0, 128, false, false, []step{with(ones(heads(0, 100)...), 70, virtiotest.Desc{Addr: buf, Len: 12, Flags: virtiotest.DescFNext, Next: 200})}},
		{"head out of range after a read-ahead", 256, 0, 128, false, false, []step{{desc: ones(heads(0, 80)...).desc, heads: append(heads(0, 66), 300, 66)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var runs [2]batchRun
			for side := range 2 {
				p := newPair(t, tc.size, tc.features, virtiotest.DriverOptions{Packed: tc.features&virtio.FRingPacked != 0})
				p.d.WriteDescAt(buf+0x1000, virtiotest.Desc{Addr: buf + 0x2000, Len: 70})
				log := make([]byte, 128)
				p.q.SetLog(virtio.NewDirtyLog(log))
				if !tc.notify {
					p.q.DisableNotify()
				}
				cs := make([]virtio.Chain, tc.batch)
				r := &runs[side]
				pushed := false
				for _, s := range tc.steps {
					if tc.features&virtio.FRingPacked != 0 {
						for range s.heads {
							_, err := p.d.AddChain([][]byte{make([]byte, 64)}, nil, false)
							require.NoError(t, err)
						}
					} else {
						for h, d := range s.desc {
							p.d.WriteDesc(h, d)
						}
						for _, h := range s.heads {
							p.d.AddHead(h)
						}
					}
					p.d.Publish()
					if s.avail > 0 {
						p.d.SetAvailIdx(p.q.LastAvail() + uint16(s.avail))
					}
					for {
						if tc.notify {
							p.q.EnableNotify()
						}
						var n int
						var err error
						if side == 0 {
							n, err = popEach(p.q, cs)
						} else {
							n, err = p.q.PopN(cs)
						}
						line := fmt.Sprintf("n=%d err=%v", n, err)
						for i := range n {
							line += "; " + chainString(&cs[i])
						}
						r.batches = append(r.batches, line)
						if err != nil || n == 0 {
							break
						}
						if tc.pushBad && !pushed {
							pushed = true
							cs[n-1].Head = 0xffff
						}
						if side == 0 {
							err = pushEach(p.q, cs[:n], 0)
						} else {
							err = p.q.PushN(cs[:n], 0)
						}
						r.batches = append(r.batches, fmt.Sprintf("push err=%v", err))
						p.q.Publish()
						r.batches = append(r.batches, fmt.Sprintf("notify=%v", p.q.NeedNotify()))
						for {
							if _, ok := p.d.Used(); !ok {
								break
							}
						}
					}
				}
				r.lastAvail, r.usedIdx = p.q.LastAvail(), p.q.UsedIdx()
				if p.q.Err() != nil {
					r.err = p.q.Err().Error()
				}
				r.mem = append([]byte(nil), p.buf...)
				r.log = log
			}
			require.Equal(t, runs[0].batches, runs[1].batches)
			require.Equal(t, runs[0].lastAvail, runs[1].lastAvail)
			require.Equal(t, runs[0].usedIdx, runs[1].usedIdx)
			require.Equal(t, runs[0].err, runs[1].err)
			require.Equal(t, runs[0].log, runs[1].log)
			require.True(t, string(runs[0].mem) == string(runs[1].mem), "guest memory differs")
		})
	}
}

// heads returns the heads from, from+1, ..., to-1.
func heads(from, to uint16) []uint16 {
	var s []uint16
	for h := from; h < to; h++ {
		s = append(s, h)
	}
	return s
}

// TestPopNAllocs: the transmit batch allocates nothing once its chains
// have their segment slices.
func TestPopNAllocs(t *testing.T) {
	p := newPair(t, 256, virtio.FEventIdx)
	p.q.SetLog(virtio.NewDirtyLog(make([]byte, 128)))
	cs := make([]virtio.Chain, 32)
	round := func() {
		for i := range 32 {
			p.d.WriteDesc(uint16(i), virtiotest.Desc{Addr: memGPA + 0x80000 + uint64(i)*0x100, Len: 64})
			p.d.AddHead(uint16(i))
		}
		p.d.Publish()
		n, err := p.q.PopN(cs)
		if err != nil || n != 32 {
			t.Fatalf("PopN: %d %v", n, err)
		}
		if err := p.q.PushN(cs[:n], 0); err != nil {
			t.Fatal(err)
		}
		p.q.Publish()
		for {
			if _, ok := p.d.Used(); !ok {
				break
			}
		}
	}
	round()
	require.Zero(t, testing.AllocsPerRun(100, round))
}

// BenchmarkPopNPushN measures the device side of a split transmit queue
// as GuestPort.txOnce works it, batches of 32 one-buffer chains: "each"
// pops and pushes them one at a time (Pop, Push), "batch" with PopN and
// PushN; then one Publish and NeedNotify per batch. One thread: the ring
// stays in cache, so this measures the instructions, not overlapping
// misses (for those: bench/arcnet-ab.sh, loop-64).
func BenchmarkPopNPushN(b *testing.B) {
	for _, fe := range []struct {
		name string
		f    uint64
	}{{"", virtio.FVersion1}, {"eventidx/", virtio.FVersion1 | virtio.FEventIdx}} {
		for _, batched := range []bool{false, true} {
			name := fe.name + "each"
			if batched {
				name = fe.name + "batch"
			}
			b.Run(name, func(b *testing.B) {
				const batch = 32
				p := rawPair(b, 256, fe.f, 64, false)
				p.q.DisableNotify()
				cs := make([]virtio.Chain, batch)
				head := uint16(0)
				b.ReportAllocs()
				b.ResetTimer()
				for n := 0; n < b.N; n += batch {
					for range batch {
						p.d.AddHead(head)
						head = (head + 1) % 256
					}
					p.d.Publish()
					var k int
					var err error
					if batched {
						k, err = p.q.PopN(cs)
						if err == nil {
							err = p.q.PushN(cs[:k], 0)
						}
					} else {
						k, err = popEach(p.q, cs)
						if err == nil {
							err = pushEach(p.q, cs[:k], 0)
						}
					}
					if k != batch || err != nil {
						b.Fatal("pop", k, err)
					}
					p.q.Publish()
					p.q.NeedNotify()
				}
			})
		}
	}
}
