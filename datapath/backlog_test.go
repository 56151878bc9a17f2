package datapath

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestBacklogRing drives a backlog's byte and entry rings with frames of
// random sizes, added and written out in random amounts, against a model
// (a slice of the frames held): every frame held comes out in order with
// its bytes and header, no two held frames share a byte of buf, the buffer
// only grows (from backlogMinBuf, up to the size) until released, and a
// frame is refused only when the entries or the size run out, or the buffer
// has all of the size and no room in one piece behind the oldest frame.
func TestBacklogRing(t *testing.T) {
	for _, size := range []int{1 << 10, 4000, 64 << 10, 1 << 20} {
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		b := &backlog{size: size}
		var model [][]byte
		var hdrs []virtio.NetHdr
		seq, wrappedSteps, refused, grew := 0, 0, 0, 0
		for step := 0; step < 20000; step++ {
			if b.wrapped {
				wrappedSteps++
			}
			before := len(b.buf)
			if rng.IntN(3) > 0 { // add one
				n := 1 + rng.IntN(size/3)
				if rng.IntN(8) == 0 {
					n = 1 + rng.IntN(size) // now and then a big one
				}
				fr := make([]byte, n)
				for i := range fr {
					fr[i] = byte(seq + i)
				}
				h := virtio.NetHdr{GSOSize: uint16(seq), NumBuffers: 9}
				seq++
				off, ok := b.place(n)
				require.LessOrEqual(t, len(b.buf), size)
				if !ok {
					// Refused only when the entries ran out, the frames
					// held and this one exceed the size, or the buffer
					// has all of it and no room in one piece.
					require.True(t, b.n == backlogFrames || b.bytes+n > size || len(b.buf) == size && !fits(b, n),
						"step %d: %d bytes refused with room", step, n)
					refused++
					continue
				}
				copy(b.buf[off:off+n], fr)
				b.commit(h, off, n)
				model, hdrs = append(model, fr), append(hdrs, h)
			} else if b.n > 0 { // write out some
				k := 1 + rng.IntN(b.n)
				got := b.oldest()
				k = min(k, len(got))
				for i := range k {
					g := &got[i]
					if !bytes.Equal(model[i], g.Segs[0]) || len(g.Segs) != 1 || g.Len != len(model[i]) ||
						g.Hdr.GSOSize != hdrs[i].GSOSize || g.Hdr.NumBuffers != 0 {
						t.Fatalf("step %d: frame %d of the batch differs from the one held", step, i)
					}
				}
				b.pop(k)
				model, hdrs = model[k:], hdrs[k:]
			}
			total := 0
			for _, m := range model {
				total += len(m)
			}
			if b.n != len(model) || b.bytes != total {
				t.Fatalf("step %d: %d frames of %d bytes held, the model has %d of %d", step, b.n, b.bytes, len(model), total)
			}
			requireDisjoint(t, b)
			if before != 0 && len(b.buf) != before {
				require.Greater(t, len(b.buf), before)
				grew++
			}
		}
		// The walk went through both layouts and ran full.
		require.Greater(t, wrappedSteps, 1000, "size %d", size)
		require.Greater(t, refused, 100, "size %d", size)
		if size > backlogMinBuf {
			require.Positive(t, grew, "the buffer never grew")
		}
		require.Equal(t, len(model), b.release())
		require.Zero(t, b.n)
		require.Zero(t, b.bytes)
		require.Nil(t, b.buf, "released")
		_, ok := b.place(100)
		require.True(t, ok)
		require.Equal(t, min(backlogMinBuf, size), len(b.buf))
	}
}

// fits is the model's answer to whether n bytes have room in b: after the
// newest frame and before the end of buf, or, if that is where the oldest
// frame is, from 0 up to it (a frame is never split).
func fits(b *backlog, n int) bool {
	if b.n == 0 {
		return n <= len(b.buf)
	}
	first := b.ents[b.head]
	last := b.ents[(b.head+b.n-1)%len(b.ents)]
	end := int(last.off + last.n)
	if int(first.off) < end { // not wrapped
		return end+n <= len(b.buf) || n <= int(first.off)
	}
	return end+n <= int(first.off)
}

// requireDisjoint checks that no two held frames overlap in buf.
func requireDisjoint(t *testing.T, b *backlog) {
	t.Helper()
	spans := make([][2]int32, 0, b.n)
	for i := range b.n {
		e := b.ents[(b.head+i)%len(b.ents)]
		spans = append(spans, [2]int32{e.off, e.off + e.n})
	}
	slices.SortFunc(spans, func(x, y [2]int32) int { return int(x[0] - y[0]) })
	for i := 1; i < len(spans); i++ {
		if spans[i][0] < spans[i-1][1] {
			t.Fatalf("held frames overlap: %v and %v", spans[i-1], spans[i])
		}
	}
}

// postRXNotified gives the device n receive buffers and kicks only when
// the ring asks for it (VIRTQ_USED_F_NO_NOTIFY or avail_event, virtio 1.2
// §2.7.10; packed: the device event suppression, §2.8.10), as a guest
// driver does.
func (r *rig) postRXNotified(n int, size uint32) (kicked bool) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		_, err := r.rx.AddIn(size)
		require.NoError(r.t, err)
	}
	if r.rx.Publish() {
		r.rxKick.Kick()
		return true
	}
	return false
}

// TestGuestPortBacklogHoldsAndDrains: frames that find the receive ring full
// are held and arrive, in order and unchanged, once the guest adds buffers,
// without another Send (the drain worker asks for the kick and writes
// them); a frame sent while frames are held goes after them; nothing is
// dropped. (TestGuestPortNoBuffers: without a backlog they are dropped.)
func TestGuestPortBacklogHoldsAndDrains(t *testing.T) {
	modes := append(notifyModes[:len(notifyModes):len(notifyModes)], notifyModes[0])
	modes[len(modes)-1].name, modes[len(modes)-1].features = "mergeable", baseFeatures|virtio.NetFMrgRxbuf
	for _, c := range modes {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.features, GuestPortOptions{Backlog: 64 << 10}, 2048)
			r.start()
			require.False(t, r.postRXNotified(2, 2048) && c.features&virtio.FEventIdx == 0,
				"the driver was asked to kick with nothing held")
			var want [][]byte
			var frames []Frame
			for i := range 6 {
				fr := testFrame(100+i, byte(i))
				frames = append(frames, frameOf(fr[:20], fr[20:]))
				want = append(want, bytes.Clone(fr))
			}
			frames[4].Hdr = virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
			r.port.Send(frames)
			// The sender's buffers are reused once Send returns.
			for _, f := range frames {
				for _, s := range f.Segs {
					clear(s)
				}
			}
			_, got := r.received(2)
			require.Equal(t, want[:2], got)
			require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
			require.EqualValues(t, 2, r.port.Stats().TxPackets.Load())

			// The guest adds buffers one at a time, kicking only when
			// asked: the drain worker sleeps with kicks on, so it is
			// woken and the held frames arrive without another Send.
			deadline := time.Now().Add(10 * time.Second)
			for posted := 0; r.port.Stats().TxPackets.Load() < 6; posted++ {
				require.True(t, time.Now().Before(deadline), "held frames not written: %d of 6", r.port.Stats().TxPackets.Load())
				if posted < 4 {
					r.postRXNotified(1, 2048)
				}
				time.Sleep(time.Millisecond)
			}
			_, got = r.received(4)
			// Frame 4 asked for a checksum at 40 (NEEDS_CSUM): this
			// guest did not negotiate VIRTIO_NET_F_GUEST_CSUM, so the
			// port completed it, as it does for frames not held.
			require.NotEqual(t, want[4][40:42], got[2][40:42])
			copy(want[4][40:42], got[2][40:42])
			require.Equal(t, want[2:], got)
			require.EqualValues(t, 6, r.port.Stats().TxPackets.Load())
			require.EqualValues(t, 4, r.port.QueueStats(0).Held.Load())
			require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
		})
	}
}

// TestGuestPortBacklogKeepsOrder: while frames are held, frames sent later
// are written after them, also when the ring has room again by the time
// they are sent (the sender writes the held ones first).
func TestGuestPortBacklogKeepsOrder(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10}, 2048)
	r.start()
	r.postRX(1, 2048)
	var want [][]byte
	send := func(i int) {
		fr := testFrame(80, byte(i))
		want = append(want, fr)
		r.port.Send([]Frame{frameOf(fr)})
	}
	for i := range 3 {
		send(i) // 0 is written, 1 and 2 are held
	}
	rx := &r.port.pairs[0].rx
	for round := 3; round < 40; round++ {
		// Buffers added without a kick: only the next Send finds them.
		_, err := r.rx.AddIn(2048)
		require.NoError(t, err)
		r.rx.Publish()
		send(round)
		rx.mu.Lock()
		held := rx.held.n
		rx.mu.Unlock()
		require.Equal(t, 2, held, "round %d", round)
	}
	r.postRX(4, 2048)
	_, got := r.received(len(want))
	require.Equal(t, want, got)
	require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
}

// TestGuestPortBacklogBounds: a backlog holds up to its size in bytes; the
// frames after that are dropped as before (drop_no_buffer), and stopping
// the queue drops what is held (drop_no_queue).
func TestGuestPortBacklogBounds(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 1000}, 2048)
	r.start()
	frames := make([]Frame, 0, 14)
	for i := range 14 {
		frames = append(frames, frameOf(testFrame(100, byte(i))))
	}
	r.port.Send(frames) // no buffer: 10 held, 4 dropped
	st := r.port.Stats()
	require.EqualValues(t, 4, st.Drops(DropNoBuffer))
	r.port.Send([]Frame{frameOf(testFrame(60, 99))})
	require.EqualValues(t, 5, st.Drops(DropNoBuffer))
	require.EqualValues(t, 10, r.port.QueueStats(0).Held.Load())
	r.port.StopQueue(0)
	require.EqualValues(t, 10, st.Drops(DropNoQueue))
	require.Zero(t, st.TxPackets.Load())

	// A port's backlog is split between its queue pairs.
	p, err := NewGuestPort(GuestPortOptions{Name: "g", QueuePairs: 4, Backlog: 1 << 20})
	require.NoError(t, err)
	for i := range p.pairs {
		require.Equal(t, 256<<10, p.pairs[i].rx.held.size)
	}
	_, err = NewGuestPort(GuestPortOptions{Name: "g", QueuePairs: 1, Backlog: -1})
	require.Error(t, err)
}

// TestGuestPortBacklogQueueRestart: held frames of a stopped queue are gone;
// a restarted queue holds and drains again (its drain worker is new).
func TestGuestPortBacklogQueueRestart(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10}, 2048)
	r.start()
	r.port.Send([]Frame{frameOf(testFrame(70, 1)), frameOf(testFrame(70, 2))})
	r.port.StopQueue(0)
	require.EqualValues(t, 2, r.port.Stats().Drops(DropNoQueue))
	cfg := r.rx.Config(r.features)
	q, err := virtio.NewQueue(r.rxq.Memory(), cfg)
	require.NoError(t, err)
	r.port.StartQueue(0, q, r.rxKick, r.rxCall)
	fr := testFrame(90, 3)
	r.port.Send([]Frame{frameOf(fr)})
	r.postRX(1, 2048)
	_, got := r.received(1)
	require.Equal(t, fr, got[0])
}

// TestGuestPortBacklogPathsDoNotAllocate: holding a batch and writing it out
// later (by the next Send) allocates nothing once the backlog exists.
func TestGuestPortBacklogPathsDoNotAllocate(t *testing.T) {
	r := newRig(t, baseFeatures|virtio.NetFMrgRxbuf, GuestPortOptions{Backlog: 1 << 20}, 2048)
	// No workers: drive the paths directly.
	rx := &r.port.pairs[0].rx
	rx.q, rx.nrx, rx.offload = r.rxq, virtio.NewNetRX(r.rxq), offloadsOf(r.features)
	payload := testFrame(1500, 3)
	frames := make([]Frame, 32)
	for i := range frames {
		frames[i] = frameOf(payload[:40], payload[40:])
	}
	run := func() {
		r.port.Send(frames) // the ring is empty: held
		for range 33 {
			if _, err := r.rx.AddIn(2048); err != nil {
				t.Fatal(err)
			}
		}
		r.rx.Publish()
		r.port.Send(frames[:1]) // writes the 32 held, then this one
		if rx.held.n != 0 {
			t.Fatalf("%d frames still held", rx.held.n)
		}
		for ok := true; ok; _, ok = r.rx.Used() {
		}
	}
	run()
	require.Zero(t, testing.AllocsPerRun(50, run))
	require.EqualValues(t, 52*33, r.port.Stats().TxPackets.Load())
	require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
}

// TestGuestPortBacklogStuckGuest: a guest that never adds buffers fills its
// own backlog and no more; Send keeps returning at once (the sender, a TAP
// reader serving every guest, never waits for it).
func TestGuestPortBacklogStuckGuest(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 4 << 10}, 2048)
	r.start()
	fr := frameOf(bytes.Repeat([]byte{0xab}, 1000))
	for range 1000 {
		r.port.Send([]Frame{fr, fr, fr, fr})
	}
	st := r.port.Stats()
	require.EqualValues(t, 4000-4, st.Drops(DropNoBuffer))
}
