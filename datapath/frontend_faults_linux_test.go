//go:build linux

package datapath_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Issue 13, "Frontend faults": one table of the ways a frontend breaks, each
// tried on its own guest port (a) on a switch where two other guests (b and
// c) exchange frames all the while. Each fault either ends a's session
// with the expected error or breaks one of its rings (the session goes on,
// the ring's SET_VRING_ERR fd is signalled), and produces exactly one log
// line at warning level or above. b and c never miss a frame, and the
// server keeps serving (a new guest joins at the end).

// outcome is what a fault must lead to.
type outcome int

const (
	sessionEnds outcome = iota // the session ends with the case's error
	ringBreaks                 // one ring of the session breaks, the session goes on
)

type frontendFault struct {
	name string
	// do breaks guest a; its rings run, its MAC is known to the switch.
	do   func(t *testing.T, a *vhostusertest.Frontend)
	want outcome
	err  error // the session's error, or the broken ring's
	ring int   // the ring that breaks (ringBreaks)
}

// txChain adds a transmit chain of a frame from a (header + frame, two
// descriptors) without publishing it, and returns its head.
func txChain(t *testing.T, a *vhostusertest.Frontend, indirect bool) (*virtiotest.Driver, uint16) {
	t.Helper()
	tx := a.Ring(1).Driver
	head, err := tx.AddChain([][]byte{make([]byte, virtio.NetHdrLen(a.Features())), bcast(3, 9)}, nil, indirect)
	require.NoError(t, err)
	return tx, head
}

// publishTX publishes a's transmit ring and kicks it.
func publishTX(t *testing.T, a *vhostusertest.Frontend) {
	t.Helper()
	a.Ring(1).Driver.Publish()
	require.NoError(t, a.Kick(1))
}

func frontendFaults() []frontendFault {
	msg := func(req vhostuser.Request, size uint32, payload []byte) []byte {
		b := make([]byte, 12, 12+len(payload))
		binary.LittleEndian.PutUint32(b, uint32(req))
		binary.LittleEndian.PutUint32(b[4:], 1) // version 1
		binary.LittleEndian.PutUint32(b[8:], size)
		return append(b, payload...)
	}
	return []frontendFault{
		{name: "dies mid-message", want: sessionEnds, err: vhostuser.ErrBadHeader,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				// SET_VRING_NUM announces 8 bytes; 3 come, then the frontend is gone.
				require.NoError(t, a.WriteRaw(msg(vhostuser.ReqSetVringNum, 8, []byte{0, 0, 0})))
				a.Disconnect()
			}},
		{name: "garbage after a valid session", want: sessionEnds, err: vhostuser.ErrBadHeader,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				require.NoError(t, a.WriteRaw([]byte("\x17\x03\x03\x00\x45 not vhost-user at all \xff\xfe\xfd\xfc")))
			}},
		{name: "REM_MEM_REG under running queues", want: sessionEnds, err: vhostuser.ErrBadRing,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				r := a.Regions()[0]
				b := make([]byte, 40)
				binary.LittleEndian.PutUint64(b[8:], r.GPA)
				binary.LittleEndian.PutUint64(b[16:], r.Size)
				binary.LittleEndian.PutUint64(b[24:], r.UVA)
				require.NoError(t, a.WriteMessage(vhostuser.ReqRemMemReg, 0, b))
			}},
		{name: "memfd shrunk under running queues", want: sessionEnds, err: virtio.ErrFault,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				require.NoError(t, a.ShrinkMemory())
				require.NoError(t, a.Kick(1))
			}},
		{name: "avail index past the ring size", want: ringBreaks, ring: 1, err: virtio.ErrBadRing,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx := a.Ring(1).Driver
				tx.SetAvailIdx(tx.AvailIdx() + tx.Size() + 1)
				require.NoError(t, a.Kick(1))
			}},
		{name: "avail index backwards", want: ringBreaks, ring: 1, err: virtio.ErrBadRing,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx := a.Ring(1).Driver
				tx.SetAvailIdx(tx.AvailIdx() - 1)
				require.NoError(t, a.Kick(1))
			}},
		{name: "avail entry names a head past the ring", want: ringBreaks, ring: 1, err: virtio.ErrBadChain,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx := a.Ring(1).Driver
				tx.SetAvailEntry(tx.AvailIdx(), tx.Size()+7)
				tx.SetAvailIdx(tx.AvailIdx() + 1)
				require.NoError(t, a.Kick(1))
			}},
		{name: "descriptor chain loops", want: ringBreaks, ring: 1, err: virtio.ErrBadChain,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx, head := txChain(t, a, false)
				d := tx.ReadDesc(head)
				last := tx.ReadDesc(d.Next)
				last.Flags |= virtiotest.DescFNext
				last.Next = head
				tx.WriteDesc(d.Next, last)
				publishTX(t, a)
			}},
		{name: "descriptor outside guest memory", want: ringBreaks, ring: 1, err: virtio.ErrOutOfBounds,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx, head := txChain(t, a, false)
				d := tx.ReadDesc(head)
				next := tx.ReadDesc(d.Next)
				next.Addr = 1 << 50
				tx.WriteDesc(d.Next, next)
				publishTX(t, a)
			}},
		{name: "descriptor across the end of guest memory", want: ringBreaks, ring: 1, err: virtio.ErrOutOfBounds,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx, head := txChain(t, a, false)
				d := tx.ReadDesc(head)
				next := tx.ReadDesc(d.Next)
				last := a.Regions()[len(a.Regions())-1]
				next.Addr, next.Len = last.GPA+last.Size-64, 1<<20
				tx.WriteDesc(d.Next, next)
				publishTX(t, a)
			}},
		{name: "indirect table longer than the ring", want: ringBreaks, ring: 1, err: virtio.ErrBadChain,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx, head := txChain(t, a, true)
				d := tx.ReadDesc(head)
				d.Len = 16 * (uint32(tx.Size()) + 1)
				tx.WriteDesc(head, d)
				publishTX(t, a)
			}},
		{name: "indirect table of 4 GiB", want: ringBreaks, ring: 1, err: virtio.ErrBadChain,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				tx, head := txChain(t, a, true)
				d := tx.ReadDesc(head)
				d.Len = 0xffff_fff0
				tx.WriteDesc(head, d)
				publishTX(t, a)
			}},
		{name: "call eventfd jammed", want: sessionEnds, err: vhostuser.ErrBadFDs,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				// Counter at its maximum, O_NONBLOCK off: the next
				// notification of a's receive ring, written by b's or c's
				// worker as it floods a broadcast into a, waits until the
				// call watchdog reads the counter (a second or two).
				require.NoError(t, a.JamCallFD(0))
				// That notification must be due: b's and c's traffic may
				// have put frames into a's receive ring before the jam
				// (their call is gone with the drained counter) and, a
				// not reading them, used_event (virtio 1.2 §2.7.7) stays
				// behind, so no frame would notify again. Reading them
				// moves used_event to the ring's end (Used, as Linux
				// does: with a full fence before it looks again), so
				// the next frame notifies. Drain does not read the
				// call fd.
				a.Drain()
			}},
		{name: "receive buffers outside guest memory", want: ringBreaks, ring: 0, err: virtio.ErrOutOfBounds,
			do: func(t *testing.T, a *vhostusertest.Frontend) {
				// Every posted receive descriptor: the next frame b or c
				// floods to a breaks a's receive queue on their worker.
				rx := a.Ring(0).Driver
				for i := range rx.Size() {
					d := rx.ReadDesc(i)
					d.Addr = 1 << 50
					rx.WriteDesc(i, d)
				}
			}},
	}
}

// trafficPair keeps b and c exchanging broadcasts (which the switch also
// floods into a) until stop; it counts rounds and keeps the first error.
type trafficPair struct {
	stop   chan struct{}
	once   sync.Once
	done   chan struct{}
	rounds atomic.Int64
	sent   atomic.Int64 // frames b and c sent
	err    error
}

func startTraffic(b, c *vhostusertest.Frontend) *trafficPair {
	p := &trafficPair{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			for _, d := range [][2]*vhostusertest.Frontend{{b, c}, {c, b}} {
				id := byte(1)
				if d[0] == c {
					id = 2
				}
				want := bcast(id, byte(i))
				if err := d[0].Send(want); err != nil {
					p.err = fmt.Errorf("round %d: send: %w", i, err)
					return
				}
				p.sent.Add(1)
				if err := recvFrom(d[1], want); err != nil {
					p.err = fmt.Errorf("round %d: %w", i, err)
					return
				}
			}
			p.rounds.Add(1)
		}
	}()
	return p
}

// recvFrom waits for frame want on f, skipping frames of other senders
// (a's broadcasts).
func recvFrom(f *vhostusertest.Frontend, want []byte) error {
	for {
		got, err := f.WaitRecv()
		if err != nil {
			return err
		}
		if got[11] != want[11] {
			continue
		}
		if string(got) != string(want) {
			return fmt.Errorf("got %x, want %x", got[:16], want[:16])
		}
		return nil
	}
}

// halt stops the traffic and returns the rounds done and its error; a
// second halt returns the same.
func (p *trafficPair) halt() (int64, error) {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return p.rounds.Load(), p.err
}

// warnLines counts log lines at warning level or above.
type warnLines struct {
	mu    sync.Mutex
	lines []string
}

func (w *warnLines) add(line string) {
	if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
		w.mu.Lock()
		w.lines = append(w.lines, line)
		w.mu.Unlock()
	}
}

func (w *warnLines) since(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines[n:]...)
}

func (w *warnLines) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

func TestFrontendFaults(t *testing.T) {
	fs := newFaultServer(t)
	b, c := fs.guest(t), fs.guest(t)
	exchange(t, b, c, 5)
	var ended atomic.Int64
	for i, fc := range frontendFaults() {
		t.Run(fc.name, func(t *testing.T) {
			a := fs.guest(t)
			defer a.Close()
			errFDs := [2]int{}
			for r := range errFDs {
				fd, err := a.SetVringErr(r)
				require.NoError(t, err)
				errFDs[r] = fd
			}
			require.NoError(t, a.Send(bcast(3, byte(i)))) // a's MAC on the switch
			port := fs.lastPort()
			eventually(t, "a's frame on the switch", func() bool { return port.Stats().RxPackets.Load() > 0 })
			traffic := startTraffic(b, c)
			// A failing require ends the subtest before halt below; b and
			// c outlive it, so their traffic must stop here, not run on
			// into the parent's cleanup that closes them.
			defer traffic.halt()
			mark := fs.warn.count()
			st0 := fs.srv.Stats()

			fc.do(t, a)

			switch fc.want {
			case sessionEnds:
				select {
				case err := <-fs.ended:
					require.ErrorIs(t, err, fc.err)
				case <-time.After(20 * time.Second):
					t.Fatal("a's session did not end")
				}
				ended.Add(1)
			case ringBreaks:
				require.NoError(t, a.WaitErr(errFDs[fc.ring]), "ring %d's error fd", fc.ring)
				require.False(t, vhostusertest.ErrSignalled(errFDs[1-fc.ring]), "the other ring's error fd")
				eventually(t, "drop_queue_broken", func() bool { return port.Stats().Drops(datapath.DropQueueBroken) > 0 })
				// The session goes on: it answers, and the server sees no error.
				_, err := a.GetFeatures()
				require.NoError(t, err)
				require.Equal(t, st0.Errors, fs.srv.Stats().Errors)
			}
			eventually(t, "a log line", func() bool { return fs.warn.count() > mark })
			time.Sleep(300 * time.Millisecond) // no second line comes late
			lines := fs.warn.since(mark)
			require.Len(t, lines, 1, "warnings and errors: %q", lines)
			if fc.want == ringBreaks {
				require.Contains(t, lines[0], fc.err.Error())
			}
			for range 20 { // b and c go on while a is broken
				require.NoError(t, traffic.err)
				time.Sleep(5 * time.Millisecond)
			}
			rounds, err := traffic.halt()
			require.NoError(t, err, "b and c")
			require.NotZero(t, rounds)
			t.Logf("b and c exchanged %d rounds during the fault; a's line: %s", rounds, lines[0])
			if fc.want == ringBreaks {
				a.Close() // the broken session ends as any other
				select {
				case err := <-fs.ended:
					require.NoError(t, err)
				case <-time.After(20 * time.Second):
					t.Fatal("a's session did not end after its close")
				}
			}
		})
		if t.Failed() {
			return
		}
	}
	st := fs.srv.Stats()
	require.Equal(t, uint64(ended.Load()), st.Errors)
	require.Equal(t, uint64(1), st.Faults)
	// The server still takes guests, and b and c are as they were.
	d := fs.guest(t)
	require.NoError(t, d.Send(bcast(4, 0)))
	require.NoError(t, recvFrom(b, bcast(4, 0)))
	require.NoError(t, recvFrom(c, bcast(4, 0)))
	exchange(t, b, c, 20)
}

// eventually waits up to 10 s for ok (a safety net, not a speed claim).
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// lastPort returns the guest port of the newest session.
func (fs *faultServer) lastPort() *datapath.GuestPort {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var id uint64
	for k := range fs.ports {
		id = max(id, k)
	}
	return fs.ports[id]
}

// unicast is a frame from 02:00:00:00:00:from to 02:00:00:00:00:to.
func unicast(to, from byte, seq uint16) []byte {
	b := bcast(from, 0)
	copy(b, []byte{0x02, 0, 0, 0, 0, to})
	binary.BigEndian.PutUint16(b[15:], seq)
	return b
}

// TestFrontendStopsConsumingRX: guest a stops taking frames out of its
// receive queue while e floods it with unicast frames and b and c keep
// exchanging broadcasts (flooded into a too). Once a's buffers are full,
// every frame for a is dropped at once and counted (drop_no_buffer): the
// frames delivered plus those counted are exactly the frames sent to a, and
// no more were delivered than a's ring holds, so nothing is queued for a
// anywhere. b and c do not notice, nothing is logged (a guest that takes
// no frames is not an error), and when a reads again it gets the frames
// its buffers held, then new ones.
func TestFrontendStopsConsumingRX(t *testing.T) {
	fs := newFaultServer(t)
	b, c, a := fs.guest(t), fs.guest(t), fs.guest(t)
	port := fs.lastPort()
	e := fs.guest(t) // floods a (and reads nothing either)
	require.NoError(t, a.Send(bcast(3, 0)))
	require.NoError(t, recvFrom(b, bcast(3, 0)))
	require.NoError(t, recvFrom(c, bcast(3, 0)))
	exchange(t, b, c, 5) // flooded into a, which reads nothing from here on
	toA := func() uint64 { return port.Stats().TxPackets.Load() + port.Stats().Drops(datapath.DropNoBuffer) }
	eventually(t, "the exchange's broadcasts reach a's port", func() bool { return toA() >= 10 })
	base, delivered0 := toA(), port.Stats().TxPackets.Load()
	mark := fs.warn.count()

	traffic := startTraffic(b, c)
	defer traffic.halt() // when a require below ends the test first
	const flood = 20000
	for i := range flood {
		require.NoError(t, e.Send(unicast(3, 5, uint16(i))))
	}
	time.Sleep(100 * time.Millisecond)
	rounds, err := traffic.halt()
	require.NoError(t, err, "b and c while a stalled")
	require.NotZero(t, rounds)
	sent := uint64(flood) + uint64(traffic.sent.Load())
	eventually(t, "every frame for a delivered or counted", func() bool { return toA()-base == sent })
	delivered := port.Stats().TxPackets.Load() - delivered0
	dropped := port.Stats().Drops(datapath.DropNoBuffer)
	ringSize := uint64(a.Ring(0).Driver.Size())
	require.LessOrEqual(t, port.Stats().TxPackets.Load(), ringSize, "more frames delivered than a's receive ring holds")
	require.Equal(t, sent-delivered, dropped-(base-delivered0), "frames for a neither delivered nor counted")
	require.Empty(t, fs.warn.since(mark), "log lines")
	t.Logf("a stalled: %d frames for it, %d delivered (ring of %d), %d dropped and counted as no_buffer; b and c exchanged %d rounds meanwhile",
		sent, delivered, ringSize, dropped, rounds)

	// a reads again: what its buffers held, then new frames.
	n, _ := a.Drain()
	require.EqualValues(t, port.Stats().TxPackets.Load(), n)
	require.NoError(t, e.Send(unicast(3, 5, 0xbeef)))
	got, err := a.WaitRecv()
	require.NoError(t, err)
	require.Equal(t, unicast(3, 5, 0xbeef), got)
	exchange(t, b, c, 5)
}
