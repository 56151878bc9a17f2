package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// plainResult is what a sequence of frames did to a receive queue.
type plainResult struct {
	written, tooBig int
	err             error
}

// writePlainEach writes frames one WritePlain at a time, as GuestPort.deliver
// did before PeekPlain: a frame too big is dropped alone, anything else that
// does not fit (or an error) stops.
func writePlainEach(rx *virtio.NetRX, frames [][][]byte) plainResult {
	return writeMergedEach(rx, plainFrames(frames))
}

// plainFrames are frames without a header (WritePlain's).
func plainFrames(frames [][][]byte) []mergeFrame {
	out := make([]mergeFrame, len(frames))
	for i, f := range frames {
		out[i].segs = f
	}
	return out
}

// writePlainBatch writes frames as GuestPort.deliver does: runs of frames
// that fit the next one-buffer chains through PeekPlain, PlainFrame and
// CommitPlain, len(bufs) at most long, and every other frame through
// WritePlain. It must do exactly what writePlainEach does.
func writePlainBatch(rx *virtio.NetRX, frames [][][]byte, bufs []virtio.PlainBuf) plainResult {
	r, _ := writePlainBatchN(rx, frames, bufs)
	return r
}

// writePlainBatchN is writePlainBatch that also returns how many of the
// frames written went through PeekPlain/CommitPlain.
func writePlainBatchN(rx *virtio.NetRX, frames [][][]byte, bufs []virtio.PlainBuf) (r plainResult, batched int) {
	return writeBatchOf(rx, len(frames), func(i int) mergeFrame { return mergeFrame{segs: frames[i]} }, bufs)
}

// plainRingState is everything of a receive test ring the device side
// changes: the driver's memory (rings and buffers), the dirty log, and the
// queue's position.
type plainRingState struct {
	mem, log  []byte
	lastAvail uint16
	broken    bool
}

// repeat returns n copies of v.
func repeat[T any](v T, n int) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestNetRXPlainBatch compares the batched one-buffer path
// (PeekPlain/PlainFrame/CommitPlain, falling back to WritePlain) with
// WritePlain one frame at a time, on the same rings and frames: same bytes
// in guest memory (buffers, used ring, avail_event), same dirty log, same
// position, same frames written and dropped.
func TestNetRXPlainBatch(t *testing.T) {
	one := func(n uint32) []uint32 { return []uint32{n} }
	type chain struct {
		in       []uint32
		indirect bool
		out      bool // a device-readable buffer first (a driver bug)
	}
	for _, tc := range []struct {
		name     string
		features uint64
		chains   []chain
		frames   []int // frame sizes; each frame is split in two segments
		batch    int
	}{
		{"all one buffer", virtio.FVersion1, []chain{{in: one(2048)}, {in: one(2048)}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"more frames than chains", virtio.FVersion1, []chain{{in: one(2048)}, {in: one(2048)}}, []int{64, 100, 64, 64}, 64},
		{"batch smaller than frames", virtio.FVersion1 | virtio.FEventIdx, []chain{{in: one(2048)}, {in: one(2048)}, {in: one(2048)}, {in: one(2048)}}, []int{60, 61, 62, 63}, 3},
		{"two-buffer chain in the middle", virtio.FVersion1, []chain{{in: one(2048)}, {in: []uint32{12, 2000}}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"indirect chain in the middle", virtio.FVersion1 | virtio.FIndirectDesc, []chain{{in: one(2048)}, {in: one(2048), indirect: true}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"too small, not mergeable", virtio.FVersion1, []chain{{in: one(2048)}, {in: one(70)}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"exact fit", virtio.FVersion1, []chain{{in: one(76)}, {in: one(75)}}, []int{64, 63}, 64},
		{"too small, mergeable", virtio.FVersion1 | virtio.NetFMrgRxbuf, []chain{{in: one(2048)}, {in: one(70)}, {in: one(2048)}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"mergeable big frame", virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.FEventIdx, []chain{{in: one(100)}, {in: one(100)}, {in: one(100)}, {in: one(2048)}}, []int{250, 64}, 64},
		{"legacy header", 0, []chain{{in: one(2048)}, {in: one(2048)}}, []int{64, 64}, 64},
		{"device-readable chain breaks the queue", virtio.FVersion1, []chain{{in: one(2048)}, {in: one(2048), out: true}, {in: one(2048)}}, []int{64, 64, 64}, 64},
		{"empty ring", virtio.FVersion1, nil, []int{64}, 64},
		{"empty frame", virtio.FVersion1, []chain{{in: one(12)}, {in: one(2048)}}, []int{0, 64}, 64},
		// PeekPlain reads ahead at most 64 chains at a time.
		{"more than a read-ahead", virtio.FVersion1 | virtio.FEventIdx, repeat(chain{in: one(128)}, 100), repeat(64, 90), 100},
		{"two-buffer chain after a read-ahead", virtio.FVersion1, append(append(repeat(chain{in: one(128)}, 70), chain{in: []uint32{12, 100}}), repeat(chain{in: one(128)}, 20)...), repeat(64, 95), 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var frames [][][]byte
			for _, n := range tc.frames {
				frames = append(frames, split(frame(n), n/3+1))
			}
			compareRx(t, tc.features, false, func(p *pair) {
				for _, c := range tc.chains {
					var out [][]byte
					if c.out {
						out = [][]byte{make([]byte, 10)}
					}
					_, err := p.d.AddChain(out, c.in, c.indirect)
					require.NoError(t, err)
				}
			}, func(i int, rx *virtio.NetRX) plainResult {
				if i == 0 {
					return writePlainEach(rx, frames)
				}
				return writePlainBatch(rx, frames, make([]virtio.PlainBuf, tc.batch))
			})
		})
	}
}

// compareRx runs write(0, ...) and write(1, ...) on two receive queues of
// 128 entries set up alike (features, packed, chains added by setup, a
// dirty log on split rings) and requires the same result and state of
// each: frames written and dropped, error, position, broken queue, dirty
// log, and every byte of guest memory (buffers, rings, event indexes).
func compareRx(t *testing.T, features uint64, packed bool, setup func(p *pair), write func(i int, rx *virtio.NetRX) plainResult) {
	t.Helper()
	var states [2]plainRingState
	var results [2]plainResult
	for i := range 2 {
		p := newPair(t, 128, features, virtiotest.DriverOptions{SlotSize: 4096, Packed: packed})
		log := make([]byte, 64)
		if !packed {
			// PeekPlain on a packed ring takes nothing while logging
			// (peekPlainPacked).
			p.q.SetLog(virtio.NewDirtyLog(log))
		}
		setup(p)
		p.d.Publish()
		results[i] = write(i, virtio.NewNetRX(p.q))
		p.q.Publish()
		states[i] = plainRingState{mem: p.buf, log: log, lastAvail: p.q.LastAvail(), broken: p.q.Err() != nil}
	}
	require.Equal(t, results[0].written, results[1].written, "frames written")
	require.Equal(t, results[0].tooBig, results[1].tooBig, "frames too big")
	require.Equal(t, results[0].err, results[1].err)
	require.Equal(t, states[0].lastAvail, states[1].lastAvail)
	require.Equal(t, states[0].broken, states[1].broken)
	require.Equal(t, states[0].log, states[1].log, "dirty log")
	require.True(t, string(states[0].mem) == string(states[1].mem), "guest memory differs")
}

// compareWithEach is compareRx of frames written one at a time
// (writeMergedEach, the reference) against a batch writer, which returns
// its result and how many frames took its path; compareWithEach returns
// that count.
func compareWithEach(t *testing.T, features uint64, packed bool, setup func(p *pair), frames []mergeFrame,
	batch func(rx *virtio.NetRX) (plainResult, int)) (n int) {
	t.Helper()
	compareRx(t, features, packed, setup, func(i int, rx *virtio.NetRX) plainResult {
		if i == 0 {
			return writeMergedEach(rx, frames)
		}
		r, k := batch(rx)
		n = k
		return r
	})
	return n
}

// TestNetRXPlainBroken: PeekPlain takes nothing from a broken queue
// (WritePlain decides there).
func TestNetRXPlainBroken(t *testing.T) {
	bufs := make([]virtio.PlainBuf, 4)
	p := newPair(t, 8, virtio.FVersion1)
	_, err := p.d.AddIn(2048)
	require.NoError(t, err)
	p.d.SetAvailIdx(p.d.AvailIdx() + 100) // more than the queue size: Pop breaks the queue
	rx := virtio.NewNetRX(p.q)
	require.Zero(t, rx.PeekPlain(bufs))
	_, err = rx.WritePlain([][]byte{frame(64)})
	require.ErrorIs(t, err, virtio.ErrBroken)
	require.Zero(t, rx.PeekPlain(bufs))
}

func TestAllocsNetRXPlainBatch(t *testing.T) {
	p := rawPair(t, 256, virtio.FVersion1|virtio.FEventIdx, 2048, true)
	rx := virtio.NewNetRX(p.q)
	bufs := make([]virtio.PlainBuf, 32)
	payload := [][]byte{frame(12), frame(52)}
	frames := make([]mergeFrame, 32)
	// The same frames with a partial checksum header (PlainFrameHdr).
	hdrFrames := make([]mergeFrame, 32)
	for i := range frames {
		frames[i] = mergeFrame{segs: payload}
		hdrFrames[i] = mergeFrame{hdr: &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, segs: payload}
	}
	next := uint16(0)
	withHdr := false
	run := func() {
		for range 32 {
			p.d.AddHead(next % 256)
			next++
		}
		p.d.Publish()
		fs := frames
		if withHdr {
			fs = hdrFrames
		}
		r, _ := writeHdrBatch(rx, fs, bufs)
		if r.written != 32 {
			panic("batch not written")
		}
		p.q.Publish()
		for range 32 {
			p.d.Used()
		}
	}
	run()
	require.Zero(t, testing.AllocsPerRun(100, run))
	withHdr = true
	run()
	require.Zero(t, testing.AllocsPerRun(100, run), "with headers (PlainFrameHdr)")
}

// writeHdrBatch is writePlainBatch for frames that may carry a header
// the guest takes as it is: PlainFrameHdr for those, PlainFrame for the
// others, Write or WritePlain for whatever the batch does not take.
func writeHdrBatch(rx *virtio.NetRX, frames []mergeFrame, bufs []virtio.PlainBuf) (r plainResult, batched int) {
	return writeBatchOf(rx, len(frames), func(i int) mergeFrame { return frames[i] }, bufs)
}

// writeBatchOf is writeHdrBatch over n frames, frame i being at(i) (a
// func, so that writePlainBatchN needs no copy of its frames: the
// allocation tests use it).
func writeBatchOf(rx *virtio.NetRX, n int, at func(i int) mergeFrame, bufs []virtio.PlainBuf) (r plainResult, batched int) {
	for i := 0; i < n; {
		if k := rx.PeekPlain(bufs[:min(n-i, len(bufs))]); k > 0 {
			j := 0
			for ; j < k; j++ {
				f := at(i + j)
				size := 0
				for _, s := range f.segs {
					size += len(s)
				}
				var dst []byte
				var ok bool
				if f.hdr == nil {
					dst, ok = rx.PlainFrame(&bufs[j], size)
				} else {
					dst, ok = rx.PlainFrameHdr(&bufs[j], f.hdr, size)
				}
				if !ok {
					break
				}
				off := 0
				for _, s := range f.segs {
					off += copy(dst[off:], s)
				}
			}
			if j > 0 {
				rx.CommitPlain(bufs[:j])
				r.written += j
				batched += j
				i += j
				continue
			}
		}
		if !writeCounted(rx, at(i), &r) {
			return r, batched
		}
		i++
	}
	return r, batched
}

// TestNetRXPlainFrameHdr compares frames with a partial checksum header
// written through the one-buffer batch (PlainFrameHdr) with Write one
// frame at a time: the same header (num_buffers 1), bytes, used elements
// and dirty log, on split and packed rings, with and without
// num_buffers in the header, plain frames between them.
func TestNetRXPlainFrameHdr(t *testing.T) {
	csum := &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16, NumBuffers: 7}
	valid := &virtio.NetHdr{Flags: virtio.NetHdrFDataValid}
	for _, packed := range []bool{false, true} {
		for _, tc := range []struct {
			name     string
			features uint64
			bufSize  uint32
		}{
			{"v1", virtio.FVersion1, 2048},
			{"mergeable", virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.FEventIdx, 2048},
			{"legacy header", 0, 2048},
			{"exact fit", virtio.FVersion1, 12 + 66},
		} {
			features := tc.features
			if packed {
				if features&virtio.FVersion1 == 0 {
					continue // packed rings are virtio 1 only
				}
				features |= virtio.FRingPacked
			}
			t.Run(map[bool]string{false: "split/", true: "packed/"}[packed]+tc.name, func(t *testing.T) {
				var frames []mergeFrame
				for i := range 12 {
					f := mergeFrame{segs: split(frame(66), 20)}
					switch i % 3 {
					case 0:
						f.hdr = csum
					case 1:
						f.hdr = valid
					}
					frames = append(frames, f)
				}
				frames = append(frames, mergeFrame{hdr: csum, segs: [][]byte{frame(3000)}}) // too big for one buffer
				batched := compareWithEach(t, features, packed, func(p *pair) {
					for range 16 {
						_, err := p.d.AddChain(nil, []uint32{tc.bufSize}, false)
						require.NoError(t, err)
					}
				}, frames, func(rx *virtio.NetRX) (plainResult, int) {
					return writeHdrBatch(rx, frames, make([]virtio.PlainBuf, 8))
				})
				// All 12 small frames, but on a packed ring with
				// EVENT_IDX the first (its device event flags are set
				// by Write first, peekPlainPacked).
				require.GreaterOrEqual(t, batched, 11, "frames through the batch")
				require.EqualValues(t, 7, csum.NumBuffers, "PlainFrameHdr changed the caller's header")
			})
		}
	}
}
