package virtio_test

import (
	"fmt"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// comparePackedPlainBatch runs frames through PeekPlain/PlainFrame (or
// PlainFrameHdr for every third, which has a partial checksum header)/
// CommitPlain (writeHdrBatch, at most batch per PeekPlain) on one twin
// and through WritePlain (writePlainPacked, which FuzzPackedWritePlain
// compares with the general path) or Write one at a time on another,
// in rounds of 1..4 frames, until the queue runs out or breaks, with a
// Mark/Rewind every third round (and the round again) and a Publish and
// NeedNotify after every second: both must end every round in the same
// state (requireSameRx) with the same results. It returns how many frames
// went through the batch.
func comparePackedPlainBatch(t testing.TB, data []byte, lens uint64, batch int) (batched int) {
	ba, ea := newRxTwin(t, data), newRxTwin(t, data)
	if ba == nil {
		return 0
	}
	bufs := make([]virtio.PlainBuf, batch)
	csum := &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 14, CsumOffset: 6}
	step := 0
	for round := range 2*int(ba.q.Size()) + 2 {
		// Every third frame with a partial checksum header
		// (PlainFrameHdr in the batch, Write alone).
		frames := make([]mergeFrame, 1+round%4)
		for i := range frames {
			frames[i].segs = rxPayload(lens, step)
			if step%3 == 2 {
				frames[i].hdr = csum
			}
			step++
		}
		name := fmt.Sprintf("round %d", round)
		mb, me := ba.q.Mark(), ea.q.Mark()
		rb, nb := writeHdrBatch(ba.rx, frames, bufs)
		re := writeMergedEach(ea.rx, frames)
		batched += nb
		requireSamePlain(t, re, rb, name)
		requireSameRx(t, ba, ea, name)
		if round%3 == 2 && rb.err == nil {
			ba.q.Rewind(mb)
			ea.q.Rewind(me)
			requireSameRx(t, ba, ea, name+" rewound")
			rb, _ = writeHdrBatch(ba.rx, frames, bufs)
			re = writeMergedEach(ea.rx, frames)
			requireSamePlain(t, re, rb, name+" again")
			requireSameRx(t, ba, ea, name+" again")
		}
		if rb.err != nil || rb.written+rb.tooBig < len(frames) {
			return batched
		}
		if round%2 == 0 {
			continue
		}
		ba.q.Publish()
		ea.q.Publish()
		require.Equal(t, ea.q.NeedNotify(), ba.q.NeedNotify(), name+" notify")
		requireSameRx(t, ba, ea, name+" published")
	}
	return batched
}

func requireSamePlain(t testing.TB, each, batch plainResult, step string) {
	t.Helper()
	require.Equal(t, each.written, batch.written, "%s: frames written", step)
	require.Equal(t, each.tooBig, batch.tooBig, "%s: frames too big", step)
	require.Equal(t, each.err != nil, batch.err != nil, "%s: error", step)
}

// TestPackedPlainBatch compares the batched receive path on packed rings
// with WritePlain one frame at a time on the same ring states, and checks
// how many frames the batch takes.
func TestPackedPlainBatch(t *testing.T) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	w := func(gpa uint64, n uint32) []virtiotest.Elem {
		return []virtiotest.Elem{{GPA: gpa, Len: n, Write: true}}
	}
	each := func(n int, size uint32) func(d *virtiotest.Driver) {
		return func(d *virtiotest.Driver) {
			for i := range n {
				_, _ = d.AddElems(w(in(uint64(i)*0x200), size), false)
			}
		}
	}
	const mrg, evidx, indirect, legacy, usedAhead, dirtyLog = 4, 2, 1, 8, 16, 32
	cases := []struct {
		name    string
		size    uint16
		ctl     byte
		lens    uint64
		batch   int
		build   func(d *virtiotest.Driver)
		batched int
	}{
		{"one buffer each", 7, 0, 0x0a, 64, each(7, 0x200), 7},
		{"batch of one", 5, 0, 0x0a, 1, each(5, 0x200), 5},
		{"batch of two", 7, 0, 0x0a, 2, each(7, 0x200), 7},
		{"legacy header", 4, legacy, 0x01, 64, each(4, 0x100), 4},
		{"mergeable, event idx", 6, mrg | evidx, 0x20, 64, each(6, 0x100), 5}, // the first sets the event flags
		{"event idx, mark and rewind", 7, evidx, 0x0505, 3, each(7, 0x100), 6},
		{"dirty log: never", 4, dirtyLog, 0x01, 64, each(4, 0x100), 0},
		// The first buffer: no consumed descriptor for Push to write over
		// (writePlainPacked leaves it to the general path); the others.
		{"used position ahead", 4, usedAhead, 0x02, 64, each(4, 0x100), 3},
		{"exact fit and one byte short", 3, 0, 0x0101010101010101, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 12+7), false)
			_, _ = d.AddElems(w(in(0x100), 12+6), false)
			_, _ = d.AddElems(w(in(0x200), 0x100), false)
		}, 1},
		{"too small, mergeable", 4, mrg, 0x30, 64, each(4, 100), 0},
		{"two descriptors in the middle", 5, 0, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 8, Write: true}, {GPA: in(0x108), Len: 100, Write: true}}, false)
			_, _ = d.AddElems(w(in(0x200), 0x100), false)
		}, 2},
		{"indirect in the middle", 4, indirect, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems(w(in(0x100), 0x100), true)
			_, _ = d.AddElems(w(in(0x200), 0x100), false)
		}, 2},
		{"device-readable in the middle", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0x100), Len: 0x100}}, false)
		}, 1},
		{"buffer in another region", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems(w(fzC, 0x100), false)
			_, _ = d.AddElems(w(fzC+0x100, 0x100), false)
		}, 2},
		{"buffer across regions", 4, 0, 0x20, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(fzB-0x40, 0x100), false)
		}, 0},
		// Size 4: the descriptor ring is fzA..+0x40, the driver and
		// device event suppression structures +0x40 and +0x44.
		{"buffer over the device event structure", 4, evidx, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems(w(fzA+0x40, 0x100), false)
			_, _ = d.AddElems(w(in(0x200), 0x100), false)
			_, _ = d.AddElems(w(in(0x300), 0x100), false)
		}, 2},
		{"buffer over the descriptor ring", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(fzA+0x48, 0x100), false)
			_, _ = d.AddElems(w(fzA+0x30, 0x100), false)
			_, _ = d.AddElems(w(fzA+0x140, 0x100), false)
		}, 2},
		{"buffer id beyond the queue size", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			d.WritePackedDesc(1, virtiotest.PackedDesc{Addr: in(0x100), Len: 0x100, ID: 9, Flags: virtiotest.DescFWrite | virtiotest.DescFAvail})
		}, 1},
		{"zero length", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: in(0), Len: 0, ID: 0, Flags: virtiotest.DescFWrite | virtiotest.DescFAvail})
		}, 0},
		{"duplicate buffer ids", 4, 0, 0x02, 64, func(d *virtiotest.Driver) {
			for i := range 3 {
				d.WritePackedDesc(uint16(i), virtiotest.PackedDesc{Addr: in(uint64(i) * 0x100), Len: 0x100, ID: 1, Flags: virtiotest.DescFWrite | virtiotest.DescFAvail | 0x40})
			}
		}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := packedRxImage(t, tc.size, tc.ctl, tc.build)
			require.Equal(t, tc.batched, comparePackedPlainBatch(t, data, tc.lens, tc.batch))
		})
	}
}

// TestPackedPlainBatchWraps: the batch going round rings of odd sizes many
// times, the driver refilling as it goes (wrap counters of both sides
// flipping inside batches), same as WritePlain one frame at a time all the
// way: guest memory, used descriptors the driver gets, notifications,
// dirty log.
func TestPackedPlainBatchWraps(t *testing.T) {
	for _, f := range []uint64{0, virtio.FEventIdx, virtio.NetFMrgRxbuf, virtio.FEventIdx | 1<<63} {
		for _, size := range []uint16{5, 8} {
			features := virtio.FVersion1 | f&^(1<<63)
			ba, ea := newPackedPair(t, size, features), newPackedPair(t, size, features)
			logB, logE := make([]byte, 64), make([]byte, 64)
			if f&(1<<63) != 0 { // with a dirty log: never batched
				ba.q.SetLog(virtio.NewDirtyLog(logB))
				ea.q.SetLog(virtio.NewDirtyLog(logE))
			}
			rb, re := virtio.NewNetRX(ba.q), virtio.NewNetRX(ea.q)
			bufs := make([]virtio.PlainBuf, 3)
			batched := 0
			for round := range 11 {
				for _, p := range []*pair{ba, ea} {
					for p.d.FreeDescs() > 0 {
						_, err := p.d.AddIn(200)
						require.NoError(t, err)
					}
					p.d.Publish()
				}
				frames := make([][][]byte, 1+round%int(size))
				for i := range frames {
					frames[i] = rxPayload(uint64(10+round+i), 0) // 61..121 bytes
				}
				b, nb := writePlainBatchN(rb, frames, bufs)
				e := writePlainEach(re, frames)
				require.NoError(t, b.err)
				require.NoError(t, e.err)
				require.Equal(t, len(frames), b.written)
				require.Equal(t, len(frames), e.written)
				batched += nb
				requireSamePublished(t, ea, ba, logE, logB, round)
			}
			switch {
			case f&(1<<63) != 0:
				require.Zero(t, batched)
			case f&virtio.FEventIdx != 0: // the first frame sets the event flags
				require.Equal(t, sumRounds(11, int(size))-1, batched)
			default:
				require.Equal(t, sumRounds(11, int(size)), batched)
			}
		}
	}
}

func sumRounds(rounds, size int) int {
	n := 0
	for r := range rounds {
		n += 1 + r%size
	}
	return n
}

// TestAllocsPackedPlainBatch: the packed batch allocates nothing and
// takes every frame.
func TestAllocsPackedPlainBatch(t *testing.T) {
	p := newPackedPair(t, 256, virtio.FVersion1|virtio.FEventIdx)
	rx := virtio.NewNetRX(p.q)
	bufs := make([]virtio.PlainBuf, 32)
	frames := make([][][]byte, 32)
	for i := range frames {
		frames[i] = [][]byte{frame(12), frame(52)}
	}
	run := func() {
		for range 32 {
			if _, err := p.d.AddIn(128); err != nil {
				panic(err)
			}
		}
		p.d.Publish()
		r := writePlainBatch(rx, frames, bufs)
		if r.written != 32 || r.err != nil {
			panic("batch not written")
		}
		p.q.Publish()
		p.q.NeedNotify()
		for range 32 {
			if _, ok := p.d.Used(); !ok {
				panic("not used")
			}
		}
	}
	run()
	require.Zero(t, testing.AllocsPerRun(100, run))
	run()
	require.Equal(t, 32, writePlainBatchCount(rx, p, frames, bufs))
}

// writePlainBatchCount fills 32 buffers and returns how many of 32 frames
// the batch took.
func writePlainBatchCount(rx *virtio.NetRX, p *pair, frames [][][]byte, bufs []virtio.PlainBuf) int {
	for range len(frames) {
		_, _ = p.d.AddIn(128)
	}
	p.d.Publish()
	_, n := writePlainBatchN(rx, frames, bufs)
	p.q.Publish()
	for range len(frames) {
		p.d.Used()
	}
	return n
}

// FuzzPackedPlainBatch plays a hostile driver on a packed receive queue
// (any ring contents, positions, features, frame sizes, batch sizes): the
// batched receive path and WritePlain one frame at a time must leave the
// same guest memory, positions, bookkeeping and dirty log after every
// round, Rewinds included, and never panic.
func FuzzPackedPlainBatch(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	for _, s := range []struct {
		size uint16
		ctl  byte
		lens uint64
		elem func(i int) []virtiotest.Elem
	}{
		{4, 0, 0x0a, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x80), Len: 0x80, Write: true}}
		}},
		{5, 6, 0x3020, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x40), Len: 0x40, Write: true}}
		}},
		{7, 2, 0x0202, func(i int) []virtiotest.Elem {
			if i == 3 {
				return []virtiotest.Elem{{GPA: in(uint64(i) * 0x80), Len: 8, Write: true}, {GPA: in(uint64(i)*0x80 + 8), Len: 0x78, Write: true}}
			}
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x80), Len: 0x80, Write: true}}
		}},
		{7, 8 | 16, 0x0202, func(i int) []virtiotest.Elem {
			return []virtiotest.Elem{{GPA: in(uint64(i) * 0x20), Len: 0x20, Write: true}}
		}},
	} {
		data := packedRxImage(f, s.size, s.ctl, func(d *virtiotest.Driver) {
			for i := range int(s.size) {
				_, _ = d.AddElems(s.elem(i), s.ctl&1 != 0 && i == 1)
			}
		})
		f.Add(data[:4+0x600], s.lens, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, lens uint64, batch uint8) {
		if len(data) < 4 {
			return
		}
		comparePackedPlainBatch(t, data, lens, 1+int(batch%8))
	})
}

// TestPackedPlainBatchOutstanding: with buffers popped and not pushed, the
// used descriptors of a batch go over their slots; with a whole ring
// outstanding but one, the first used descriptor lands on the slot the
// next buffer is read from (whose flags, waiting for Publish, still say
// available): WritePlain one frame at a time then reads what the previous
// frame wrote there, and the batch must too.
func TestPackedPlainBatchOutstanding(t *testing.T) {
	for _, size := range []uint16{4, 5} {
		for popped := range int(size) {
			t.Run(fmt.Sprintf("size %d popped %d", size, popped), func(t *testing.T) {
				ba, ea := newPackedPair(t, size, virtio.FVersion1), newPackedPair(t, size, virtio.FVersion1)
				rb, re := virtio.NewNetRX(ba.q), virtio.NewNetRX(ea.q)
				var c virtio.Chain
				for _, p := range []*pair{ba, ea} {
					for p.d.FreeDescs() > 0 {
						_, err := p.d.AddIn(200)
						require.NoError(t, err)
					}
					p.d.Publish()
					for range popped {
						ok, err := p.q.Pop(&c)
						require.True(t, ok)
						require.NoError(t, err)
					}
					if popped == int(size)-1 {
						// A driver's bug: the slot of the first popped
						// buffer made available again for the next round
						// (AVAIL and USED flipped) while it is outstanding.
						p.d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: memGPA + 0xf0000, Len: 0x200, ID: 1, Flags: virtiotest.DescFWrite | virtiotest.DescFUsed})
					}
				}
				frames := make([][][]byte, 2*size)
				for i := range frames {
					frames[i] = rxPayload(uint64(10+i), 0)
				}
				b, e := writePlainBatch(rb, frames, make([]virtio.PlainBuf, 8)), writePlainEach(re, frames)
				requireSamePlain(t, e, b, "frames")
				require.Equal(t, ea.q.LastAvail(), ba.q.LastAvail())
				require.Equal(t, ea.q.UsedIdx(), ba.q.UsedIdx())
				require.Equal(t, ea.d.Mem(), ba.d.Mem())
			})
		}
	}
}
