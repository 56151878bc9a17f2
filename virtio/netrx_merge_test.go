package virtio_test

import (
	"fmt"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// mergeFrame is one frame of TestNetRXMergeFrame: a scatter list and the
// header it goes with (nil: WritePlain's).
type mergeFrame struct {
	hdr  *virtio.NetHdr
	segs [][]byte
}

// writeMergedEach writes frames one Write (or WritePlain) at a time: a
// frame too big is dropped alone, anything else that does not fit (or an
// error) stops.
func writeMergedEach(rx *virtio.NetRX, frames []mergeFrame) plainResult {
	var r plainResult
	for _, f := range frames {
		if !writeCounted(rx, f, &r) {
			break
		}
	}
	return r
}

// writeCounted writes f with Write (WritePlain without a header) and counts
// it in r as written or too big; it reports whether the caller goes on (not
// after an error or a frame that did not fit for want of buffers).
func writeCounted(rx *virtio.NetRX, f mergeFrame, r *plainResult) bool {
	var ok bool
	var err error
	if f.hdr == nil {
		ok, err = rx.WritePlain(f.segs)
	} else {
		ok, err = rx.Write(*f.hdr, f.segs)
	}
	switch {
	case err != nil:
		r.err = err
		return false
	case ok:
		r.written++
	case rx.TooBig():
		r.tooBig++
	default:
		return false
	}
	return true
}

// writeMergedBatch writes frames as GuestPort.deliver's merged runs do:
// one PeekPlain, as many frames as its buffers hold through MergeFrame,
// one CommitPlain; a frame MergeFrame does not take goes through
// Write/WritePlain. It must do exactly what writeMergedEach does.
func writeMergedBatch(rx *virtio.NetRX, frames []mergeFrame, bufs []virtio.PlainBuf) (r plainResult, merged int) {
	for i := 0; i < len(frames); {
		k := rx.PeekPlain(bufs)
		used, n := 0, 0
		for i+n < len(frames) && used < k {
			u := rx.MergeFrame(bufs[used:k], frames[i+n].hdr, frames[i+n].segs)
			if u == 0 {
				break
			}
			used += u
			n++
		}
		if n > 0 {
			rx.CommitPlain(bufs[:used])
			r.written += n
			merged += n
			i += n
			continue
		}
		if !writeCounted(rx, frames[i], &r) {
			return r, merged
		}
		i++
	}
	return r, merged
}

// TestNetRXMergeFrame compares frames written across several buffers
// through PeekPlain, MergeFrame and CommitPlain with the same frames
// written one Write/WritePlain at a time, on the same rings (split with a
// dirty log, and packed): same bytes in guest memory (buffers, headers with
// num_buffers, used elements, event index), same dirty log, same position,
// same frames written and dropped, the same broken queue.
func TestNetRXMergeFrame(t *testing.T) {
	one := func(n uint32) []uint32 { return []uint32{n} }
	gso := &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	type chain struct {
		in       []uint32
		indirect bool
	}
	const mrg = virtio.FVersion1 | virtio.NetFMrgRxbuf
	for _, tc := range []struct {
		name     string
		features uint64
		chains   []chain
		frames   []int // frame sizes; each frame is split in three segments
		gso      bool  // every other frame with a GSO header
		merged   int   // frames MergeFrame took (split ring)
	}{
		{"one buffer each", mrg, repeat(chain{in: one(2048)}, 3), []int{64, 100, 1500}, false, 3},
		{"several buffers each", mrg | virtio.FEventIdx, repeat(chain{in: one(100)}, 20), []int{250, 88, 89, 400, 0}, true, 5},
		{"exact fits", mrg, repeat(chain{in: one(100)}, 8), []int{88, 188, 288}, true, 3},
		{"header alone in a buffer", mrg, []chain{{in: one(12)}, {in: one(100)}, {in: one(12)}, {in: one(12)}}, []int{100, 0, 0}, false, 3},
		{"not enough buffers", mrg, repeat(chain{in: one(100)}, 5), []int{250, 250, 64}, true, 1},
		{"two-buffer chain in the middle", mrg, []chain{{in: one(100)}, {in: one(100)}, {in: []uint32{50, 50}}, {in: one(100)}, {in: one(100)}}, []int{150, 150, 80}, false, 2},
		{"indirect chain in the middle", mrg | virtio.FIndirectDesc, []chain{{in: one(100)}, {in: one(100), indirect: true}, {in: one(100)}, {in: one(100)}}, []int{150, 150}, true, 1},
		{"first buffer shorter than the header breaks the queue", mrg, []chain{{in: one(100)}, {in: one(8)}, {in: one(100)}}, []int{60, 60}, false, 1},
		{"large frames, mixed buffers", mrg | virtio.FEventIdx, append(repeat(chain{in: one(4096)}, 40), repeat(chain{in: one(1536)}, 40)...), []int{65536, 1500, 65536, 9000, 64}, true, 5},
		{"more than a read-ahead", mrg, repeat(chain{in: one(128)}, 120), repeat(500, 25), false, 25},
		{"too few buffers posted", mrg, repeat(chain{in: one(64)}, 8), []int{1000, 64}, false, 0},
		{"legacy header", virtio.NetFMrgRxbuf, repeat(chain{in: one(100)}, 6), []int{150, 150}, false, 2},
	} {
		for _, packed := range []bool{false, true} {
			if packed && tc.features&virtio.FIndirectDesc != 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/packed=%v", tc.name, packed), func(t *testing.T) {
				features := tc.features
				if packed {
					features |= virtio.FRingPacked
				}
				var frames []mergeFrame
				for j, n := range tc.frames {
					f := mergeFrame{segs: split(frame(n), n/3+1)}
					if tc.gso && j%2 == 1 {
						f.hdr = gso
					}
					frames = append(frames, f)
				}
				merged := compareWithEach(t, features, packed, func(p *pair) {
					for _, c := range tc.chains {
						_, err := p.d.AddChain(nil, c.in, c.indirect)
						require.NoError(t, err)
					}
				}, frames, func(rx *virtio.NetRX) (plainResult, int) {
					return writeMergedBatch(rx, frames, make([]virtio.PlainBuf, 64))
				})
				if !packed {
					require.Equal(t, tc.merged, merged, "frames through MergeFrame")
				}
			})
		}
	}
}

// TestNetRXMergeFrameRefuses: MergeFrame writes nothing without
// VIRTIO_NET_F_MRG_RXBUF, with no buffers, or when the buffers are too few.
func TestNetRXMergeFrameRefuses(t *testing.T) {
	bufs := make([]virtio.PlainBuf, 8)
	for _, tc := range []struct {
		name     string
		features uint64
		n        int
	}{
		{"not mergeable", virtio.FVersion1, 64},
		{"too few buffers", virtio.FVersion1 | virtio.NetFMrgRxbuf, 2000},
	} {
		p := newPair(t, 8, tc.features, virtiotest.DriverOptions{SlotSize: 256})
		for range 3 {
			_, err := p.d.AddIn(256)
			require.NoError(t, err)
		}
		p.d.Publish()
		rx := virtio.NewNetRX(p.q)
		before := append([]byte(nil), p.buf...)
		k := rx.PeekPlain(bufs)
		require.Equal(t, 3, k, tc.name)
		require.Zero(t, rx.MergeFrame(bufs[:k], nil, [][]byte{frame(tc.n)}), tc.name)
		require.Zero(t, rx.MergeFrame(bufs[:0], nil, [][]byte{frame(10)}), tc.name)
		require.True(t, string(before) == string(p.buf), "%s: guest memory written", tc.name)
	}
}

// FuzzPackedMergeFrame: on any packed ring a guest can write (the twins of
// FuzzPackedPlainBatch, with VIRTIO_NET_F_MRG_RXBUF), frames written
// through PeekPlain, MergeFrame and CommitPlain leave the queue and guest
// memory exactly as Write/WritePlain one frame at a time.
func FuzzPackedMergeFrame(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	for _, s := range []struct {
		size uint16
		ctl  byte
		lens uint64
		n    uint64 // buffer size
	}{
		{4, 4, 0x0a, 0x80},
		{7, 4 | 2, 0x3020, 0x40},
		{6, 4, 0x0202, 0x20},
	} {
		data := packedRxImage(f, s.size, s.ctl, func(d *virtiotest.Driver) {
			for i := range int(s.size) {
				_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * s.n), Len: uint32(s.n), Write: true}}, false)
			}
		})
		f.Add(data[:4+0x600], s.lens)
	}
	gso := &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 100, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	f.Fuzz(func(t *testing.T, data []byte, lens uint64) {
		if len(data) < 4 {
			return
		}
		ba, ea := newRxTwin(t, data, virtio.NetFMrgRxbuf), newRxTwin(t, data, virtio.NetFMrgRxbuf)
		if ba == nil {
			return
		}
		bufs := make([]virtio.PlainBuf, 64)
		step := 0
		for round := range 2*int(ba.q.Size()) + 2 {
			frames := make([]mergeFrame, 1+round%3)
			for i := range frames {
				frames[i] = mergeFrame{segs: rxPayload(lens, step)}
				if step%3 == 1 {
					frames[i].hdr = gso
				}
				step++
			}
			name := fmt.Sprintf("round %d", round)
			rb, _ := writeMergedBatch(ba.rx, frames, bufs)
			re := writeMergedEach(ea.rx, frames)
			requireSamePlain(t, re, rb, name)
			requireSameRx(t, ba, ea, name)
			if rb.err != nil || rb.written+rb.tooBig < len(frames) {
				return
			}
			if round%2 == 1 {
				ba.q.Publish()
				ea.q.Publish()
				require.Equal(t, ea.q.NeedNotify(), ba.q.NeedNotify(), name+" notify")
				requireSameRx(t, ba, ea, name+" published")
			}
		}
	})
}
