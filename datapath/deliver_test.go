package datapath

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

// mergeableRig returns a started rig whose guest merges receive buffers
// (VIRTIO_NET_F_MRG_RXBUF) of slot bytes, on packed rings if packed.
func mergeableRig(t *testing.T, packed bool, slot uint32) *rig {
	t.Helper()
	f := baseFeatures | virtio.NetFMrgRxbuf
	if packed {
		f |= virtio.FRingPacked
	}
	r := newRig(t, f, GuestPortOptions{}, slot)
	r.start()
	return r
}

// TestGuestPortDeliverMix sends one batch that mixes frames the batched
// one-buffer path takes (no offload metadata, fit one buffer) with frames
// it leaves to NetRX.Write/WritePlain (offload metadata, too big for one
// buffer, malformed): every frame that fits arrives in order, with the
// bytes and header the general path writes, and the drops are counted by
// reason; when the buffers run out the rest is counted as drop_no_buffer.
// Packed rings (virtio.NetRX.PeekPlain's packed twin) deliver the same.
func TestGuestPortDeliverMix(t *testing.T) {
	for _, tc := range []struct{ mrg, packed bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		mrg := tc.mrg
		f := baseFeatures
		if mrg {
			f |= virtio.NetFMrgRxbuf
		}
		if tc.packed {
			f |= virtio.FRingPacked
		}
		r := newRig(t, f, GuestPortOptions{}, 2048)
		r.start()
		r.postRX(7, 2048)
		frames := []Frame{
			frameOf(testFrame(64, 1)),
			frameOf(testFrame(100, 2)[:30], testFrame(100, 2)[30:]),
			{Hdr: virtio.NetHdr{Flags: virtio.NetHdrFDataValid}, Segs: [][]byte{testFrame(80, 3)}, Len: 80}, // offload metadata: Write
			frameOf(testFrame(3000, 4)), // two buffers (mergeable) or too big
			{Hdr: virtio.NetHdr{GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 100}, Segs: [][]byte{testFrame(300, 5)}, Len: 300}, // GSO the guest did not take: malformed
			frameOf(testFrame(60, 6)),
			frameOf(testFrame(1514, 7)),
			frameOf(testFrame(64, 8)),
			frameOf(testFrame(64, 9)),
			frameOf(testFrame(64, 10)),
		}
		r.port.Send(frames)
		// The receiver's 7 buffers take, in order: 1, 2, 3 (by Write), 4
		// (mergeable: in two buffers; else dropped as too big), 6, 7, and
		// without mergeable buffers 8 and 9; then they run out.
		idx := []int{0, 1, 2, 5, 6, 7, 8}
		if mrg {
			idx = []int{0, 1, 2, 3, 5, 6}
		}
		var want [][]byte
		for _, i := range idx {
			want = append(want, flat(frames[i].Segs))
		}
		_, got := r.received(len(want))
		require.Equal(t, want, got)
		_, more := r.rx.Used()
		require.False(t, more, "more used buffers than frames")
		st := r.port.Stats()
		require.EqualValues(t, len(want), st.TxPackets.Load())
		require.EqualValues(t, 1, st.Drops(DropMalformed))
		tooBig := 0
		if !mrg {
			tooBig = 1
		}
		require.EqualValues(t, tooBig, st.Drops(DropTooBig))
		require.EqualValues(t, len(frames)-len(want)-1-tooBig, st.Drops(DropNoBuffer), "the frames after the last buffer")
	}
}

func flat(segs [][]byte) []byte {
	var b []byte
	for _, s := range segs {
		b = append(b, s...)
	}
	return b
}

// TestGuestPortDeliverAfterNoFit sends, into mergeable buffers of 2048
// bytes, plain frames too big for one buffer between small ones and a frame
// with offload metadata: deliver's one-buffer batch peeks
// (virtio.NetRX.PeekPlain) only for runs of frames without offload metadata
// and shorter than one that did not fit a buffer in the same batch; the
// others go over several buffers (mergeRun, virtio.NetRX.MergeFrame) or to
// Write. Every frame arrives, in order, with its bytes, on split and packed
// rings.
func TestGuestPortDeliverAfterNoFit(t *testing.T) {
	for _, packed := range []bool{false, true} {
		r := mergeableRig(t, packed, 2048)
		r.postRX(10, 2048)
		frames := []Frame{
			frameOf(testFrame(3000, 1)), // two buffers: later frames of 3000 or more are not peeked for
			frameOf(testFrame(4000, 2)), // not peeked for: WritePlain, two buffers
			{Hdr: virtio.NetHdr{Flags: virtio.NetHdrFDataValid}, Segs: [][]byte{testFrame(80, 3)}, Len: 80},
			frameOf(testFrame(64, 4)),
			frameOf(testFrame(2500, 5)), // peeked for, does not fit: two buffers
			frameOf(testFrame(64, 6)),
			frameOf(testFrame(100, 7)[:40], testFrame(100, 7)[40:]),
		}
		r.port.Send(frames)
		var want [][]byte
		for _, fr := range frames {
			want = append(want, flat(fr.Segs))
		}
		_, got := r.received(len(want))
		require.Equal(t, want, got, "packed=%v", packed)
		_, more := r.rx.Used()
		require.False(t, more, "more used buffers than frames")
		require.EqualValues(t, len(want), r.port.Stats().TxPackets.Load())
	}
}

// TestGuestPortMergeBuffersShrink: the guest's receive buffers get shorter
// between two deliveries (a Linux guest sizes its mergeable buffers by the
// frames it has seen): the frames still arrive whole, in order, each over
// as many buffers as it needs.
func TestGuestPortMergeBuffersShrink(t *testing.T) {
	for _, packed := range []bool{false, true} {
		r := mergeableRig(t, packed, 4096)
		var want [][]byte
		send := func(seed byte) {
			var frames []Frame
			for i := range 5 {
				fr := testFrame(9000+100*i, seed+byte(i))
				frames = append(frames, frameOf(fr))
				want = append(want, fr)
			}
			r.port.Send(frames)
		}
		r.postRX(15, 4096) // 3 buffers a frame
		send(1)
		r.postRX(64, 1024) // 9-10 buffers a frame
		send(10)
		hdrs, got := r.received(len(want))
		require.Equal(t, want, got, "packed=%v", packed)
		for i, h := range hdrs[5:] {
			require.EqualValues(t, (12+9000+100*i+1023)/1024, h.NumBuffers, "frame %d", 5+i)
		}
		require.EqualValues(t, len(want), r.port.Stats().TxPackets.Load())
	}
}

// TestGuestPortPublishesMidBatch: a batch of large frames is published,
// and the driver notified if it asks, every midPublish bytes, not only at
// its end: 10 frames of 60000 bytes in 8192-byte buffers (8 a peek, 480000
// bytes) are two publications, two calls with notifications by flags
// (every publication asks). With EVENT_IDX the driver that has not moved
// used_event since the first call gets one.
func TestGuestPortPublishesMidBatch(t *testing.T) {
	for _, c := range []struct {
		name     string
		features uint64
		calls    int64
	}{
		{"flags", baseFeatures&^virtio.FEventIdx | virtio.NetFMrgRxbuf, 2},
		{"event-idx", baseFeatures | virtio.NetFMrgRxbuf, 1},
		{"packed-flags", baseFeatures&^virtio.FEventIdx | virtio.NetFMrgRxbuf | virtio.FRingPacked, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.GreaterOrEqual(t, 8*60000, midPublish)
			r := newRig(t, c.features, GuestPortOptions{}, 8192)
			r.start()
			r.postRX(120, 8192)
			calls0 := r.rxCall.n.Load()
			var frames []Frame
			var want [][]byte
			for i := range 10 {
				fr := testFrame(60000, byte(i))
				frames = append(frames, frameOf(fr))
				want = append(want, fr)
			}
			r.port.Send(frames)
			_, got := r.received(len(want))
			require.Equal(t, want, got)
			require.Equal(t, c.calls, r.rxCall.n.Load()-calls0)
		})
	}
}
