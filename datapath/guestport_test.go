package datapath

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// bell is a test Doorbell: Kick wakes one Wait.
type bell struct {
	kick chan struct{}
	intr chan struct{}
}

func newBell() *bell { return &bell{kick: make(chan struct{}, 1), intr: make(chan struct{}, 1)} }

func (b *bell) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *bell) Wait() error {
	select {
	case <-b.kick:
		return nil
	case <-b.intr:
		return virtio.ErrInterrupted
	}
}

func (b *bell) Interrupt() {
	select {
	case b.intr <- struct{}{}:
	default:
	}
}

// counter is a test Notifier.
type counter struct{ n atomic.Int64 }

func (c *counter) Notify() error { c.n.Add(1); return nil }

// syncRecorder is a recorder safe for the port's worker goroutine.
type syncRecorder struct {
	mu sync.Mutex
	recorder
}

func (r *syncRecorder) Send(frames []Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recorder.Send(frames)
}

func (r *syncRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

const (
	rigGPA   = 0x100000
	halfSize = 1 << 20
)

// rig is one guest (driver side: two virtiotest drivers in one memory
// region) attached to a GuestPort.
type rig struct {
	t              *testing.T
	rx, tx         *virtiotest.Driver
	rxq, txq       *virtio.Queue
	rxKick, txKick *bell
	rxCall, txCall *counter
	port           *GuestPort
	features       uint64
}

func newRig(t *testing.T, features uint64, opt GuestPortOptions, slot uint32) *rig {
	t.Helper()
	mem := make([]byte, 2*halfSize)
	packed := features&virtio.FRingPacked != 0
	rx, err := virtiotest.NewDriver(mem[:halfSize], rigGPA, 256, virtiotest.DriverOptions{SlotSize: slot, Packed: packed})
	require.NoError(t, err)
	tx, err := virtiotest.NewDriver(mem[halfSize:], rigGPA+halfSize, 256, virtiotest.DriverOptions{SlotSize: 2048, Packed: packed})
	require.NoError(t, err)
	m, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: rigGPA, Size: uint64(len(mem)), UserAddr: rigGPA, Data: mem}})
	require.NoError(t, err)
	rxq, err := virtio.NewQueue(m, rx.Config(features))
	require.NoError(t, err)
	txq, err := virtio.NewQueue(m, tx.Config(features))
	require.NoError(t, err)
	if opt.Name == "" {
		opt.Name = "guest0"
	}
	if opt.QueuePairs == 0 {
		opt.QueuePairs = 1
	}
	p, err := NewGuestPort(opt)
	require.NoError(t, err)
	r := &rig{t: t, rx: rx, tx: tx, rxq: rxq, txq: txq, rxKick: newBell(), txKick: newBell(),
		rxCall: &counter{}, txCall: &counter{}, port: p, features: features}
	t.Cleanup(p.Close)
	return r
}

func (r *rig) start() {
	r.port.StartQueue(0, r.rxq, r.rxKick, r.rxCall)
	r.port.StartQueue(1, r.txq, r.txKick, r.txCall)
}

// transmit adds one frame (virtio-net header hdr + frame) to the transmit
// queue, split as the layout says, and kicks.
func (r *rig) transmit(hdr virtio.NetHdr, frame []byte, layout string) {
	r.t.Helper()
	h := make([]byte, virtio.NetHdrLen(r.features))
	hdr.Encode(h[:min(len(h), virtio.NetHdrSize)])
	var err error
	switch layout {
	case "one":
		_, err = r.tx.AddOut(append(h, frame...))
	case "split":
		_, err = r.tx.AddOut(h, frame[:20], frame[20:])
	case "indirect":
		_, err = r.tx.AddChain([][]byte{h, frame[:7], frame[7:]}, nil, true)
	}
	require.NoError(r.t, err)
	r.tx.Publish()
	r.txKick.Kick()
}

// postRX gives the device n receive buffers of the rig's slot size.
func (r *rig) postRX(n int, size uint32) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		_, err := r.rx.AddIn(size)
		require.NoError(r.t, err)
	}
	r.rx.Publish()
	r.rxKick.Kick()
}

// received collects n frames from the receive queue: each as the header and
// the bytes after it.
func (r *rig) received(n int) (hdrs []virtio.NetHdr, frames [][]byte) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 70000)
	var cur []byte
	left := 0
	for len(frames) < n {
		e, ok := r.rx.Used()
		if !ok {
			require.True(r.t, time.Now().Before(deadline), "only %d of %d frames received", len(frames), n)
			time.Sleep(time.Millisecond)
			continue
		}
		k := r.rx.ReadIn(uint16(e.ID), buf[:e.Len])
		if left == 0 {
			var h virtio.NetHdr
			h.Decode(buf[:virtio.NetHdrSize])
			hdrs = append(hdrs, h)
			left = int(h.NumBuffers)
			cur = append([]byte{}, buf[virtio.NetHdrSize:k]...)
		} else {
			cur = append(cur, buf[:k]...)
		}
		left--
		if left == 0 {
			frames = append(frames, cur)
		}
	}
	return hdrs, frames
}

// usedTX waits until the device returned n transmit chains.
func (r *rig) usedTX(n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := 0; got < n; {
		if _, ok := r.tx.Used(); ok {
			got++
			continue
		}
		require.True(r.t, time.Now().Before(deadline), "only %d of %d transmit chains used", got, n)
		time.Sleep(time.Millisecond)
	}
}

func testFrame(size int, seed byte) []byte {
	f := make([]byte, size)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, 0x08, 0x00})
	for i := 14; i < size; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

const baseFeatures = virtio.FVersion1 | virtio.FIndirectDesc | virtio.FEventIdx

func TestGuestPortTransmitsToPeer(t *testing.T) {
	for _, layout := range []string{"one", "split", "indirect"} {
		t.Run(layout, func(t *testing.T) {
			r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
			rec := &syncRecorder{}
			r.port.SetPeer(rec)
			r.start()
			var want [][]byte
			for i := 0; i < 5; i++ {
				f := testFrame(60+i*100, byte(i))
				want = append(want, f)
				r.transmit(virtio.NetHdr{}, f, layout)
			}
			r.usedTX(5)
			require.Equal(t, 5, rec.count())
			require.Equal(t, want, rec.frames)
			// The counter and the call come after the used index is
			// published: the guest can see its buffers back a moment
			// before (slow under qemu-user).
			require.Eventually(t, func() bool { return r.port.Stats().RxPackets.Load() == 5 }, 5*time.Second, time.Millisecond,
				"rx_packets %d", r.port.Stats().RxPackets.Load())
			require.Eventually(t, func() bool { return r.txCall.n.Load() > 0 }, 5*time.Second, time.Millisecond,
				"no used buffer notification")
		})
	}
}

func TestGuestPortDropsInvalidTransmits(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	rec := &syncRecorder{}
	r.port.SetPeer(rec)
	r.start()
	r.transmit(virtio.NetHdr{}, testFrame(10, 0), "one")                                              // runt
	r.transmit(virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum}, testFrame(60, 0), "one")                // CSUM not negotiated
	r.transmit(virtio.NetHdr{GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1000}, testFrame(60, 0), "one") // TSO not negotiated
	r.transmit(virtio.NetHdr{}, testFrame(60, 0), "one")
	r.usedTX(4)
	require.Equal(t, 1, rec.count())
	require.EqualValues(t, 3, r.port.Stats().Drops(DropMalformed))
}

func TestGuestPortLoopback(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		f := baseFeatures
		if mrg {
			f |= virtio.NetFMrgRxbuf
		}
		r := newRig(t, f, GuestPortOptions{}, 2048)
		r.port.SetPeer(NewLoopback("lo", r.port))
		r.start()
		r.postRX(16, 2048)
		var want [][]byte
		for i := 0; i < 8; i++ {
			fr := testFrame(64+i*150, byte(i))
			r.transmit(virtio.NetHdr{}, fr, "split")
			w := append([]byte{}, fr...)
			copy(w[0:6], fr[6:12])
			copy(w[6:12], fr[0:6])
			want = append(want, w)
		}
		hdrs, got := r.received(8)
		require.Equal(t, want, got)
		for _, h := range hdrs {
			require.EqualValues(t, 1, h.NumBuffers)
		}
		// The counter is added after the batch is published: the guest
		// can see the frames a moment before it moves (slow under
		// qemu-user).
		require.Eventually(t, func() bool { return r.port.Stats().TxPackets.Load() == 8 }, 5*time.Second, time.Millisecond,
			"tx_packets %d", r.port.Stats().TxPackets.Load())
		require.Eventually(t, func() bool { return r.rxCall.n.Load() > 0 }, 5*time.Second, time.Millisecond,
			"no used buffer notification")
	}
}

func TestGuestPortMergeableReceive(t *testing.T) {
	r := newRig(t, baseFeatures|virtio.NetFMrgRxbuf, GuestPortOptions{}, 2048)
	r.start()
	r.postRX(8, 2048)
	big := testFrame(5000, 7)
	r.port.Send([]Frame{frameOf(big[:100], big[100:])})
	hdrs, got := r.received(1)
	require.Equal(t, big, got[0])
	require.EqualValues(t, 3, hdrs[0].NumBuffers, "5012 bytes in 2048-byte buffers")

	// Without MRG_RXBUF the frame does not fit one buffer: dropped, and a
	// small frame after it still goes through.
	r2 := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	r2.start()
	r2.postRX(4, 2048)
	small := testFrame(100, 1)
	r2.port.Send([]Frame{frameOf(big), frameOf(small)})
	_, got = r2.received(1)
	require.Equal(t, small, got[0])
	require.EqualValues(t, 1, r2.port.Stats().Drops(DropTooBig))
}

func TestGuestPortNoBuffers(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	r.start()
	r.postRX(2, 2048)
	fr := testFrame(100, 1)
	r.port.Send([]Frame{frameOf(fr), frameOf(fr), frameOf(fr), frameOf(fr)})
	r.received(2)
	require.EqualValues(t, 2, r.port.Stats().Drops(DropNoBuffer))
	require.EqualValues(t, 2, r.port.Stats().TxPackets.Load())
}

// notifyModes are the receive rings' ways of asking for kicks (virtio 1.2
// §2.7.10, §2.8.10): split with EVENT_IDX or flags, packed with either.
var notifyModes = []struct {
	name     string
	features uint64
}{
	{"event-idx", baseFeatures},
	{"flags", baseFeatures &^ virtio.FEventIdx},
	{"packed", baseFeatures | virtio.FRingPacked},
	{"packed-flags", baseFeatures&^virtio.FEventIdx | virtio.FRingPacked},
}

// TestGuestPortReceiveNoKicks checks that a driver refilling a receive
// queue the port emptied is not asked to kick: a port with no frames held
// never waits for receive kicks (virtio 1.2 §2.7.10).
func TestGuestPortReceiveNoKicks(t *testing.T) {
	for _, c := range notifyModes {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.features, GuestPortOptions{}, 2048)
			r.start()
			fr := testFrame(100, 1)
			for round := 0; round < 3; round++ {
				for i := 0; i < 4; i++ {
					_, err := r.rx.AddIn(2048)
					require.NoError(t, err)
				}
				// With EVENT_IDX the first buffers may kick once:
				// avail_event starts at 0 and the device leaves it
				// there (as Linux vhost's vhost_disable_notify does);
				// Pop no longer moves it along.
				if kick := r.rx.Publish(); round > 0 {
					require.False(t, kick, "round %d: the driver was asked to kick", round)
				}
				r.port.Send([]Frame{frameOf(fr), frameOf(fr), frameOf(fr), frameOf(fr)})
				_, got := r.received(4) // every buffer used: the ring is empty again
				require.Equal(t, fr, got[3])
			}
			require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
		})
	}
}

func TestGuestPortSendWithoutQueues(t *testing.T) {
	p, err := NewGuestPort(GuestPortOptions{Name: "g", QueuePairs: 2})
	require.NoError(t, err)
	p.Send([]Frame{frameOf(testFrame(60, 0))})
	require.EqualValues(t, 1, p.Stats().Drops(DropNoQueue))
}

func TestGuestPortSource(t *testing.T) {
	r := newRig(t, baseFeatures|virtio.NetFMrgRxbuf, GuestPortOptions{Source: NewSource(1518)}, 2048)
	r.port.SetPeer(NewSink("sink"))
	r.start()
	for round := 0; round < 5; round++ {
		r.postRX(32, 2048)
		_, got := r.received(32)
		for _, f := range got {
			require.Len(t, f, 1518)
			require.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, f[:6])
		}
	}
	r.port.StopQueue(0)
	require.GreaterOrEqual(t, r.port.Stats().TxPackets.Load(), uint64(160))
}

func TestGuestPortBrokenQueueStaysLocal(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	rec := &syncRecorder{}
	r.port.SetPeer(rec)
	r.start()
	// A descriptor that chains to itself.
	r.tx.WriteDesc(0, virtiotest.Desc{Addr: rigGPA + halfSize + 0x10000, Len: 100, Flags: virtiotest.DescFNext, Next: 0})
	r.tx.AddHead(0)
	r.tx.Publish()
	r.txKick.Kick()
	deadline := time.Now().Add(10 * time.Second)
	for r.port.Stats().Drops(DropQueueBroken) == 0 {
		require.True(t, time.Now().Before(deadline), "broken queue not detected")
		time.Sleep(time.Millisecond)
	}
	// The receive queue of the same guest still works.
	r.postRX(1, 2048)
	r.port.Send([]Frame{frameOf(testFrame(60, 0))})
	r.received(1)
	// Stopping the broken queue and the port returns.
	r.port.StopQueue(1)
	r.port.Close()
}

func TestGuestPortRestartQueue(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	rec := &syncRecorder{}
	r.port.SetPeer(rec)
	r.start()
	r.transmit(virtio.NetHdr{}, testFrame(60, 0), "one")
	r.usedTX(1)
	r.port.StopQueue(1)
	last := r.txq.LastAvail()
	require.EqualValues(t, 1, last)
	// The frontend restarts the ring at the base it read (GET_VRING_BASE
	// then SET_VRING_BASE).
	cfg := r.tx.Config(r.features)
	cfg.LastAvail = last
	q, err := virtio.NewQueue(r.txq.Memory(), cfg)
	require.NoError(t, err)
	r.port.StartQueue(1, q, r.txKick, r.txCall)
	r.transmit(virtio.NetHdr{}, testFrame(61, 0), "one")
	r.usedTX(1)
	require.Equal(t, 2, rec.count())
}

func TestGuestPortPoll(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{Poll: true}, 2048)
	r.port.SetPeer(NewLoopback("lo", r.port))
	r.start()
	r.postRX(4, 2048)
	r.transmit(virtio.NetHdr{}, testFrame(60, 0), "one")
	r.received(1)
}

// TestGuestPortPathsDoNotAllocate guards the per-packet paths: one transmit
// batch (pop, frame, peer, push, publish) and one receive batch of 32
// frames each.
func TestGuestPortPathsDoNotAllocate(t *testing.T) {
	r := newRig(t, baseFeatures|virtio.NetFMrgRxbuf, GuestPortOptions{}, 2048)
	r.port.SetPeer(&nullPort{})
	// No workers: drive the paths directly.
	rx := &r.port.pairs[0].rx
	rx.q, rx.nrx, rx.offload = r.rxq, virtio.NewNetRX(r.rxq), offloadsOf(r.features)
	b := newTxBatch(r.txq)
	hdr := make([]byte, virtio.NetHdrSize)
	payload := testFrame(1500, 3)
	frames := make([]Frame, 32)
	for i := range frames {
		frames[i] = frameOf(payload[:40], payload[40:])
	}
	run := func() {
		for i := 0; i < 32; i++ {
			if _, err := r.tx.AddOut(hdr, payload); err != nil {
				t.Fatal(err)
			}
			if _, err := r.rx.AddIn(2048); err != nil {
				t.Fatal(err)
			}
		}
		r.tx.Publish()
		r.rx.Publish()
		if n, err := r.port.txOnce(0, r.txq, r.txCall, b); n != 32 || err != nil {
			t.Fatalf("txOnce = %d, %v", n, err)
		}
		r.port.Send(frames)
		for ok := true; ok; _, ok = r.tx.Used() {
		}
		for ok := true; ok; _, ok = r.rx.Used() {
		}
	}
	require.Zero(t, testing.AllocsPerRun(50, run))
	require.EqualValues(t, 0, r.port.Stats().Drops(DropNoBuffer))
	require.EqualValues(t, 51*32, r.port.Stats().TxPackets.Load())
	require.EqualValues(t, 51*32, r.port.Stats().RxPackets.Load())
}

// TestGuestPortMergedDoesNotAllocate guards deliver's batch over several
// mergeable buffers (mergeRun, virtio.NetRX.MergeFrame): 8 TCP GSO frames
// of 16 KiB and 8 plain frames of 3000 bytes into 2048-byte buffers, each
// frame over several of them.
func TestGuestPortMergedDoesNotAllocate(t *testing.T) {
	f := baseFeatures | virtio.NetFMrgRxbuf | virtio.NetFGuestCsum | virtio.NetFGuestTSO4
	r := newRig(t, f, GuestPortOptions{}, 2048)
	rx := &r.port.pairs[0].rx
	rx.q, rx.nrx, rx.offload = r.rxq, virtio.NewNetRX(r.rxq), offloadsOf(f)
	gso, hdr := tcpGSOFrame(gsoSpec{payload: 16384, mss: 1448, flags: header.TCPFlagACK}, macA, macB)
	plain := testFrame(3000, 4)
	var frames []Frame
	for range 8 {
		frames = append(frames, Frame{Hdr: hdr, Segs: [][]byte{gso}, Len: len(gso)}, frameOf(plain))
	}
	run := func() {
		for range 8 * (9 + 2) { // a GSO frame takes 9 buffers, a plain one 2
			if _, err := r.rx.AddIn(2048); err != nil {
				t.Fatal(err)
			}
		}
		r.rx.Publish()
		r.port.Send(frames)
		for ok := true; ok; _, ok = r.rx.Used() {
		}
	}
	require.Zero(t, testing.AllocsPerRun(50, run))
	require.EqualValues(t, 0, r.port.Stats().Drops(DropNoBuffer))
	require.EqualValues(t, 51*16, r.port.Stats().TxPackets.Load())
}

// TestGuestPortReadAheadOnlyWhenBehind: transmit touches a batch's frames
// ahead of their turn (b.sink gets their first bytes) only when the poll
// before it found chains waiting; after a poll that found the ring empty
// (the worker caught up with the driver) it reads each frame in its turn.
// Both hand on the same frames.
func TestGuestPortReadAheadOnlyWhenBehind(t *testing.T) {
	r := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	rec := &recorder{}
	r.port.SetPeer(rec)
	b := newTxBatch(r.txq)
	hdr := make([]byte, virtio.NetHdrSize)
	var want [][]byte
	batch := func(frames int, seed byte) {
		t.Helper()
		for i := 0; i < frames; i++ {
			f := testFrame(60+i, seed+byte(i))
			want = append(want, f)
			// One buffer, header and frame, as virtio_user sends.
			_, err := r.tx.AddOut(append(append([]byte{}, hdr...), f...))
			require.NoError(t, err)
		}
		r.tx.Publish()
		b.sink = 0
		n, err := r.port.txOnce(0, r.txq, r.txCall, b)
		require.NoError(t, err)
		require.Equal(t, frames, n)
		require.False(t, b.caughtUp)
	}
	// No empty poll yet: behind. Each frame's first byte is 0x52 and its
	// virtio-net header's 0.
	batch(3, 1)
	require.Equal(t, byte(3*0x52), b.sink, "read-ahead while behind")
	n, err := r.port.txOnce(0, r.txq, r.txCall, b)
	require.NoError(t, err)
	require.Zero(t, n)
	require.True(t, b.caughtUp)
	batch(2, 4)
	require.Zero(t, b.sink, "no read-ahead after an empty poll")
	batch(1, 6)
	require.Equal(t, byte(0x52), b.sink, "read-ahead while behind again")
	require.Equal(t, want, rec.frames)
}
