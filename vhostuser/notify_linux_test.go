//go:build linux

package vhostuser

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// notifyPair returns (the backend's end, the frontend's end) of an eventfd
// or a pipe; for a kick the backend reads, for a call it writes.
type notifyKind struct {
	name string
	make func(t *testing.T, backendReads bool) (backend, frontend int)
}

var notifyKinds = []notifyKind{
	{"eventfd", func(t *testing.T, _ bool) (int, int) {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		require.NoError(t, err)
		fe, err := unix.Dup(fd)
		require.NoError(t, err)
		t.Cleanup(func() { _ = unix.Close(fe) })
		return fd, fe
	}},
	{"pipe", func(t *testing.T, backendReads bool) (int, int) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
		if backendReads {
			t.Cleanup(func() { _ = unix.Close(p[1]) })
			return p[0], p[1]
		}
		t.Cleanup(func() { _ = unix.Close(p[0]) })
		return p[1], p[0]
	}},
}

func kickFD(fd int) {
	var one [8]byte
	ne.PutUint64(one[:], 1)
	_, _ = unix.Write(fd, one[:])
}

func TestDoorbell(t *testing.T) {
	for _, k := range notifyKinds {
		t.Run(k.name, func(t *testing.T) {
			be, fe := k.make(t, true)
			require.NoError(t, checkNotifyFD(be))
			d, err := newFDDoorbell(be)
			require.NoError(t, err)
			defer d.close()

			// Kicks before Wait: one Wait returns, the fd is drained.
			kickFD(fe)
			kickFD(fe)
			require.NoError(t, d.Wait())
			var buf [8]byte
			_, err = unix.Read(be, buf[:])
			require.ErrorIs(t, err, unix.EAGAIN, "drained")

			// A kick from another goroutine wakes a blocked Wait.
			done := make(chan error)
			go func() { done <- d.Wait() }()
			kickFD(fe)
			require.NoError(t, <-done)

			// Interrupt wakes a blocked Wait ...
			go func() { done <- d.Wait() }()
			d.Interrupt()
			require.ErrorIs(t, <-done, virtio.ErrInterrupted)
			// ... or the next one, once.
			d.Interrupt()
			require.ErrorIs(t, d.Wait(), virtio.ErrInterrupted)
			kickFD(fe)
			require.NoError(t, d.Wait())

			// reset forgets an unconsumed Interrupt.
			d.Interrupt()
			d.reset()
			kickFD(fe)
			require.NoError(t, d.Wait())
		})
	}
}

func TestDoorbellInterruptRace(t *testing.T) {
	be, fe := notifyKinds[0].make(t, true)
	d, err := newFDDoorbell(be)
	require.NoError(t, err)
	defer d.close()
	for i := 0; i < 200; i++ {
		var wg sync.WaitGroup
		wg.Go(func() { d.Interrupt() })
		wg.Go(func() { kickFD(fe) })
		// Whatever the interleaving, Wait returns (kick or interrupt)
		// and never blocks for good.
		err := d.Wait()
		require.True(t, err == nil || errors.Is(err, virtio.ErrInterrupted), "%v", err)
		wg.Wait()
		d.reset()
		var buf [8]byte
		_, _ = unix.Read(be, buf[:])
	}
}

func TestDoorbellWriterGone(t *testing.T) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	d, err := newFDDoorbell(p[0])
	require.NoError(t, err)
	defer d.close()
	require.NoError(t, unix.Close(p[1]))
	require.ErrorIs(t, d.Wait(), errKickClosed)
}

func TestDoorbellClosedUnderWait(t *testing.T) {
	be, _ := notifyKinds[0].make(t, true)
	d, err := newFDDoorbell(be)
	require.NoError(t, err)
	done := make(chan error)
	go func() { done <- d.Wait() }()
	d.close()
	err = <-done
	require.Error(t, err)
	require.NotErrorIs(t, err, virtio.ErrInterrupted)
}

func TestPollDoorbell(t *testing.T) {
	d := newPollDoorbell()
	require.NoError(t, d.Wait(), "polling: Wait returns after the interval")
	d.Interrupt()
	require.ErrorIs(t, d.Wait(), virtio.ErrInterrupted)
	done := make(chan error)
	go func() {
		for {
			if err := d.Wait(); err != nil {
				done <- err
				return
			}
		}
	}()
	d.Interrupt()
	require.ErrorIs(t, <-done, virtio.ErrInterrupted)
	d.Interrupt()
	d.reset()
	require.NoError(t, d.Wait())
}

func TestNotifier(t *testing.T) {
	for _, k := range notifyKinds {
		t.Run(k.name, func(t *testing.T) {
			var n notifier
			require.NoError(t, n.Notify(), "no fd: nothing to do")
			be, fe := k.make(t, false)
			require.NoError(t, checkNotifyFD(be))
			c, err := newCallFD(be, nil)
			require.NoError(t, err)
			n.set(c)
			defer n.set(nil)
			require.NoError(t, n.Notify())
			require.NoError(t, n.Notify())
			var buf [64]byte
			got, err := unix.Read(fe, buf[:])
			require.NoError(t, err)
			if k.name == "eventfd" {
				require.Equal(t, uint64(2), ne.Uint64(buf[:8]))
			} else {
				require.Equal(t, 16, got, "8 bytes per call, as the spec says")
			}
			// A full pipe or counter is not an error.
			if k.name == "pipe" {
				for i := 0; i < 10000; i++ {
					require.NoError(t, n.Notify())
				}
			}
		})
	}
}

// TestNotifyMarksCall: a call written to an fd is what makes spinning
// workers yield their threads (virtio.Idle), so Notify records it.
func TestNotifyMarksCall(t *testing.T) {
	const quiet = 20 * time.Millisecond
	var n notifier
	for t0 := time.Now(); virtio.SinceCall() < quiet; time.Sleep(quiet) {
		if time.Since(t0) > 10*time.Second {
			t.Skip("calls from elsewhere in the process never stopped")
		}
	}
	require.NoError(t, n.Notify())
	require.GreaterOrEqual(t, virtio.SinceCall(), quiet, "no fd: no call, nothing recorded")
	be, fe := notifyKinds[0].make(t, false)
	c, err := newCallFD(be, nil)
	require.NoError(t, err)
	n.set(c)
	defer n.set(nil)
	require.NoError(t, n.Notify())
	require.Less(t, virtio.SinceCall(), quiet, "a call written: recorded")
	var buf [8]byte
	_, err = unix.Read(fe, buf[:])
	require.NoError(t, err)
}

func TestNotifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	be, fe := notifyKinds[0].make(t, false)
	c, err := newCallFD(be, nil)
	require.NoError(t, err)
	var n notifier
	n.set(c)
	defer n.set(nil)
	var buf [8]byte
	allocs := testing.AllocsPerRun(1000, func() {
		_ = n.Notify()
		_, _ = unix.Read(fe, buf[:])
	})
	require.Zero(t, allocs)
}

func TestDoorbellWaitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	be, fe := notifyKinds[0].make(t, true)
	d, err := newFDDoorbell(be)
	require.NoError(t, err)
	defer d.close()
	allocs := testing.AllocsPerRun(1000, func() {
		kickFD(fe)
		_ = d.Wait()
	})
	require.Zero(t, allocs)
}

// TestNotifierSwapUnderNotify: SET_VRING_CALL replaces the fd while a
// device notifies from another goroutine (run with -race).
func TestNotifierSwapUnderNotify(t *testing.T) {
	var n notifier
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = n.Notify()
			}
		}
	})
	for i := 0; i < 200; i++ {
		be, _ := notifyKinds[i%2].make(t, false)
		c, err := newCallFD(be, nil)
		require.NoError(t, err)
		n.set(c)
	}
	close(stop)
	wg.Wait()
	n.set(nil)
}

func TestCheckNotifyFDRejects(t *testing.T) {
	fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.ErrorIs(t, checkNotifyFD(fd), ErrBadFDs)
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(null)
	require.ErrorIs(t, checkNotifyFD(null), ErrBadFDs)
}

func TestMapSharedOffsets(t *testing.T) {
	fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(fd)
	const size = 64 << 10
	require.NoError(t, unix.Ftruncate(fd, size))
	pattern := make([]byte, size)
	for i := range pattern {
		pattern[i] = byte(i * 13)
	}
	_, err = unix.Pwrite(fd, pattern, 0)
	require.NoError(t, err)
	for _, c := range []struct{ off, n uint64 }{{0, size}, {100, 1000}, {4095, 4097}, {8192, size - 8192}, {size - 1, 1}} {
		full, data, err := mapShared(fd, c.off, c.n)
		require.NoError(t, err)
		require.Equal(t, pattern[c.off:c.off+c.n], data)
		require.NoError(t, unix.Munmap(full))
	}
	for _, c := range []struct{ off, n uint64 }{{0, size + 1}, {1, size}, {size, 1}, {0, 0}, {^uint64(0), 2}} {
		_, _, err := mapShared(fd, c.off, c.n)
		require.ErrorIs(t, err, ErrBadMemory, "%+v", c)
	}
}

// TestDoorbellFrontendClearsNonblock: the kick fd's open file description
// is shared with the frontend, which can clear O_NONBLOCK on it at any
// time (fcntl on its own copy). The doorbell's reads must not block
// anyway: a Wait with no kick pending must still end on Interrupt and on
// close, and a kick must still wake it. Before the reads asked for
// RWF_NOWAIT themselves, the first read of an empty kick fd blocked, and
// close, which waits for Wait to leave the fd, hung with it (the session
// could not end).
func TestDoorbellFrontendClearsNonblock(t *testing.T) {
	SkipWithoutNoWait(t)
	for _, k := range notifyKinds {
		t.Run(k.name, func(t *testing.T) {
			be, fe := k.make(t, true)
			d, err := newFDDoorbell(be)
			require.NoError(t, err)
			require.NoError(t, unix.SetNonblock(be, false)) // as the frontend may

			within := func(done chan error) error {
				t.Helper()
				select {
				case err := <-done:
					return err
				case <-time.After(5 * time.Second):
					t.Fatal("Wait blocked in a read of the kick fd")
					return nil
				}
			}
			done := make(chan error, 1)
			go func() { done <- d.Wait() }()
			d.Interrupt()
			require.ErrorIs(t, within(done), virtio.ErrInterrupted)

			go func() { done <- d.Wait() }()
			kickFD(fe)
			require.NoError(t, within(done))

			go func() { done <- d.Wait() }()
			time.Sleep(10 * time.Millisecond) // Wait asleep in poll(2), or reading
			closed := make(chan error, 1)
			go func() { d.close(); closed <- nil }()
			within(closed)
			require.Error(t, within(done))
		})
	}
}

// TestDoorbellReadFallback: where preadv2 refuses RWF_NOWAIT (kernels
// before 5.12 for an eventfd) the doorbell reads with read(2) and works as
// before.
func TestDoorbellReadFallback(t *testing.T) {
	for _, k := range notifyKinds {
		t.Run(k.name, func(t *testing.T) {
			be, fe := k.make(t, true)
			d, err := newFDDoorbell(be)
			require.NoError(t, err)
			defer d.close()
			d.kr.fallback = true
			kickFD(fe)
			require.NoError(t, d.Wait())
			done := make(chan error, 1)
			go func() { done <- d.Wait() }()
			d.Interrupt()
			require.ErrorIs(t, <-done, virtio.ErrInterrupted)
			kickFD(fe)
			require.NoError(t, d.Wait())
		})
	}
}

// TestCallFDFrontendBlocks: the call fd's open file description is shared
// with the frontend, which can clear O_NONBLOCK on it. A pipe's write then
// still returns at once when the pipe is full (RWF_NOWAIT). An eventfd's
// write waits when the frontend has filled the counter (2^64-2) itself:
// the call watchdog ends the wait within two ticks and tells the session.
func TestCallFDFrontendBlocks(t *testing.T) {
	defer watchTick.Store(watchTick.Load())
	watchTick.Store(int64(20 * time.Millisecond))
	within := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal(what)
		}
	}
	t.Run("pipe", func(t *testing.T) {
		SkipWithoutNoWait(t)
		be, _ := notifyKinds[1].make(t, false)
		c, err := newCallFD(be, func() { t.Error("a pipe is not watched") })
		require.NoError(t, err)
		var n notifier
		n.set(c)
		defer n.set(nil)
		for {
			if _, err := unix.Write(be, callValue[:]); err == unix.EAGAIN {
				break
			}
		}
		require.NoError(t, unix.SetNonblock(be, false)) // as the frontend may
		done := make(chan struct{})
		go func() { _ = n.Notify(); close(done) }()
		within(done, "Notify waited on a full pipe")
	})
	t.Run("eventfd", func(t *testing.T) {
		be, fe := notifyKinds[0].make(t, false)
		told := make(chan struct{})
		c, err := newCallFD(be, func() { close(told) })
		require.NoError(t, err)
		var n notifier
		n.set(c)
		defer n.set(nil)
		var full [8]byte
		ne.PutUint64(full[:], 1<<64-2)
		_, err = unix.Write(fe, full[:])
		require.NoError(t, err)
		require.NoError(t, unix.SetNonblock(fe, false))
		done := make(chan struct{})
		go func() { _ = n.Notify(); close(done) }()
		within(told, "the watchdog did not tell")
		within(done, "Notify still waits")
		fl, err := unix.FcntlInt(uintptr(be), unix.F_GETFL, 0)
		require.NoError(t, err)
		require.NotZero(t, fl&unix.O_NONBLOCK, "nonblocking again")
		// Later calls do not wait, and a call still arrives.
		require.NoError(t, n.Notify())
		var buf [8]byte
		_, err = unix.Read(fe, buf[:])
		require.NoError(t, err)
		require.NotZero(t, ne.Uint64(buf[:]))
	})
}

// TestCallFDClosedAfterLastWrite: a call fd swapped out (SET_VRING_CALL)
// while a Notify writes to it is closed when that write ends, not under
// it; and once closed, it is off the watchdog's list.
func TestCallFDClosedAfterLastWrite(t *testing.T) {
	be, _ := notifyKinds[0].make(t, false)
	c, err := newCallFD(be, nil)
	require.NoError(t, err)
	var n notifier
	n.set(c)
	require.True(t, c.acquire()) // a write in progress
	n.set(nil)
	_, err = unix.FcntlInt(uintptr(be), unix.F_GETFD, 0)
	require.NoError(t, err, "open while a write uses it")
	c.put(putWrite)
	_, err = unix.FcntlInt(uintptr(be), unix.F_GETFD, 0)
	require.ErrorIs(t, err, unix.EBADF, "closed after the last write")
	require.False(t, c.acquire(), "no use once closed")
	watch.mu.Lock()
	_, listed := watch.fds[c]
	watch.mu.Unlock()
	require.False(t, listed)
}
