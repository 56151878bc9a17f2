package vhostuser_test

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// started dials h, negotiates everything but LOG_ALL, and sets up pairs
// queue pairs of size entries.
func started(t *testing.T, h *harness, opts vhostusertest.Options, pairs int, size uint16) *vhostusertest.Frontend {
	t.Helper()
	opts.QueuePairs = max(opts.QueuePairs, pairs)
	f := vhostusertest.New(t, opts)
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(pairs, size))
	return f
}

func TestEventIdxCalls(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	d := h.lastDevice()
	rx := f.Ring(0).Driver
	require.NotZero(t, f.Features()&virtio.FEventIdx)

	sendAndWait := func(n uint64) {
		t.Helper()
		want := d.rx.Load() + n
		for i := uint64(0); i < n; i++ {
			require.NoError(t, f.Send(frame(60, byte(i))))
			eventually(t, "echo", func() bool { return d.rx.Load() >= want-n+i+1 })
		}
	}
	c0 := f.Calls(0)
	// used_event is 0: the first used element crosses it, one call.
	sendAndWait(1)
	require.Equal(t, c0+1, f.Calls(0))
	// The driver reads nothing, used_event stays behind: no more calls
	// however the device batches (virtio 1.2 §2.7.10).
	sendAndWait(5)
	require.Equal(t, c0+1, f.Calls(0))
	for i := 0; i < 6; i++ {
		_, ok := f.Recv()
		require.True(t, ok)
	}
	// used_event = 6 now: the next element crosses it.
	sendAndWait(1)
	require.Equal(t, c0+2, f.Calls(0))
	_, ok := f.Recv()
	require.True(t, ok)
	// Interrupts off (used_event half the index space away): no call.
	rx.DisableInterrupts()
	sendAndWait(3)
	require.Equal(t, c0+2, f.Calls(0))
}

func TestNoEventIdxInterruptFlag(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(vhostuser.DefaultFeatures&^(virtio.FEventIdx|vhostuser.FLogAll)))
	require.NoError(t, f.SetupQueues(1, 64))
	d := h.lastDevice()
	f.Ring(0).Driver.DisableInterrupts() // VRING_AVAIL_F_NO_INTERRUPT
	c0 := f.Calls(0)
	for i := 0; i < 3; i++ {
		require.NoError(t, f.Send(frame(60, byte(i))))
		eventually(t, "echo", func() bool { return d.rx.Load() == uint64(i+1) })
	}
	require.Equal(t, c0, f.Calls(0))
	f.Ring(0).Driver.EnableInterrupts()
	require.NoError(t, f.Send(frame(60, 9)))
	_, err := f.WaitCall(0)
	require.NoError(t, err)
}

func TestDirtyLog(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{Regions: 2, RegionSize: 4 << 20}, 1, 64)
	d := h.lastDevice()
	// 8 MiB of guest memory: 2048 pages, 256 bytes of bitmap.
	bitmap, err := f.SetLogBase(256)
	require.NoError(t, err)
	require.NoError(t, f.SetFeatures(f.Features()|vhostuser.FLogAll))
	require.True(t, d.logOn.Load())
	for i := 0; i < 2; i++ {
		require.NoError(t, f.SetVringAddr(i, true, 0))
	}
	rx, tx := f.Ring(0).Driver, f.Ring(1).Driver
	dirty := func(bm []byte, gpa uint64) bool { p := gpa >> 12; return bm[p/8]&(1<<(p%8)) != 0 }
	inside := func(dr *virtiotest.Driver, gpa uint64) bool {
		return gpa >= dr.MemGPA() && gpa < dr.MemGPA()+uint64(len(dr.Mem()))
	}
	// check: the used rings and every page of receive chain k's buffer
	// (descriptor k: the chains were posted in order, one 2 KiB buffer
	// each) are logged, and nothing outside the rings' memory is.
	check := func(bm []byte, k uint16) {
		t.Helper()
		// The echo device pushes the transmit chains after it wrote the
		// frame back: wait for them.
		eventually(t, "transmit chains used", func() bool { return f.TxDone(0) })
		eventually(t, "used rings logged", func() bool { return dirty(bm, rx.UsedGPA()) && dirty(bm, tx.UsedGPA()) })
		buf := rx.ReadDesc(k).Addr
		for gpa := buf; gpa < buf+virtio.NetHdrSize+1500; gpa += 512 {
			require.True(t, dirty(bm, gpa), "receive buffer page %#x logged", gpa)
		}
		for p := uint64(0); p < uint64(len(bm))*8; p++ {
			if dirty(bm, p<<12) {
				require.True(t, inside(rx, p<<12) || inside(tx, p<<12), "page %#x logged outside the rings", p<<12)
			}
		}
	}
	echoOnce(t, f, 0, frame(1500, 1), vhostusertest.LayoutSplit)
	check(bitmap, 0)

	// Resize the log while logging and running (QEMU does on hotplug).
	bitmap2, err := f.SetLogBase(512)
	require.NoError(t, err)
	echoOnce(t, f, 0, frame(1500, 2), vhostusertest.LayoutSplit)
	check(bitmap2, 1)
	require.NotEqual(t, rx.ReadDesc(0).Addr>>12, (rx.ReadDesc(1).Addr+1511)>>12, "the second buffer crosses a page")

	// Logging off: nothing more is marked.
	require.NoError(t, f.SetFeatures(f.Features()&^vhostuser.FLogAll))
	require.False(t, d.logOn.Load())
	clear(bitmap2)
	echoOnce(t, f, 0, frame(1500, 3), vhostusertest.LayoutSplit)
	require.Equal(t, make([]byte, len(bitmap2)), bitmap2)
}

func TestGetVringBaseAndRestart(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	d := h.lastDevice()
	for i := 0; i < 5; i++ {
		echoOnce(t, f, 0, frame(100, byte(i)), vhostusertest.LayoutSplit)
	}
	txBase, err := f.GetVringBase(1)
	require.NoError(t, err)
	require.Equal(t, uint16(5), txBase)
	rxBase, err := f.GetVringBase(0)
	require.NoError(t, err)
	require.Equal(t, uint16(5), rxBase, "one mergeable buffer per frame")
	require.Equal(t, d.starts.Load(), d.stops.Load(), "both rings stopped")

	// A frame added while stopped is picked up after the restart, from
	// the avail index the ring stopped at.
	restartWithQueued(t, f, rxBase, txBase)
	echoOnce(t, f, 0, frame(100, 43), vhostusertest.LayoutSplit)
}

func TestResetOwnerAndReconnect(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	d1 := h.lastDevice()
	echoOnce(t, f, 0, frame(200, 1), vhostusertest.LayoutSplit)

	require.NoError(t, f.ResetOwner())
	require.Equal(t, d1.starts.Load(), d1.stops.Load(), "RESET_OWNER stops every ring")
	require.NoError(t, f.SetupQueues(1, 64))
	echoOnce(t, f, 0, frame(200, 2), vhostusertest.LayoutSplit)

	// The frontend goes away: a clean end, the device is closed.
	f.Disconnect()
	e := h.waitEnded()
	require.NoError(t, e.err)
	require.Equal(t, d1.info.ID, e.info.ID)
	require.True(t, d1.closed.Load())
	require.Equal(t, d1.starts.Load(), d1.stops.Load())

	// It comes back: a new session with a new device.
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 64))
	echoOnce(t, f, 0, frame(200, 3), vhostusertest.LayoutSplit)
	d2 := h.lastDevice()
	require.NotSame(t, d1, d2)
	st := h.srv.Stats()
	require.Equal(t, uint64(2), st.Sessions)
	require.Equal(t, uint64(1), st.Active)
	require.Equal(t, uint64(1), st.Disconnects)
	require.Zero(t, st.Errors)
}

func TestMemSlots(t *testing.T) {
	h := newHarness(t, vhostuser.Options{MaxMemSlots: 16})
	f := started(t, h, vhostusertest.Options{Regions: 2, RegionSize: 4 << 20}, 1, 64)
	n, err := f.Request(vhostuser.ReqGetMaxMemSlots, true, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(16), nativeU64(n))
	echoOnce(t, f, 0, frame(300, 1), vhostusertest.LayoutSplit)

	// A region added under running rings; a frame from a buffer in it.
	r, err := f.AddRegion(2 << 20)
	require.NoError(t, err)
	fr := frame(500, 2)
	buf := make([]byte, virtio.NetHdrSize+len(fr))
	copy(buf[virtio.NetHdrSize:], fr)
	copy(r.Data[4096:], buf)
	_, err = f.Ring(1).Driver.AddElems([]virtiotest.Elem{{GPA: r.GPA + 4096, Len: uint32(len(buf))}}, false)
	require.NoError(t, err)
	require.NoError(t, f.Flush(0))
	got, err := f.WaitRecv()
	require.NoError(t, err)
	require.Equal(t, fr, got)

	// Removed again: the rings go on.
	require.NoError(t, f.RemoveRegion(r))
	echoOnce(t, f, 0, frame(300, 3), vhostusertest.LayoutSplit)
	require.Nil(t, h.lastDevice().broken.Load())
}

func TestSetMemTableWhileRunning(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	opts := vhostusertest.Options{ProtocolFeatures: vhostuser.SupportedProtocolFeatures &^ vhostuser.ProtocolFConfigureMemSlots}
	f := started(t, h, opts, 1, 64)
	d := h.lastDevice()
	echoOnce(t, f, 0, frame(300, 1), vhostusertest.LayoutSplit)
	stops := d.stops.Load()
	require.NoError(t, f.SetMemTable())
	require.Greater(t, d.stops.Load(), stops, "rings were stopped around the new table")
	for i := 0; i < 3; i++ {
		echoOnce(t, f, 0, frame(300, byte(10+i)), vhostusertest.LayoutSplit)
	}
}

// TestRingsBeforeMemory: a frontend that sets its rings up (kick
// included) before the memory table; the rings start when it comes.
func TestRingsBeforeMemory(t *testing.T) {
	for _, slots := range []bool{false, true} {
		h := newHarness(t, vhostuser.Options{})
		opts := vhostusertest.Options{}
		if !slots {
			opts.ProtocolFeatures = vhostuser.SupportedProtocolFeatures &^ vhostuser.ProtocolFConfigureMemSlots
		}
		f := vhostusertest.New(t, opts)
		require.NoError(t, f.Dial(h.path))
		require.NoError(t, f.Negotiate(0))
		require.NoError(t, f.StartRings(1, 64))
		require.Zero(t, h.lastDevice().starts.Load())
		require.NoError(t, f.SendMemory())
		d := h.lastDevice()
		require.Equal(t, uint64(2), d.starts.Load()-d.stops.Load(), "both rings run")
		echoOnce(t, f, 0, frame(128, 1), vhostusertest.LayoutSplit)
	}
}

func TestKickNoFDPolls(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	require.NoError(t, f.SetVringKickNoFD(1))
	kicks := f.Kicks(1)
	for i := 0; i < 20; i++ {
		// Published without a kick: the device finds them by polling.
		require.NoError(t, f.AddFrame(0, virtio.NetHdr{}, frame(80, byte(i)), vhostusertest.LayoutSplit))
		f.Ring(1).Driver.Publish()
		got, err := f.WaitRecv()
		require.NoError(t, err)
		require.Equal(t, frame(80, byte(i)), got)
	}
	require.Equal(t, kicks, f.Kicks(1))
}

func TestCallFDSwap(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	for i := 0; i < 3; i++ {
		require.NoError(t, f.SetVringCall(0))
		before := f.Calls(0)
		require.NoError(t, f.Send(frame(64, byte(i))))
		n, err := f.WaitCall(0)
		require.NoError(t, err)
		require.Greater(t, n, before)
		_, err = f.WaitRecv()
		require.NoError(t, err)
	}
}

func TestPipesOnly(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{Pipes: true}, 1, 128)
	for i := 0; i < 50; i++ {
		echoOnce(t, f, 0, frame(1000, byte(i)), vhostusertest.LayoutSplit)
	}
	require.NoError(t, f.SetVringCall(0))
	echoOnce(t, f, 0, frame(1000, 1), vhostusertest.LayoutSplit)
}

func TestDeviceRequests(t *testing.T) {
	h := newHarness(t, vhostuser.Options{MTU: 9000})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	d := h.lastDevice()
	_, err := f.Request(vhostuser.ReqNetSetMTU, false, u64le(1500))
	require.NoError(t, err)
	require.Equal(t, uint32(1500), d.mtu.Load())
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	var p [8]byte
	copy(p[:], mac[:])
	_, err = f.Request(vhostuser.ReqSendRARP, false, p[:])
	require.NoError(t, err)
	require.Equal(t, mac, *d.rarp.Load())
	_, err = f.Request(vhostuser.ReqSetStatus, false, u64le(0x0f))
	require.NoError(t, err)
	st, err := f.Request(vhostuser.ReqGetStatus, true, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(0x0f), nativeU64(st))
	q, err := f.Request(vhostuser.ReqGetQueueNum, true, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(2), nativeU64(q), "GET_QUEUE_NUM counts virtqueues: 2 per queue pair")
	// SET_VRING_ENABLE 0 takes the ring from the device, 1 gives it back.
	stops := d.stops.Load()
	require.NoError(t, f.SetVringEnable(1, false))
	require.Equal(t, stops+1, d.stops.Load())
	require.NoError(t, f.SetVringEnable(1, true))
	echoOnce(t, f, 0, frame(64, 1), vhostusertest.LayoutSplit)
}

func TestClientRole(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "qemu.sock")
	ended := make(chan error, 16)
	var devs []*echoDevice
	srv, err := vhostuser.NewServer(vhostuser.Options{
		Logger:       testLogger(t),
		ReconnectMin: 5e6, ReconnectMax: 20e6, // 5 ms .. 20 ms
		NewDevice: func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
			d := newEchoDevice(info)
			devs = append(devs, d)
			return d, nil
		},
		OnSessionEnd: func(_ vhostuser.SessionInfo, err error) { ended <- err },
	})
	require.NoError(t, err)
	require.NoError(t, srv.Connect(path))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Nobody listens yet: the backend keeps trying.
	eventually(t, "dial failures", func() bool { return srv.Stats().DialFailures >= 2 })
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })

	f := vhostusertest.New(t, vhostusertest.Options{})
	for round := 0; round < 3; round++ {
		require.NoError(t, f.Accept(l))
		require.NoError(t, f.Negotiate(0))
		require.NoError(t, f.SetupQueues(1, 64))
		echoOnce(t, f, 0, frame(500, byte(round)), vhostusertest.LayoutSplit)
		if round == 1 {
			// A frontend that sends garbage: the session fails, and the
			// backend connects again all the same.
			require.NoError(t, f.WriteRaw([]byte("not a vhost-user message")))
			require.NoError(t, f.WaitClosed())
			require.Error(t, <-ended)
			continue
		}
		f.Disconnect()
		require.NoError(t, <-ended)
	}
	require.GreaterOrEqual(t, srv.Stats().Sessions, uint64(3))
}

func TestListenSocketFile(t *testing.T) {
	dir := shortTempDir(t)
	newSrv := func(mode os.FileMode) *vhostuser.Server {
		srv, err := vhostuser.NewServer(vhostuser.Options{
			SocketMode: mode,
			Logger:     testLogger(t),
			NewDevice:  func(info vhostuser.SessionInfo) (vhostuser.Device, error) { return newEchoDevice(info), nil },
		})
		require.NoError(t, err)
		return srv
	}

	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		require.NoError(t, err)
		l.SetUnlinkOnClose(false)
		require.NoError(t, l.Close())
		require.FileExists(t, path)
		srv := newSrv(0)
		require.NoError(t, srv.Listen(path))
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ctx) }()
		f := vhostusertest.New(t, vhostusertest.Options{})
		require.NoError(t, f.Dial(path))
		require.NoError(t, f.Negotiate(0))
		cancel()
		<-done
		require.NoFileExists(t, path, "Serve removes its socket at shutdown")
		require.NoError(t, f.WaitClosed())
	})
	t.Run("live socket kept", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		require.NoError(t, err)
		defer l.Close()
		require.ErrorContains(t, newSrv(0).Listen(path), "in use")
	})
	t.Run("regular file kept", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
		require.ErrorContains(t, newSrv(0).Listen(path), "not a socket")
		require.FileExists(t, path)
	})
	t.Run("close without serve", func(t *testing.T) {
		path := filepath.Join(dir, "unused.sock")
		srv := newSrv(0)
		require.NoError(t, srv.Listen(path))
		require.FileExists(t, path)
		srv.Close()
		require.NoFileExists(t, path)
	})
	t.Run("mode", func(t *testing.T) {
		path := filepath.Join(dir, "mode.sock")
		srv := newSrv(0o660)
		require.NoError(t, srv.Listen(path))
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, srv.Serve(ctx))
		require.NoFileExists(t, path)
	})
}

func TestShutdownClosesSessions(t *testing.T) {
	h := newHarness(t, vhostuser.Options{QueuePairs: 2})
	f1 := started(t, h, vhostusertest.Options{}, 2, 64)
	f2 := started(t, h, vhostusertest.Options{}, 1, 64)
	echoOnce(t, f1, 1, frame(64, 1), vhostusertest.LayoutSplit)
	echoOnce(t, f2, 0, frame(64, 2), vhostusertest.LayoutSplit)
	require.Equal(t, uint64(2), h.srv.Stats().Active)
	h.stop()
	require.NoError(t, f1.WaitClosed())
	require.NoError(t, f2.WaitClosed())
	for id := uint64(1); id <= 2; id++ {
		d := h.device(id)
		require.True(t, d.closed.Load())
		require.Equal(t, d.starts.Load(), d.stops.Load())
	}
	require.Zero(t, h.srv.Stats().Active)
	require.Empty(t, h.srv.Sessions())
	require.NoFileExists(t, h.path)
	for i := 0; i < 2; i++ {
		e := h.waitEnded()
		require.NoError(t, e.err, "shutdown is not a session error")
	}
}

func u64le(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

func nativeU64(b []byte) uint64 { return binary.NativeEndian.Uint64(b) }
