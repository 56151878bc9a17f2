//go:build linux

package datapath

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// shrunkMapping is a 64 KiB virtiotest.ShrinkableMapping, shrunk: every
// access to it faults. It returns the mapping and how often the watch was
// told.
func shrunkMapping(t *testing.T) ([]byte, *int) {
	t.Helper()
	b, told, shrink := virtiotest.ShrinkableMapping(t, 64<<10)
	shrink()
	return b, told
}

// TestSendFromShrunkMemory: frames whose payload is in a sender's memory
// that shrank (the switch copied their heads, then the file went) fault
// while the receiving port copies them. The fault is contained in Send:
// the receiving queue is rewound (nothing half-written is published) and
// stays usable, the frames are dropped as malformed, the sender's mapping
// is told once, and the caller goes on.
func TestSendFromShrunkMemory(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	r.start()
	for range 8 {
		_, err := r.rx.AddIn(2048)
		require.NoError(t, err)
	}
	r.rx.Publish()
	shrunk, told := shrunkMapping(t)
	good := testFrame(200, 1)
	frames := []Frame{frameOf(good[:64], good[64:]), frameOf(good[:64], shrunk[:1000]), frameOf(good[:64], good[64:])}
	r.port.Send(frames)
	require.Equal(t, 1, *told)
	require.EqualValues(t, 3, r.port.Stats().Drops(DropMalformed))
	require.EqualValues(t, 0, r.port.Stats().Drops(DropQueueBroken))
	_, ok := r.rx.Used()
	require.False(t, ok, "a frame of the faulted batch was published")

	r.port.Send([]Frame{frameOf(good[:64], good[64:])})
	e, ok := r.rx.Used()
	require.True(t, ok)
	got := make([]byte, e.Len)
	r.rx.ReadIn(uint16(e.ID), got)
	require.Equal(t, good, got[virtio.NetHdrLen(r.features):])
	require.NoError(t, r.rxq.Err())
}

// TestHoldFromShrunkMemory: the same fault while frames are copied into a
// full receive queue's backlog (backlog.go). The frames held before the
// fault stay held and arrive once the guest adds buffers; the faulting
// frame and the rest of the batch are dropped as malformed; nothing of the
// faulting frame is held.
func TestHoldFromShrunkMemory(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10}, 2048)
	r.start()
	shrunk, told := shrunkMapping(t)
	good := testFrame(200, 1)
	frames := []Frame{frameOf(good[:64], good[64:]), frameOf(good[:64], shrunk[:1000]), frameOf(good[:64], good[64:])}
	r.port.Send(frames) // no buffer: the first is held, the second faults
	require.Equal(t, 1, *told)
	require.EqualValues(t, 2, r.port.Stats().Drops(DropMalformed))
	rx := &r.port.pairs[0].rx
	rx.mu.Lock()
	held, bytes := rx.held.n, rx.held.bytes
	rx.mu.Unlock()
	require.Equal(t, 1, held)
	require.Equal(t, len(good), bytes)

	r.postRX(2, 2048)
	_, got := r.received(1)
	require.Equal(t, good, got[0])
	require.EqualValues(t, 1, r.port.Stats().TxPackets.Load())
}

// TestSendFromShrunkMemoryAfterMidPublish: the fault comes after deliver
// published part of the batch (midPublish): the frames published stay
// delivered and counted, the queue is rewound only to that publication,
// and the faulting frame and the rest are dropped as malformed.
func TestSendFromShrunkMemoryAfterMidPublish(t *testing.T) {
	for _, packed := range []bool{false, true} {
		r := mergeableRig(t, packed, 8192)
		r.postRX(120, 8192)
		shrunk, told := shrunkMapping(t)
		var frames []Frame
		var want [][]byte
		// 8 buffers a frame: 8 frames fill one peek of 64 buffers
		// (mergeRun), then deliver publishes before the next.
		require.GreaterOrEqual(t, 8*60000, midPublish)
		for i := range 8 {
			fr := testFrame(60000, byte(i))
			frames = append(frames, frameOf(fr))
			want = append(want, fr)
		}
		good := testFrame(200, 9)
		frames = append(frames, frameOf(good[:64], shrunk[:20000]), frameOf(good))
		r.port.Send(frames)
		require.Equal(t, 1, *told)
		_, got := r.received(len(want))
		require.Equal(t, want, got, "packed=%v", packed)
		_, more := r.rx.Used()
		require.False(t, more, "nothing after the publication before the fault")
		require.EqualValues(t, 8, r.port.Stats().TxPackets.Load())
		require.EqualValues(t, 2, r.port.Stats().Drops(DropMalformed))

		r.port.Send([]Frame{frameOf(good)})
		_, got = r.received(1)
		require.Equal(t, good, got[0])
		require.NoError(t, r.rxq.Err())
	}
}
