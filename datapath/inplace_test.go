package datapath

import (
	"bytes"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

var inPlaceModes = []struct {
	name     string
	features uint64
}{
	{"split", baseFeatures},
	{"split-mergeable", baseFeatures | virtio.NetFMrgRxbuf},
	{"packed", baseFeatures | virtio.FRingPacked},
	{"packed-mergeable", baseFeatures | virtio.FRingPacked | virtio.NetFMrgRxbuf},
}

// TestGuestPortInPlace: a frame read into reserved receive buffers and
// sent with its head rewritten in the sender's memory arrives with the new
// head and the bytes read, in the buffers it was read into (none copied:
// the bytes a sender's copy would have carried are changed in place after
// the commit check); a frame another sender sends meanwhile waits in the
// backlog and arrives after it; buffers the frame did not use are the
// next ones written.
func TestGuestPortInPlace(t *testing.T) {
	for _, m := range inPlaceModes {
		t.Run(m.name, func(t *testing.T) {
			r := newRig(t, m.features, GuestPortOptions{Backlog: 64 << 10}, 2048)
			r.start()
			mergeable := m.features&virtio.NetFMrgRxbuf != 0
			size, room := 1500, 1500
			if mergeable {
				size, room = 5000, 8000 // over three buffers
			}
			r.postRX(8, 2048)
			var res Reservation
			bufs, ok := r.port.Reserve(0, room, RxOffloads{}, &res)
			require.True(t, ok)
			fr := testFrame(size, 1)
			tail := virtiotest.MustReadv(t, bufs, fr, 128)
			head := bytes.Clone(fr[:128])
			copy(head[0:6], []byte{2, 0, 0, 0, 0, 9}) // the router's MAC rewrite
			want := append(bytes.Clone(head), fr[128:]...)

			other := testFrame(300, 7)
			r.port.Send([]Frame{frameOf(bytes.Clone(other))})
			require.EqualValues(t, 1, r.port.QueueStats(0).Held.Load(), "held while buffers are reserved")
			require.Zero(t, r.port.Stats().TxPackets.Load())

			r.port.Send([]Frame{frameOf(append([][]byte{head}, tail...)...)})
			// Whatever the port writes, it must not be a copy of
			// the sender's bytes in place: change them now, the guest
			// must see the change.
			tail[len(tail)-1][0] ^= 0xff
			want[len(want)-len(tail[len(tail)-1])] ^= 0xff
			require.True(t, res.End(r.port))
			_, got := r.received(2)
			require.Equal(t, want, got[0])
			require.Equal(t, other, got[1])
			require.Zero(t, r.port.Stats().Drops(DropNoBuffer))
			require.EqualValues(t, 2, r.port.Stats().TxPackets.Load())

			// Later frames use the buffers the frame left.
			next := testFrame(200, 3)
			r.port.Send([]Frame{frameOf(bytes.Clone(next))})
			_, got = r.received(1)
			require.Equal(t, next, got[0])
		})
	}
}

// TestGuestPortInPlaceNotTheFrame: a frame that is not the reserved one in
// place (a copy of it, or one with a byte moved) is held and written from
// the backlog after End gives the reserved buffers back; End reports that
// nothing was written in place.
func TestGuestPortInPlaceNotTheFrame(t *testing.T) {
	for _, m := range inPlaceModes {
		t.Run(m.name, func(t *testing.T) {
			r := newRig(t, m.features, GuestPortOptions{Backlog: 64 << 10}, 2048)
			r.start()
			r.postRX(4, 2048)
			var res Reservation
			bufs, ok := r.port.Reserve(0, 1500, RxOffloads{}, &res)
			require.True(t, ok)
			fr := testFrame(1000, 2)
			tail := virtiotest.MustReadv(t, bufs, fr, 100)
			shifted := append([][]byte{bytes.Clone(fr[:101])}, tail[0][2:])
			r.port.Send([]Frame{frameOf(bytes.Clone(fr)), frameOf(shifted...)})
			require.EqualValues(t, 2, r.port.QueueStats(0).Held.Load())
			require.False(t, res.End(r.port))
			_, got := r.received(2)
			require.Equal(t, fr, got[0])
			require.Equal(t, append(bytes.Clone(fr[:101]), fr[102:]...), got[1])
		})
	}
}

// TestGuestPortReserveRefusals: no reservation without a backlog (frames of
// other senders would have nowhere to wait), with frames held (they go
// first), while another is open, for offloads the guest does not take, or
// without buffers; StopQueue waits for the End of a reservation open on
// the queue, which then ends cleanly.
func TestGuestPortReserveRefusals(t *testing.T) {
	var res, res2 Reservation
	noBacklog := newRig(t, baseFeatures, GuestPortOptions{}, 2048)
	noBacklog.start()
	noBacklog.postRX(4, 2048)
	_, ok := noBacklog.port.Reserve(0, 1000, RxOffloads{}, &res)
	require.False(t, ok, "no backlog")

	r := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10}, 2048)
	r.start()
	_, ok = r.port.Reserve(0, 1000, RxOffloads{}, &res)
	require.False(t, ok, "no buffers")
	r.port.Send([]Frame{frameOf(testFrame(100, 1))}) // held
	r.postRXNotified(0, 0)
	_, err := r.rx.AddIn(2048)
	require.NoError(t, err)
	r.rx.Publish() // no kick: the frame stays held
	_, ok = r.port.Reserve(0, 1000, RxOffloads{}, &res)
	require.False(t, ok, "frames held")
	r.rxKick.Kick()
	r.received(1)

	r.postRX(4, 2048)
	_, ok = r.port.Reserve(0, 1000, RxOffloads{TSO4: true}, &res)
	require.False(t, ok, "the guest takes no TSO4")
	_, ok = r.port.Reserve(0, 1000, RxOffloads{}, &res)
	require.True(t, ok)
	_, ok = r.port.Reserve(0, 1000, RxOffloads{}, &res2)
	require.False(t, ok, "one reservation at a time")
	// StopQueue waits for End: the frame's bytes are in the queue's
	// buffers until then, and the session unmaps them after StopQueue.
	stopped := make(chan struct{})
	go func() { r.port.StopQueue(0); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("StopQueue returned with a reservation open")
	case <-time.After(50 * time.Millisecond):
	}
	require.False(t, res.End(r.port))
	<-stopped
	require.Empty(t, res.Buffers())
}

// TestGuestPortInPlaceLazyCall: a lazy reservation's frame is published
// without a call; FlushReceive gives the one the driver asks for.
func TestGuestPortInPlaceLazyCall(t *testing.T) {
	r := newRig(t, baseFeatures&^virtio.FEventIdx, GuestPortOptions{Backlog: 64 << 10}, 2048)
	r.start()
	r.postRX(4, 2048)
	res := Reservation{Lazy: true}
	bufs, ok := r.port.Reserve(0, 1500, RxOffloads{}, &res)
	require.True(t, ok)
	fr := testFrame(1000, 4)
	tail := virtiotest.MustReadv(t, bufs, fr, 128)
	calls := r.rxCall.n.Load()
	r.port.Send([]Frame{frameOf(append([][]byte{bytes.Clone(fr[:128])}, tail...)...)})
	require.True(t, res.End(r.port))
	_, got := r.received(1)
	require.Equal(t, fr, got[0])
	require.Equal(t, calls, r.rxCall.n.Load(), "no call before FlushReceive")
	r.port.FlushReceive()
	require.Equal(t, calls+1, r.rxCall.n.Load())
	r.port.FlushReceive()
	require.Equal(t, calls+1, r.rxCall.n.Load(), "one call owed")

	// Not past a quarter of the ring (256 entries): the 64th buffer used
	// by lazy frames gets its call at once.
	for i := range 70 {
		if i%8 == 0 {
			r.postRX(8, 2048)
		}
		bufs, ok := r.port.Reserve(0, 1500, RxOffloads{}, &res)
		require.True(t, ok)
		tail := virtiotest.MustReadv(t, bufs, fr, 128)
		r.port.Send([]Frame{frameOf(append([][]byte{bytes.Clone(fr[:128])}, tail...)...)})
		require.True(t, res.End(r.port))
		want := calls + 1
		if i >= 63 {
			want = calls + 2
		}
		require.Equal(t, want, r.rxCall.n.Load(), "frame %d", i)
	}
	r.received(70)
}

// TestSwitchInPlaceTarget: the target is the one guest port besides the
// router's; none with two, or when the other port is not a guest port;
// Attach waits for a frame in flight.
func TestSwitchInPlaceTarget(t *testing.T) {
	sw, err := NewSwitch(SwitchOptions{})
	require.NoError(t, err)
	router := &recorder{}
	rsp, err := sw.Attach(router, PortOptions{AllowSpoofing: true})
	require.NoError(t, err)
	target := sw.InPlaceTarget(rsp)
	_, ok := target.BeginInPlace()
	require.False(t, ok, "no guest")
	g1 := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10, Name: "g1"}, 2048)
	sp1, err := sw.Attach(g1.port, PortOptions{})
	require.NoError(t, err)
	gp, ok := target.BeginInPlace()
	require.True(t, ok)
	require.Same(t, g1.port, gp)
	attached := make(chan error, 1)
	g2 := newRig(t, baseFeatures, GuestPortOptions{Backlog: 64 << 10, Name: "g2"}, 2048)
	go func() {
		_, err := sw.Attach(g2.port, PortOptions{})
		attached <- err
	}()
	select {
	case <-attached:
		t.Fatal("Attach did not wait for the frame in flight")
	case <-time.After(50 * time.Millisecond):
	}
	target.EndInPlace()
	require.NoError(t, <-attached)
	_, ok = target.BeginInPlace()
	require.False(t, ok, "two guests")
	sw.Detach(sp1)
	gp, ok = target.BeginInPlace()
	require.True(t, ok)
	require.Same(t, g2.port, gp)
	target.EndInPlace()
	_, err = sw.Attach(&recorder{}, PortOptions{})
	require.NoError(t, err)
	_, ok = target.BeginInPlace()
	require.False(t, ok, "a port that is not a guest's")
}

// TestGuestPortInPlaceDoesNotAllocate: reserving, committing a frame in
// place and ending allocate nothing once warm (per-packet path).
func TestGuestPortInPlaceDoesNotAllocate(t *testing.T) {
	for _, m := range inPlaceModes {
		t.Run(m.name, func(t *testing.T) {
			r := newRig(t, m.features, GuestPortOptions{Backlog: 64 << 10}, 2048)
			// No workers: drive the paths directly.
			rx := &r.port.pairs[0].rx
			rx.q, rx.nrx, rx.offload, rx.call = r.rxq, virtio.NewNetRX(r.rxq), offloadsOf(r.features), r.rxCall
			head := testFrame(128, 5)
			frame := make([][]byte, 1, 8)
			f := []Frame{{}}
			res := Reservation{Lazy: true}
			round := func() {
				if _, err := r.rx.AddIn(2048); err != nil {
					t.Fatal(err)
				}
				r.rx.Publish()
				bufs, ok := r.port.Reserve(0, 1500, RxOffloads{}, &res)
				if !ok {
					t.Fatal("no reservation")
				}
				frame = append(frame[:1], bufs[0][128:1000])
				frame[0] = head
				f[0] = Frame{Segs: frame, Len: 1000}
				r.port.Send(f)
				if !res.End(r.port) {
					t.Fatal("not written in place")
				}
				r.port.FlushReceive()
				for {
					if _, ok := r.rx.Used(); !ok {
						break
					}
				}
			}
			for range 300 { // every descriptor of the test driver used once (it allocates then)
				round()
			}
			require.Zero(t, testing.AllocsPerRun(100, round))
		})
	}
}

// TestGuestPortInPlaceFollowsSteering: with two queue pairs, a frame read
// into pair 0's buffers whose flow the port steers to pair 1 is copied
// there (not written in place), and the reader's next reservation is on
// pair 1, where the next frame of the flow is written in place.
func TestGuestPortInPlaceFollowsSteering(t *testing.T) {
	r := newMQRigOpt(t, GuestPortOptions{Name: "guest0", QueuePairs: 2, Backlog: 64 << 10})
	r.port.SetPeer(&nullPort{})
	r.start(64)
	rp := r.port.runningRX()
	var fr []byte
	for sport := uint16(1000); ; sport++ {
		fr = udp4Frame(macA, macB, ipB, ipA, sport, 9, 900)
		f := frameOf(fr)
		if r.port.steer.pairFor(&f, &rp) == 1 {
			break
		}
	}
	var res Reservation
	require.Zero(t, res.Pair())
	for round, wantInPlace := range []bool{false, true} {
		bufs, ok := r.port.Reserve(res.Pair(), 2000, RxOffloads{}, &res)
		require.True(t, ok)
		tail := virtiotest.MustReadv(t, bufs, fr, 128)
		r.port.Send([]Frame{frameOf(append([][]byte{bytes.Clone(fr[:128])}, tail...)...)})
		require.Equal(t, wantInPlace, res.End(r.port), "round %d", round)
		require.EqualValues(t, 1, res.Pair(), "round %d", round)
	}
	got := r.received(1)
	require.Equal(t, [][]byte{fr, fr}, got)
	require.Empty(t, r.received(0))
}
