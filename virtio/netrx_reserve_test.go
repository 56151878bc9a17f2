package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// newResPair is a queue of 16 with buffer slots of 16 KiB.
func newResPair(t *testing.T, packed bool, feat uint64) *pair {
	o := virtiotest.DriverOptions{SlotSize: 16 << 10, Packed: packed}
	if packed {
		feat |= virtio.FRingPacked
	}
	return newPair(t, 16, feat, o)
}

// consumed is how many chains q has taken (its last_avail without the
// packed wrap counter).
func consumed(q *virtio.Queue) uint16 { return q.LastAvail() &^ 0x8000 }

func TestNetRXReserveCommit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mergeable bool
		chains    [][]uint32
		room      int
		frame     int
		head      int      // bytes the caller copies and changes
		used      []uint32 // used lengths, one per chain used
	}{
		{"one chain", false, [][]uint32{{4096}}, 2000, 1500, 128, []uint32{1512}},
		{"one chain of pages", false, [][]uint32{{12, 1000, 1000, 1000}}, 2900, 2500, 128, []uint32{2512}},
		{"mergeable, frame in three", true, [][]uint32{{1000}, {1000}, {1000}, {1000}, {1000}}, 3900, 2500, 128, []uint32{1000, 1000, 512}},
		{"mergeable, head across two chains", true, [][]uint32{{100}, {100}, {2000}}, 2100, 1000, 128, []uint32{100, 100, 812}},
		{"mergeable, multi-buffer chains", true, [][]uint32{{12, 50}, {30, 30}, {4000}}, 3000, 500, 90, []uint32{62, 60, 390}},
		{"mergeable, one chain used", true, [][]uint32{{16384}, {16384}, {16384}, {16384}, {16384}}, 65535, 1514, 128, []uint32{1526}},
	} {
		for _, packed := range []bool{false, true} {
			name := tc.name
			if packed {
				name += "/packed"
			}
			t.Run(name, func(t *testing.T) {
				feat := virtio.FVersion1
				if tc.mergeable {
					feat |= virtio.NetFMrgRxbuf
				}
				p := newResPair(t, packed, feat)
				rx := virtio.NewNetRX(p.q)
				heads := addChains(t, p.d, tc.chains)
				bufs, ok, err := rx.Reserve(tc.room, nil)
				require.NoError(t, err)
				require.True(t, ok)
				require.True(t, rx.Reserved())
				f := frame(tc.frame)
				tail := virtiotest.MustReadv(t, bufs, f, tc.head)
				// The caller decides on its copy of the head and changes it
				// (the router's NAT rewrite).
				head := append([]byte(nil), f[:tc.head]...)
				for i := range head {
					head[i] ^= 0x5a
				}
				want := append(append([]byte(nil), head...), f[tc.head:]...)
				// A leading segment of zero bytes and one split head: both
				// are the caller's memory.
				segs := append([][]byte{{}, head[:tc.head/2], head[tc.head/2:]}, tail...)
				hdr := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}
				require.True(t, rx.CommitReserved(&hdr, segs))
				require.False(t, rx.Reserved())
				took := len(tc.used) // split: chains; packed: descriptors
				if packed {
					took = 0
					for _, c := range tc.chains[:len(tc.used)] {
						took += len(c)
					}
				}
				require.Equal(t, uint16(took), consumed(p.q), "chains not used are given back")
				p.q.Publish()
				all := usedChains(t, p.d, heads, tc.used)
				var h virtio.NetHdr
				h.Decode(all)
				wantHdr := hdr
				wantHdr.NumBuffers = uint16(len(tc.used))
				require.Equal(t, wantHdr, h)
				require.Equal(t, want, all[12:])
				// The chains given back are the next ones written.
				if len(tc.used) < len(tc.chains) {
					ok, err := rx.WritePlain([][]byte{frame(20)})
					require.NoError(t, err)
					require.True(t, ok)
					p.q.Publish()
					e, ok := p.d.Used()
					require.True(t, ok)
					require.Equal(t, uint32(heads[len(tc.used)]), e.ID)
				}
			})
		}
	}
}

func TestNetRXReserveRefusals(t *testing.T) {
	for _, packed := range []bool{false, true} {
		newQ := func(feat uint64) *pair { return newResPair(t, packed, feat) }
		t.Run("not enough room", func(t *testing.T) {
			p := newQ(virtio.FVersion1 | virtio.NetFMrgRxbuf)
			rx := virtio.NewNetRX(p.q)
			for range 3 {
				_, err := p.d.AddIn(1000)
				require.NoError(t, err)
			}
			p.d.Publish()
			_, ok, err := rx.Reserve(3000, nil)
			require.NoError(t, err)
			require.False(t, ok)
			require.False(t, rx.Reserved())
			require.Equal(t, uint16(0), consumed(p.q), "nothing consumed")
			_, ok, err = rx.Reserve(2988, nil)
			require.NoError(t, err)
			require.True(t, ok)
			rx.CancelReserved()
			require.False(t, rx.Reserved())
			require.Equal(t, uint16(0), consumed(p.q), "cancel gives every chain back")
		})
		t.Run("one chain too small without mergeable buffers", func(t *testing.T) {
			p := newQ(virtio.FVersion1)
			rx := virtio.NewNetRX(p.q)
			for range 2 {
				_, err := p.d.AddIn(1000)
				require.NoError(t, err)
			}
			p.d.Publish()
			_, ok, err := rx.Reserve(1500, nil)
			require.NoError(t, err)
			require.False(t, ok)
			require.Equal(t, uint16(0), consumed(p.q))
		})
		t.Run("header split over descriptors", func(t *testing.T) {
			p := newQ(virtio.FVersion1)
			rx := virtio.NewNetRX(p.q)
			_, err := p.d.AddIn(6, 6, 3000)
			require.NoError(t, err)
			p.d.Publish()
			_, ok, err := rx.Reserve(1500, nil)
			require.NoError(t, err)
			require.False(t, ok, "CommitReserved stores the header in one buffer")
			require.Equal(t, uint16(0), consumed(p.q))
		})
		t.Run("mergeable chain shorter than the header", func(t *testing.T) {
			p := newQ(virtio.FVersion1 | virtio.NetFMrgRxbuf)
			rx := virtio.NewNetRX(p.q)
			_, err := p.d.AddIn(8)
			require.NoError(t, err)
			p.d.Publish()
			_, ok, err := rx.Reserve(100, nil)
			require.ErrorIs(t, err, virtio.ErrBadChain)
			require.False(t, ok)
		})
		t.Run("frames not in place", func(t *testing.T) {
			p := newQ(virtio.FVersion1 | virtio.NetFMrgRxbuf)
			rx := virtio.NewNetRX(p.q)
			for range 4 {
				_, err := p.d.AddIn(1000)
				require.NoError(t, err)
			}
			p.d.Publish()
			bufs, ok, err := rx.Reserve(3000, nil)
			require.NoError(t, err)
			require.True(t, ok)
			f := frame(2000)
			tail := virtiotest.MustReadv(t, bufs, f, 100)
			copied := append([]byte(nil), f...)
			shifted := append([][]byte{f[:99]}, tail[0][1:])
			shifted = append(shifted, tail[1:]...)
			gap := append([][]byte{f[:100], tail[0]}, tail[2:]...)
			for name, segs := range map[string][][]byte{
				"all in the caller's memory": {f[:100], f[100:]},
				"a copy":                     {copied},
				"shifted by one":             shifted,
				"a buffer skipped":           gap,
				"in place, then a copy": append(append([][]byte{f[:100]}, tail[:1]...),
					copied[100+len(tail[0]):]),
			} {
				require.False(t, rx.CommitReserved(nil, segs), name)
				require.True(t, rx.Reserved(), name)
			}
			p.q.Publish()
			_, ok = p.d.Used()
			require.False(t, ok, "nothing pushed")
			require.True(t, rx.CommitReserved(nil, append([][]byte{f[:100]}, tail...)))
		})
	}
}

// FuzzNetRXReserve: on any ring a guest can write, Reserve hands out only
// guest memory of the regions (never the header's bytes), at least room
// bytes of it or nothing; a frame read into the buffers commits with its
// head copied and the rest in place; a cancelled reservation gives every
// chain back; a guest error breaks the queue, nothing panics.
func FuzzNetRXReserve(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	f.Add(fuzzSeed(f, 8, 4, func(d *virtiotest.Driver) {
		for i := range 6 {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * 100), Len: 100, Write: true}}, false)
		}
	}), uint16(300), byte(0))
	f.Add(fuzzSeed(f, 4, 0, func(d *virtiotest.Driver) {
		_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 40, Write: true}, {GPA: fzB - 8, Len: 300, Write: true}}, false)
	}), uint16(200), byte(1))
	f.Fuzz(func(t *testing.T, data []byte, room uint16, cancel byte) {
		if len(data) < 4 {
			return
		}
		cfg := fuzzConfig(data[:4])
		regions, mem := fuzzMemory(data[4:])
		q, err := virtio.NewQueue(mem, cfg)
		require.NoError(t, err)
		rx := virtio.NewNetRX(q)
		var bufs [][]byte
		for round := range 4 {
			start := q.LastAvail()
			var ok bool
			bufs, ok, err = rx.Reserve(int(room), bufs)
			if err != nil {
				require.ErrorIs(t, err, virtio.ErrBroken)
				require.False(t, rx.Reserved())
				return
			}
			if !ok {
				require.False(t, rx.Reserved())
				require.Equal(t, start, q.LastAvail(), "a refused Reserve consumes nothing")
				return
			}
			total := 0
			for _, b := range bufs {
				require.NotEmpty(t, b)
				inRegion := false
				for _, r := range regions {
					for off := range r.Data {
						if &r.Data[off] == &b[0] {
							require.LessOrEqual(t, off+len(b), len(r.Data))
							inRegion = true
							break
						}
					}
				}
				require.True(t, inRegion, "a reserved buffer outside guest memory")
				total += len(b)
			}
			require.GreaterOrEqual(t, total, int(room))
			if cancel>>round&1 != 0 {
				rx.CancelReserved()
				require.Equal(t, start, q.LastAvail(), "cancel gives every chain back")
				continue
			}
			n := int(room)
			fr := frame(n)
			tail := virtiotest.MustReadv(t, bufs, fr, min(n, 20))
			segs := append([][]byte{fr[:min(n, 20)]}, tail...)
			if len(tail) == 0 {
				require.False(t, rx.CommitReserved(nil, segs))
				rx.CancelReserved()
				continue
			}
			require.True(t, rx.CommitReserved(nil, segs))
			q.Publish()
		}
	})
}
