package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// rxTwin is one device side of a packed receive queue over its own copy of
// a fuzz-format guest image (regions A, B, C as fuzzMemory lays them out):
// two twins over the same image compare the fast path with the general
// one.
type rxTwin struct {
	backing []byte
	q       *virtio.Queue
	rx      *virtio.NetRX
	log     []byte
}

// packedRxConfig is fuzzPackedConfig with more control bits of ctl[1]:
// 8 drops VIRTIO_F_VERSION_1 (the legacy 10-byte header unless
// MRG_RXBUF), 16 starts the used position one descriptor after the avail
// one (a frontend's SET_VRING_BASE may say anything in range); 32 (read
// by newRxTwin) turns the dirty log on.
func packedRxConfig(ctl []byte) virtio.QueueConfig {
	cfg := fuzzPackedConfig(ctl)
	var c [2]byte
	copy(c[:], ctl)
	if c[1]&8 != 0 {
		cfg.Features &^= virtio.FVersion1
	}
	if c[1]&16 != 0 {
		idx := uint32(cfg.LastAvail&0x7fff) + 1
		w := cfg.LastAvail & 0x8000
		if idx >= uint32(cfg.Size) {
			idx -= uint32(cfg.Size)
			w ^= 0x8000
		}
		cfg.LastUsed = uint16(idx) | w
	}
	return cfg
}

// newRxTwin builds a twin from data (fuzz format: 4 control bytes, then
// the image of region A then B), with the extra features given; nil when
// NewQueue refuses the config.
func newRxTwin(t testing.TB, data []byte, extra ...uint64) *rxTwin {
	tw := &rxTwin{backing: make([]byte, fzASize+fzBSize+fzCSize), log: make([]byte, 8)}
	a, b, c := tw.backing[:fzASize:fzASize], tw.backing[fzASize:fzASize+fzBSize:fzASize+fzBSize], tw.backing[fzASize+fzBSize:]
	n := copy(a, data[4:])
	copy(b, data[4+n:])
	mem, err := virtio.NewMemory([]virtio.Region{
		{GuestPhysAddr: fzA, Size: fzASize, UserAddr: 0x7000_0000, Data: a},
		{GuestPhysAddr: fzB, Size: fzBSize, UserAddr: 0x6000_0000, Data: b},
		{GuestPhysAddr: fzC, Size: fzCSize, UserAddr: 0x5000_0000, Data: c},
	})
	require.NoError(t, err)
	cfg := packedRxConfig(data[:4])
	for _, f := range extra {
		cfg.Features |= f
	}
	q, err := virtio.NewQueue(mem, cfg)
	if err != nil {
		require.ErrorIs(t, err, virtio.ErrBadRing)
		return nil
	}
	if len(data) > 1 && data[1]&32 != 0 {
		q.SetLog(virtio.NewDirtyLog(tw.log))
	}
	tw.q, tw.rx = q, virtio.NewNetRX(q)
	return tw
}

// rxPayload is the payload of step i: 1..1531 bytes (from lens), in one
// piece at even steps and two at odd ones, filled with a pattern of the
// step.
func rxPayload(lens uint64, i int) [][]byte {
	n := 1 + int(lens>>(8*(i%8))&0xff)*6
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*31 + j)
	}
	if i%2 == 0 {
		return [][]byte{p}
	}
	return [][]byte{p[:n/2], p[n/2:]}
}

// requireSameRx fails unless the two twins are in the same state: guest
// memory (ring, event suppression, buffers), positions, error, what Pop
// kept for Rewind and Push, and dirty log.
func requireSameRx(t testing.TB, fast, gen *rxTwin, step string) {
	t.Helper()
	if i := firstDiff(gen.backing, fast.backing); i >= 0 {
		t.Fatalf("%s: guest memory differs at offset %#x: general %#x, fast %#x", step, i, gen.backing[i], fast.backing[i])
	}
	require.Equal(t, gen.q.LastAvail(), fast.q.LastAvail(), "%s: avail position", step)
	require.Equal(t, gen.q.UsedIdx(), fast.q.UsedIdx(), "%s: used position", step)
	require.Equal(t, gen.q.Err() != nil, fast.q.Err() != nil, "%s: broken", step)
	gs, gc := gen.q.PackedBook()
	fs, fc := fast.q.PackedBook()
	require.Equal(t, gs, fs, "%s: shadow", step)
	require.Equal(t, gc, fc, "%s: descriptor counts", step)
	require.Equal(t, gen.log, fast.log, "%s: dirty log", step)
}

// firstDiff returns the first offset where a and b (of one length)
// differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// comparePackedWritePlain runs NetRX.WritePlain (fast path first) on one
// twin and NetRX.Write with a zero header (the general path, which stores
// the same header bytes) on another, step by step until the queue runs out
// or breaks, with a Mark/Rewind every third step and a Publish and
// NeedNotify after every second: both must end every step in the same state
// (TooBig is compared after ok=false only: it says nothing after a
// written frame). It returns how many steps took the fast path (ok, and
// the general path's scratch chain untouched).
func comparePackedWritePlain(t testing.TB, data []byte, lens uint64) (fast int) {
	fa, ge := newRxTwin(t, data), newRxTwin(t, data)
	if fa == nil {
		return 0
	}
	for i := range 2*int(fa.q.Size()) + 2 {
		payload := rxPayload(lens, i)
		mf, mg := fa.q.Mark(), ge.q.Mark()
		fa.rx.FirstChain().Head = 0xffff // the queues here are smaller
		okF, errF := fa.rx.WritePlain(payload)
		if okF && fa.rx.FirstChain().Head == 0xffff {
			fast++
		}
		okG, errG := ge.rx.Write(virtio.NetHdr{}, payload)
		step := "step " + string(rune('0'+i%10))
		require.Equal(t, okG, okF, step)
		require.Equal(t, errG != nil, errF != nil, step)
		if errF != nil {
			require.ErrorIs(t, errF, virtio.ErrBroken)
		}
		if !okF {
			require.Equal(t, ge.rx.TooBig(), fa.rx.TooBig(), step)
		}
		requireSameRx(t, fa, ge, step)
		if errF != nil || !okF && !fa.rx.TooBig() {
			return fast
		}
		if i%3 == 2 {
			fa.q.Rewind(mf)
			ge.q.Rewind(mg)
			requireSameRx(t, fa, ge, step+" rewound")
			// Again, kept this time.
			okF, errF = fa.rx.WritePlain(payload)
			okG, errG = ge.rx.Write(virtio.NetHdr{}, payload)
			require.Equal(t, okG, okF, step)
			require.Equal(t, errG != nil, errF != nil, step)
			requireSameRx(t, fa, ge, step+" again")
		}
		if i%2 == 0 {
			continue // a batch of two frames per Publish
		}
		fa.q.Publish()
		ge.q.Publish()
		nf, ng := fa.q.NeedNotify(), ge.q.NeedNotify()
		require.Equal(t, ng, nf, step+" notify")
		requireSameRx(t, fa, ge, step+" published")
	}
	return fast
}

// packedRxImage lays out a packed ring of size descriptors with the driver
// mock on region A (buffers in A from 0x400 on, B and C as the elems say)
// and returns it in fuzz format with control byte ctl (fuzzPackedConfig,
// packedRxConfig). build returns nothing; descriptors it writes by hand
// are its business.
func packedRxImage(t testing.TB, size uint16, ctl byte, build func(d *virtiotest.Driver)) []byte {
	mem := make([]byte, fzASize+fzBSize)
	d, err := virtiotest.NewDriver(mem[:fzASize], fzA, size, virtiotest.DriverOptions{Packed: true})
	require.NoError(t, err)
	build(d)
	d.Publish()
	return append([]byte{byte(size - 1), ctl, 0x00, 0x80}, mem[:fzASize]...)
}

// TestPackedWritePlainFast compares NetRX.WritePlain's packed fast path
// with the general path (Pop, fill, Push) on the same ring states, and
// checks which buffers take it.
func TestPackedWritePlainFast(t *testing.T) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	w := func(gpa uint64, n uint32) []virtiotest.Elem {
		return []virtiotest.Elem{{GPA: gpa, Len: n, Write: true}}
	}
	const mrg, evidx, indirect, legacy, usedAhead, dirtyLog = 4, 2, 1, 8, 16, 32
	cases := []struct {
		name  string
		size  uint16
		ctl   byte
		lens  uint64 // payload sizes (rxPayload)
		build func(d *virtiotest.Driver)
		fast  int // steps that take the fast path
	}{
		{"one buffer each, fits", 4, 0, 0x0a, func(d *virtiotest.Driver) {
			for i := range 4 {
				_, _ = d.AddElems(w(in(uint64(i)*0x200), 0x200), false)
			}
		}, 4},
		{"mergeable, event idx, legacy flag ignored with mrg", 5, mrg | evidx | legacy, 0x20, func(d *virtiotest.Driver) {
			for i := range 5 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 0x100), false)
			}
		}, 4}, // the first through the general path: it sets the device event flags
		{"legacy header", 3, legacy, 0x01, func(d *virtiotest.Driver) {
			for i := range 3 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 0x100), false)
			}
		}, 3},
		{"exact fit and one byte short", 2, 0, 0x0101010101010101, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 12+7), false) // step 0: 7 bytes
			_, _ = d.AddElems(w(in(0x100), 12+6), false)
		}, 1}, // step 0 fast; then 7 bytes do not fit 6, again and again (too big)
		{"too small, mergeable: merged by the general path", 4, mrg, 0x30, func(d *virtiotest.Driver) {
			for i := range 4 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 100), false)
			}
		}, 0},
		{"two descriptors", 4, 0, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 8, Write: true}, {GPA: in(8), Len: 100, Write: true}}, false)
			_, _ = d.AddElems(w(in(0x100), 0x100), false)
		}, 1},
		{"indirect", 4, indirect, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), true)
			_, _ = d.AddElems(w(in(0x100), 0x100), false)
		}, 1},
		{"device-readable", 4, 0, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 0x100}}, false)
		}, 0},
		{"buffer in another region", 4, 0, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(in(0), 0x100), false)
			_, _ = d.AddElems(w(fzC, 0x100), false)       // another region: the general path
			_, _ = d.AddElems(w(fzC+0x100, 0x100), false) // its region is the last lookup's now
		}, 2},
		{"buffer across regions A and B", 4, 0, 0x20, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(fzB-0x40, 0x100), false)
		}, 0},
		{"buffer over the descriptor ring", 4, 0, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(fzA+0x40, 0x100), false)  // right after the ring of 4: fast
			_, _ = d.AddElems(w(fzA+0x30, 0x100), false)  // over its last descriptor
			_, _ = d.AddElems(w(fzA+0x140, 0x100), false) // fast
		}, 2},
		{"buffer past the memory", 4, 0, 0x02, func(d *virtiotest.Driver) {
			_, _ = d.AddElems(w(fzC+fzCSize-8, 0x100), false)
		}, 0},
		{"buffer id beyond the queue size", 4, 0, 0x02, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: in(0), Len: 0x100, ID: 9, Flags: virtiotest.DescFWrite | virtiotest.DescFAvail})
		}, 0},
		{"zero length", 4, 0, 0x02, func(d *virtiotest.Driver) {
			d.WritePackedDesc(0, virtiotest.PackedDesc{Addr: in(0), Len: 0, ID: 0, Flags: virtiotest.DescFWrite | virtiotest.DescFAvail})
		}, 0},
		// The first buffer: no consumed descriptor for Push to write
		// over (the general path pushes nothing); the others fast.
		{"used position ahead", 4, usedAhead, 0x02, func(d *virtiotest.Driver) {
			for i := range 4 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 0x100), false)
			}
		}, 3},
		{"dirty log: the general path", 3, dirtyLog, 0x01, func(d *virtiotest.Driver) {
			for i := range 3 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 0x100), false)
			}
		}, 0},
		{"event idx, three buffers", 3, evidx, 0x0505, func(d *virtiotest.Driver) {
			for i := range 3 {
				_, _ = d.AddElems(w(in(uint64(i)*0x100), 0x100), false)
			}
		}, 2}, // as above
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := packedRxImage(t, tc.size, tc.ctl, tc.build)
			require.Equal(t, tc.fast, comparePackedWritePlain(t, data, tc.lens))
		})
	}
}

// TestPackedWritePlainWraps: the fast path going round a ring several
// times, the driver returning buffers as it goes, same as the general
// path all the way (wrap counters, first-flags batching, event idx).
func TestPackedWritePlainWraps(t *testing.T) {
	for _, f := range []uint64{0, virtio.FEventIdx, virtio.NetFMrgRxbuf, virtio.FEventIdx | 1<<63} {
		features := virtio.FVersion1 | f&^(1<<63)
		fa, ge := newPackedPair(t, 5, features), newPackedPair(t, 5, features)
		logF, logG := make([]byte, 64), make([]byte, 64)
		if f&(1<<63) != 0 { // with a dirty log (the general path)
			fa.q.SetLog(virtio.NewDirtyLog(logF))
			ge.q.SetLog(virtio.NewDirtyLog(logG))
		}
		rf, rg := virtio.NewNetRX(fa.q), virtio.NewNetRX(ge.q)
		for round := range 7 {
			for _, p := range []*pair{fa, ge} {
				for p.d.FreeDescs() > 0 {
					_, err := p.d.AddIn(200)
					require.NoError(t, err)
				}
				p.d.Publish()
			}
			for i := range 1 + round%5 {
				payload := rxPayload(uint64(10+round+i), 0) // 61..121 bytes
				okF, errF := rf.WritePlain(payload)
				okG, errG := rg.Write(virtio.NetHdr{}, payload)
				require.NoError(t, errF)
				require.NoError(t, errG)
				require.True(t, okF)
				require.True(t, okG)
			}
			requireSamePublished(t, ge, fa, logG, logF, round)
		}
	}
}

// TestAllocsPackedWritePlain: the packed receive fast path allocates
// nothing.
func TestAllocsPackedWritePlain(t *testing.T) {
	p := newPackedPair(t, 256, virtio.FVersion1)
	rx := virtio.NewNetRX(p.q)
	payload := [][]byte{make([]byte, 64)}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := p.d.AddIn(128); err != nil {
			t.Fatal(err)
		}
		p.d.Publish()
		rx.FirstChain().Head = 0xffff
		if ok, err := rx.WritePlain(payload); !ok || err != nil || rx.FirstChain().Head != 0xffff {
			t.Fatal("not the fast path", ok, err)
		}
		p.q.Publish()
		p.q.NeedNotify()
		if _, ok := p.d.Used(); !ok {
			t.Fatal("not used")
		}
	})
	require.Zero(t, allocs)
}

// requireSamePublished publishes both queues of a comparison (want: the
// reference path, got: the path under test) and requires the same
// NeedNotify answer, the same guest memory and dirty log, and the same used
// descriptors seen by the driver.
func requireSamePublished(t *testing.T, want, got *pair, logWant, logGot []byte, round int) {
	t.Helper()
	got.q.Publish()
	want.q.Publish()
	require.Equal(t, want.q.NeedNotify(), got.q.NeedNotify())
	require.Equal(t, want.d.Mem(), got.d.Mem(), "round %d", round)
	require.Equal(t, logWant, logGot)
	for {
		eg, okG := got.d.Used()
		ew, okW := want.d.Used()
		require.Equal(t, okW, okG)
		if !okG {
			break
		}
		require.Equal(t, ew, eg)
	}
}
