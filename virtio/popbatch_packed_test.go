package virtio_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// Modes of comparePackedPopN (its mode argument).
const (
	popNPushBad    = 1 // the first push batch has a Buffer ID out of range at its end
	popNPushTwice  = 2 // the first push batch pushes its chains twice (more pushes than pops)
	popNWritten    = 4 // push with 60 bytes written instead of 0
	popNNoRewind   = 8 // no Mark/Rewind rounds
	popNNoUnpop    = 16
	popNBatchShift = 5 // mode>>5, if not 0: the largest batch (else 8)
)

// comparePackedPopN runs PopN and PushN on one twin of a packed ring image
// (fuzz format, newRxTwin) and Pop and Push one chain at a time (popEach,
// pushEach) on another, in rounds of batches of 1..max chains until the
// queue runs out or breaks: both must pop the same chains (heads,
// lengths, segments) with the same results and end every step in the same
// state (requireSameRx: guest memory, positions, broken or not, the
// shadow Rewind writes back, descriptor counts, dirty log). Every third
// round gives back half the batch with Unpop before it pushes, every
// fourth rewinds the round (Mark/Rewind) after its push and does it
// again, every second publishes and compares NeedNotify. A third twin
// with VIRTIO_F_IN_ORDER does what the PopN one does: its PushN writes one
// used descriptor per transmit batch, so its ring differs from the others'
// in the descriptors it skipped (left as Pop read them), but the device
// reads none of them as available again (the driver writes no new ones
// here), so it must keep the same positions, bookkeeping, errors and
// notifications (requireSameState). It returns how many ring positions
// PopN's packed fast path popped (each counted once: Unpop and Rewind
// give some back to pop again).
func comparePackedPopN(t testing.TB, data []byte, mode byte) (fast int) {
	ba, ea, io := newRxTwin(t, data), newRxTwin(t, data), newRxTwin(t, data, virtio.FInOrder)
	if ba == nil {
		return 0
	}
	csI := make([]virtio.Chain, 64)
	fastAt := map[uint16]bool{}
	defer func() { fast = len(fastAt) }()
	maxBatch := 8
	if mode>>popNBatchShift != 0 {
		maxBatch = int(mode >> popNBatchShift)
	}
	written := uint32(0)
	if mode&popNWritten != 0 {
		written = 60
	}
	csB, csE := make([]virtio.Chain, maxBatch), make([]virtio.Chain, maxBatch)
	for round := range 2*int(ba.q.Size()) + 2 {
		name := fmt.Sprintf("round %d", round)
		k := 1 + round%maxBatch
		mb, me, mi := ba.q.Mark(), ea.q.Mark(), io.q.Mark()
		pop := func(step string) (int, error) {
			// PopN with its fast path counted: popPackedN first, then
			// PopN over the rest (whose fast path finds nothing more
			// where popPackedN stopped).
			pos := ba.q.LastAvail()
			nf := ba.q.PopPackedN(csB[:k])
			for range nf {
				fastAt[pos] = true
				pos = advancePacked(pos, ba.q.Size())
			}
			nb, errB := ba.q.PopN(csB[nf:k])
			nb += nf
			ne, errE := popEach(ea.q, csE[:k])
			ni, errI := io.q.PopN(csI[:k])
			require.Equal(t, ne, nb, "%s: popped", step)
			require.Equal(t, ne, ni, "%s: popped, in order", step)
			require.Equal(t, fmt.Sprint(errE), fmt.Sprint(errB), "%s: pop error", step)
			require.Equal(t, errE != nil, errI != nil, "%s: pop error, in order", step)
			for i := range nb {
				require.Equal(t, chainString(&csE[i]), chainString(&csB[i]), "%s: chain %d", step, i)
				require.Equal(t, chainString(&csE[i]), chainString(&csI[i]), "%s: chain %d, in order", step, i)
			}
			requireSameRx(t, ba, ea, step)
			requireSameState(t, ea, io, step+" (in order)")
			return nb, errB
		}
		n, err := pop(name)
		if err != nil || n == 0 {
			return fast
		}
		if round%3 == 1 && mode&popNNoUnpop == 0 {
			u := uint16(n / 2)
			ba.q.Unpop(u)
			ea.q.Unpop(u)
			io.q.Unpop(u)
			requireSameRx(t, ba, ea, name+" unpopped")
			n -= int(u)
		}
		push := func(step string, n int) error {
			pb, pe, pi := csB[:n], csE[:n], csI[:n]
			if round == 0 && mode&popNPushBad != 0 {
				csB[n-1].Head, csE[n-1].Head, csI[n-1].Head = 0xffff, 0xffff, 0xffff
			}
			if round == 0 && mode&popNPushTwice != 0 {
				pb, pe, pi = append(pb[:n:n], pb...), append(pe[:n:n], pe...), append(pi[:n:n], pi...)
			}
			errB := ba.q.PushN(pb, written)
			errE := pushEach(ea.q, pe, written)
			errI := io.q.PushN(pi, written)
			require.Equal(t, fmt.Sprint(errE), fmt.Sprint(errB), "%s: push error", step)
			require.Equal(t, fmt.Sprint(errE), fmt.Sprint(errI), "%s: push error, in order", step)
			requireSameRx(t, ba, ea, step+" pushed")
			requireSameState(t, ea, io, step+" pushed (in order)")
			return errB
		}
		if err := push(name, n); err != nil {
			return fast
		}
		if round%4 == 3 && mode&popNNoRewind == 0 {
			ba.q.Rewind(mb)
			ea.q.Rewind(me)
			io.q.Rewind(mi)
			requireSameRx(t, ba, ea, name+" rewound")
			requireSameState(t, ea, io, name+" rewound (in order)")
			n, err := pop(name + " again")
			if err != nil || n == 0 {
				return fast
			}
			if err := push(name+" again", n); err != nil {
				return fast
			}
		}
		if round%2 == 0 {
			continue
		}
		ba.q.Publish()
		ea.q.Publish()
		io.q.Publish()
		notify := ea.q.NeedNotify()
		require.Equal(t, notify, ba.q.NeedNotify(), "%s: notify", name)
		require.Equal(t, notify, io.q.NeedNotify(), "%s: notify, in order", name)
		requireSameRx(t, ba, ea, name+" published")
	}
	return fast
}

// requireSameState is requireSameRx less guest memory and the dirty log:
// positions, broken or not, shadow and descriptor counts.
func requireSameState(t testing.TB, want, got *rxTwin, step string) {
	t.Helper()
	require.Equal(t, want.q.LastAvail(), got.q.LastAvail(), "%s: avail position", step)
	require.Equal(t, want.q.UsedIdx(), got.q.UsedIdx(), "%s: used position", step)
	require.Equal(t, want.q.Err() != nil, got.q.Err() != nil, "%s: broken", step)
	ws, wc := want.q.PackedBook()
	gs, gc := got.q.PackedBook()
	require.Equal(t, ws, gs, "%s: shadow", step)
	require.Equal(t, wc, gc, "%s: descriptor counts", step)
}

// advancePacked returns packed ring position pos (index | wrap<<15) moved
// one descriptor forward on a ring of size descriptors.
func advancePacked(pos, size uint16) uint16 {
	if pos&0x7fff+1 == size {
		return (pos ^ 0x8000) & 0x8000
	}
	return pos + 1
}

// TestPackedPopN compares PopN and PushN with Pop and Push one chain at a
// time on packed ring states of every shape the fast path takes or leaves
// to Pop (comparePackedPopN), and checks how many chains the fast path
// takes.
func TestPackedPopN(t *testing.T) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	r := func(gpa uint64, n uint32) []virtiotest.Elem { return []virtiotest.Elem{{GPA: gpa, Len: n}} }
	each := func(n int) func(d *virtiotest.Driver) {
		return func(d *virtiotest.Driver) {
			for i := range n {
				_, _ = d.AddElems(r(in(uint64(i)*0x40), 0x40), false)
			}
		}
	}
	avail := virtiotest.DescFAvail // the first round's wrap counter is 1
	const indirect, evidx, usedAhead, dirtyLog = 1, 2, 16, 32
	cases := []struct {
		name  string
		size  uint16
		ctl   byte
		mode  byte
		build func(d *virtiotest.Driver)
		fast  int
	}{
		{"one readable each", 7, 0, 0, each(7), 7},
		{"batch of one", 5, 0, 1 << popNBatchShift, each(5), 5},
		{"batch of two, no rewind", 7, 0, 2<<popNBatchShift | popNNoRewind | popNNoUnpop, each(7), 7},
		{"event idx", 7, evidx, 0, each(7), 7},
		{"event idx and dirty log", 6, evidx | dirtyLog, popNWritten, each(6), 6},
		{"indirect negotiated", 4, indirect | evidx, 0, each(4), 4},
		// The first used descriptor goes one slot ahead, over a buffer
		// not popped yet (a frontend's SET_VRING_BASE may say so; Push
		// does not know): its length 0 then sends it to Pop.
		{"used position ahead", 4, usedAhead, 0, each(4), 1},
		{"push head out of range", 5, dirtyLog, popNPushBad, each(5), 1},
		{"push head out of range, event idx", 5, evidx | dirtyLog, popNPushBad | 3<<popNBatchShift, each(5), 1},
		{"more pushes than pops", 5, dirtyLog, popNPushTwice, each(5), 1},
		{"more pushes than pops, large batch", 6, dirtyLog, popNPushTwice | 7<<popNBatchShift, each(6), 1},
		{"two descriptors in the middle", 5, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 12}, {GPA: in(0x10c), Len: 52}}, false)
			_, _ = d.AddElems(r(in(0x200), 0x40), false)
			_, _ = d.AddElems(r(in(0x240), 0x40), false)
		}, 3},
		{"readable and writable", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 12}, {GPA: in(0x10c), Len: 52, Write: true}}, false)
			_, _ = d.AddElems(r(in(0x200), 0x40), false)
		}, 2},
		{"writable in the middle", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 0x40, Write: true}}, false)
			_, _ = d.AddElems(r(in(0x200), 0x40), false)
		}, 2},
		{"indirect in the middle", 4, indirect, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems(r(in(0x100), 0x40), true)
			_, _ = d.AddElems(r(in(0x200), 0x40), false)
		}, 2},
		{"indirect not negotiated", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems(r(in(0x100), 0x40), true)
		}, 1},
		{"buffer in another region", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems(r(fzC, 0x40), false)
			_, _ = d.AddElems(r(fzC+0x40, 0x40), false)
			_, _ = d.AddElems(r(fzC+0x80, 0x40), false)
		}, 3}, // Pop's lookup moves the hint to C: the batch goes on there
		{"buffer across regions", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			_, _ = d.AddElems(r(fzB-0x20, 0x40), false)
			_, _ = d.AddElems(r(in(0x100), 0x40), false)
		}, 2}, // the hint is B after it, A again after the next Pop
		{"outside memory", 4, evidx | dirtyLog, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			d.WritePackedDesc(1, virtiotest.PackedDesc{Addr: fzC + fzCSize - 8, Len: 64, ID: 1, Flags: avail})
		}, 1},
		{"address wraps", 4, 0, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: ^uint64(0) - 4, Len: 64, ID: 0, Flags: avail})
		}, 0},
		{"zero length", 4, 0, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			d.WritePackedDesc(1, virtiotest.PackedDesc{Addr: in(0x100), Len: 0, ID: 1, Flags: avail})
			d.WritePackedDesc(2, virtiotest.PackedDesc{Addr: in(0x200), Len: 0x40, ID: 2, Flags: avail})
		}, 2},
		{"buffer id beyond the queue size", 4, dirtyLog, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(r(in(0), 0x40), false)
			d.WritePackedDesc(1, virtiotest.PackedDesc{Addr: in(0x100), Len: 0x40, ID: 9, Flags: avail})
		}, 1},
		{"duplicate buffer ids, unknown flag", 4, 0, 0, func(d *virtiotest.Driver) {
			for i := range uint16(4) {
				d.WritePackedDesc(i, virtiotest.PackedDesc{Addr: in(uint64(i) * 0x40), Len: 0x40, ID: 1, Flags: avail | 0x40})
			}
		}, 4},
		{"used, not available", 4, 0, 0, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: in(0), Len: 0x40, ID: 0, Flags: avail | virtiotest.DescFUsed})
		}, 0},
		{"every descriptor with NEXT", 3, 0, 0, func(d *virtiotest.Driver) {
			for i := range uint16(3) {
				d.WritePackedDesc(i, virtiotest.PackedDesc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext | avail})
			}
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := packedRxImage(t, tc.size, tc.ctl, tc.build)
			require.Equal(t, tc.fast, comparePackedPopN(t, data, tc.mode), "ring positions popped by the fast path")
		})
	}
}

// TestPackedPopNWraps: PopN and PushN going round rings of odd and even
// sizes many times with the driver mock refilling (wrap counters of both
// sides flipping inside batches, buffers of one and two descriptors and
// device-writable ones mixed in), against Pop and Push one at a time: the
// same chains, used descriptors the driver gets, notifications, guest
// memory and dirty log.
func TestPackedPopNWraps(t *testing.T) {
	for _, f := range []uint64{0, virtio.FEventIdx, virtio.FEventIdx | virtio.FIndirectDesc} {
		for _, size := range []uint16{5, 8, 13} {
			t.Run(fmt.Sprintf("features %#x size %d", f, size), func(t *testing.T) {
				features := virtio.FVersion1 | f
				ba, ea := newPackedPair(t, size, features), newPackedPair(t, size, features)
				logB, logE := make([]byte, 64), make([]byte, 64)
				ba.q.SetLog(virtio.NewDirtyLog(logB))
				ea.q.SetLog(virtio.NewDirtyLog(logE))
				csB, csE := make([]virtio.Chain, 6), make([]virtio.Chain, 6)
				msg := make([]byte, 64)
				fast, total := 0, 0
				for round := range 40 {
					for _, p := range []*pair{ba, ea} {
						p.q.EnableNotify()
						for i := 0; p.d.FreeDescs() > 1; i++ {
							var err error
							switch (round + i) % 11 {
							case 3:
								_, err = p.d.AddOut(msg[:12], msg[12:])
							case 7:
								_, err = p.d.AddIn(64)
							case 9:
								_, err = p.d.AddChain([][]byte{msg[:12], msg[12:]}, nil, f&virtio.FIndirectDesc != 0)
							default:
								_, err = p.d.AddOut(msg[:10+round%50])
							}
							require.NoError(t, err)
						}
						p.d.Publish()
					}
					k := 1 + round%len(csB)
					nf := ba.q.PopPackedN(csB[:k])
					nb, errB := ba.q.PopN(csB[nf:k])
					nb += nf
					fast += nf
					ne, errE := popEach(ea.q, csE[:k])
					require.NoError(t, errB)
					require.NoError(t, errE)
					require.Equal(t, ne, nb)
					total += nb
					for i := range nb {
						require.Equal(t, chainString(&csE[i]), chainString(&csB[i]))
					}
					require.NoError(t, ba.q.PushN(csB[:nb], 0))
					require.NoError(t, pushEach(ea.q, csE[:ne], 0))
					requireSamePublished(t, ea, ba, logE, logB, round)
					sb, cb := ba.q.PackedBook()
					se, ce := ea.q.PackedBook()
					require.Equal(t, se, sb)
					require.Equal(t, ce, cb)
					require.Equal(t, ea.q.LastAvail(), ba.q.LastAvail())
					require.Equal(t, ea.q.UsedIdx(), ba.q.UsedIdx())
				}
				require.Greater(t, total, 3*int(size), "went round the ring a few times")
				require.Greater(t, fast, total/4, "chains on the fast path")
				require.Less(t, fast, total, "some chains left to Pop")
			})
		}
	}
}

// FuzzPackedPopN plays a hostile driver on a packed transmit queue (any
// ring contents, positions, features) against PopN and PushN: they must
// leave everything as Pop and Push one chain at a time do
// (comparePackedPopN), with Unpop, Mark/Rewind and bad pushes on the way,
// and never panic.
func FuzzPackedPopN(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	for _, s := range []struct {
		size  uint16
		ctl   byte
		mode  byte
		build func(d *virtiotest.Driver)
	}{
		{7, 0, 0, func(d *virtiotest.Driver) {
			for i := range 7 {
				_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * 0x40), Len: 0x40}}, false)
			}
		}},
		{5, 2 | 32, popNPushBad | 2<<popNBatchShift, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 0x40}}, false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x40), Len: 12}, {GPA: in(0x4c), Len: 52}}, false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: fzC, Len: 0x40}}, false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 0x40}}, true)
		}},
		{4, 1 | 16, popNPushTwice | popNWritten, func(d *virtiotest.Driver) {
			for i := range 4 {
				_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * 0x40), Len: 0x40}}, false)
			}
		}},
	} {
		data := packedRxImage(f, s.size, s.ctl, s.build)
		f.Add(data[:4+0x600], s.mode)
	}
	f.Fuzz(func(t *testing.T, data []byte, mode byte) {
		if len(data) < 4 {
			return
		}
		comparePackedPopN(t, data, mode)
	})
}

// TestAllocsPackedPopNPushN: the packed transmit batch allocates nothing
// once its chains have their segment slices.
func TestAllocsPackedPopNPushN(t *testing.T) {
	p, feed := rawPackedPair(t, 256, virtio.FVersion1|virtio.FEventIdx, 64, false)
	p.q.SetLog(virtio.NewDirtyLog(make([]byte, 4096)))
	cs := make([]virtio.Chain, 32)
	round := func() {
		feed.add(32)
		n, err := p.q.PopN(cs)
		if err != nil || n != 32 {
			t.Fatalf("PopN: %d %v", n, err)
		}
		if err := p.q.PushN(cs[:n], 0); err != nil {
			t.Fatal(err)
		}
		p.q.Publish()
		p.q.NeedNotify()
	}
	round()
	require.Zero(t, testing.AllocsPerRun(100, round))
}

// BenchmarkPackedPopNPushN is BenchmarkPopNPushN on a packed ring: batches
// of 32 one-descriptor device-readable buffers, "each" with Pop and Push,
// "batch" with PopN and PushN, then one Publish and NeedNotify. One
// thread: it measures instructions, not the misses the batch overlaps (for
// those: bench/arcnet-ab.sh, f2b-copy-64-packed and loop-64-packed).
func BenchmarkPackedPopNPushN(b *testing.B) {
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
				p, feed := rawPackedPair(b, 256, fe.f, 64, false)
				p.q.DisableNotify()
				cs := make([]virtio.Chain, batch)
				b.ReportAllocs()
				b.ResetTimer()
				for n := 0; n < b.N; n += batch {
					feed.add(batch)
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

// TestPackedPushNInOrder: with VIRTIO_F_IN_ORDER, PushN of a transmit
// batch (written 0) writes one used descriptor for the whole batch
// (virtio 1.2 §2.8.8) and the driver, which skips the batch's other
// buffers as used, gets every buffer back in the same order, and the same
// notifications, as from Push one at a time without IN_ORDER; on rings of
// odd and even sizes going round many times, with buffers of several
// descriptors and indirect ones, Mark/Rewind and the dirty log.
func TestPackedPushNInOrder(t *testing.T) {
	for _, f := range []uint64{0, virtio.FEventIdx, virtio.FEventIdx | virtio.FIndirectDesc} {
		for _, size := range []uint16{5, 8, 13} {
			t.Run(fmt.Sprintf("features %#x size %d", f, size), func(t *testing.T) {
				features := virtio.FVersion1 | f
				io, ea := newPackedPair(t, size, features|virtio.FInOrder), newPackedPair(t, size, features)
				logI, logE := make([]byte, 64), make([]byte, 64)
				io.q.SetLog(virtio.NewDirtyLog(logI))
				ea.q.SetLog(virtio.NewDirtyLog(logE))
				csI, csE := make([]virtio.Chain, 6), make([]virtio.Chain, 6)
				msg := make([]byte, 64)
				batches := 0
				for round := range 40 {
					for _, p := range []*pair{io, ea} {
						p.d.EnableInterrupts()
						for i := 0; p.d.FreeDescs() > 1; i++ {
							var err error
							switch (round + i) % 7 {
							case 3:
								_, err = p.d.AddOut(msg[:12], msg[12:])
							case 5:
								_, err = p.d.AddChain([][]byte{msg[:12], msg[12:]}, nil, f&virtio.FIndirectDesc != 0)
							default:
								_, err = p.d.AddOut(msg[:10+round%50])
							}
							require.NoError(t, err)
						}
						p.d.Publish()
					}
					k := 1 + round%len(csI)
					mi, me := io.q.Mark(), ea.q.Mark()
					for again := range 2 {
						ni, err := io.q.PopN(csI[:k])
						require.NoError(t, err)
						ne, err := popEach(ea.q, csE[:k])
						require.NoError(t, err)
						require.Equal(t, ne, ni)
						for i := range ni {
							require.Equal(t, chainString(&csE[i]), chainString(&csI[i]))
						}
						from := io.q.UsedIdx()
						require.NoError(t, io.q.PushN(csI[:ni], 0))
						require.NoError(t, pushEach(ea.q, csE[:ne], 0))
						require.Equal(t, ea.q.UsedIdx(), io.q.UsedIdx())
						// One used descriptor written (length 0, the
						// batch's last Buffer ID): the batch's others
						// still read as the available ones Pop read
						// (lengths above 0).
						written := 0
						for pos := from; pos != io.q.UsedIdx(); pos = advancePacked(pos, size) {
							if d := io.d.ReadPackedDesc(pos & 0x7fff); d.Len == 0 {
								require.Equal(t, csI[ni-1].Head, d.ID)
								written++
							}
						}
						require.Equal(t, 1, written, "round %d: used descriptors written", round)
						if ni > 1 {
							batches++
						}
						if again == 0 && round%4 == 3 {
							io.q.Rewind(mi)
							ea.q.Rewind(me)
							continue
						}
						break
					}
					io.q.Publish()
					ea.q.Publish()
					require.Equal(t, ea.q.NeedNotify(), io.q.NeedNotify(), "round %d: notify", round)
					for {
						gi, okI := io.d.Used()
						ge, okE := ea.d.Used()
						require.Equal(t, okE, okI, "round %d", round)
						if !okI {
							break
						}
						require.Equal(t, ge, gi, "round %d", round)
					}
					require.Equal(t, ea.q.LastAvail(), io.q.LastAvail())
					require.Equal(t, ea.d.FreeDescs(), io.d.FreeDescs())
					require.Equal(t, logE, logI, "dirty log (the ring's page)")
				}
				require.Greater(t, batches, 20)
			})
		}
	}
}

// TestPackedPushNInOrderFallback: with VIRTIO_F_IN_ORDER, the batches
// PushN does not write as one used descriptor go one by one, exactly as
// Push over them: a buffer the device wrote into (written > 0: each
// length counts), a single buffer, a Buffer ID out of range or never
// popped, and more pushes than pops, with Push's error.
func TestPackedPushNInOrderFallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int
		written uint32
		bad     func(cs []virtio.Chain) []virtio.Chain
		err     bool
		// lastUsed, when not 0, is the used position the queue starts
		// with (SET_VRING_BASE from a frontend that got it wrong).
		lastUsed uint16
	}{
		{"written", 4, 60, nil, false, 0},
		{"one buffer", 1, 0, nil, false, 0},
		{"id out of range", 4, 0, func(cs []virtio.Chain) []virtio.Chain { cs[2].Head = 0xffff; return cs }, true, 0},
		{"never popped", 4, 0, func(cs []virtio.Chain) []virtio.Chain { cs[2].Head = 7; return cs }, true, 0},
		{"more pushes than pops", 3, 0, func(cs []virtio.Chain) []virtio.Chain { return append(cs, cs...) }, true, 0},
		// The used position one past where the 4 pops leave the avail
		// one: the distance from used to avail is 2*8-1, more than the
		// ring; putUsedPackedBatch writes nothing and Push decides.
		{"used position ahead", 4, 0, nil, false, 0x8005},
		{"used position ahead, one buffer", 1, 0, nil, false, 0x8002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mem [2][]byte
			var logs [2][]byte
			var errs [2]string
			for side := range 2 {
				p := newPackedPair(t, 8, virtio.FVersion1|virtio.FEventIdx|virtio.FInOrder)
				if tc.lastUsed != 0 {
					cfg := p.d.Config(virtio.FVersion1 | virtio.FEventIdx | virtio.FInOrder | virtio.FRingPacked)
					cfg.LastUsed = tc.lastUsed
					q, err := virtio.NewQueue(p.mem, cfg)
					require.NoError(t, err)
					p.q = q
				}
				logs[side] = make([]byte, 64)
				p.q.SetLog(virtio.NewDirtyLog(logs[side]))
				for range tc.n {
					_, err := p.d.AddOut(make([]byte, 64))
					require.NoError(t, err)
				}
				p.d.Publish()
				cs := make([]virtio.Chain, tc.n)
				n, err := p.q.PopN(cs)
				require.NoError(t, err)
				require.Equal(t, tc.n, n)
				if tc.bad != nil {
					cs = tc.bad(cs)
				}
				if side == 0 {
					err = pushEach(p.q, cs, tc.written)
				} else {
					err = p.q.PushN(cs, tc.written)
				}
				require.Equal(t, tc.err, err != nil, "%v", err)
				errs[side] = fmt.Sprint(err)
				p.q.Publish()
				mem[side] = p.buf
			}
			require.Equal(t, errs[0], errs[1])
			require.Equal(t, logs[0], logs[1])
			require.True(t, string(mem[0]) == string(mem[1]), "guest memory differs")
		})
	}
}

// BenchmarkPackedTxCrossCore is the device side of a packed transmit
// queue as GuestPort.txOnce works it (the f2b case), with the driver on
// another thread: the driver writes a frame byte into each buffer and
// makes it available again as soon as it reads it used (packedFeed, the
// ring kept full, in order), the device pops a batch of up to 32, reads
// each frame's first byte, pushes them, publishes. So the descriptor
// lines and the frames move between the two cores as between a guest and
// vhost-arcnet. "each": Pop and Push per buffer; "batch": PopN and PushN;
// "batch/inorder": the same with VIRTIO_F_IN_ORDER, one used descriptor
// per batch (the driver frees the buffers from its position through the
// used Buffer ID, which packedFeed sets to the slot).
func BenchmarkPackedTxCrossCore(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs GOMAXPROCS >= 2")
	}
	for _, tc := range []struct {
		name     string
		features uint64
		batched  bool
	}{
		{"each", virtio.FVersion1, false},
		{"batch", virtio.FVersion1, true},
		{"batch/inorder", virtio.FVersion1 | virtio.FInOrder, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const size, batch = 256, 32
			p, feed := rawPackedPair(b, size, tc.features, 64, false)
			feed.add(size)
			inOrder := tc.features&virtio.FInOrder != 0
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // driver
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				used := virtiotest.PackedWrap // index 0, wrap counter 1
				for !stop.Load() {
					i := used &^ virtiotest.PackedWrap
					f := p.d.ReadPackedDesc(i).Flags
					w := used&virtiotest.PackedWrap != 0
					if (f&virtiotest.DescFAvail != 0) != w || (f&virtiotest.DescFUsed != 0) != w {
						continue
					}
					k := uint16(1)
					if inOrder {
						k = (p.d.ReadPackedDesc(i).ID+size-i)%size + 1
					}
					for range k {
						_, buf := p.d.Slot(int(used &^ virtiotest.PackedWrap))
						buf[0]++ // the next frame
						feed.add(1)
						if used&^virtiotest.PackedWrap+1 == size {
							used = (used ^ virtiotest.PackedWrap) &^ (virtiotest.PackedWrap - 1)
						} else {
							used++
						}
					}
				}
			}()
			cs := make([]virtio.Chain, batch)
			p.q.DisableNotify()
			sum := 0
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; {
				var k int
				var err error
				if tc.batched {
					k, err = p.q.PopN(cs)
				} else {
					k, err = popEach(p.q, cs)
				}
				if err != nil {
					b.Fatal(err)
				}
				if k == 0 {
					continue
				}
				for i := range k {
					sum += int(cs[i].Out[0].Buf[0])
				}
				if tc.batched {
					err = p.q.PushN(cs[:k], 0)
				} else {
					err = pushEach(p.q, cs[:k], 0)
				}
				if err != nil {
					b.Fatal(err)
				}
				p.q.Publish()
				p.q.NeedNotify()
				n += k
			}
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
			_ = sum
		})
	}
}
