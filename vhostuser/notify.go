package vhostuser

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Kick and call fds are eventfds, or pipes where eventfd is missing (QEMU on
// macOS): "Each file descriptor will be used for receiving or sending events
// by reading or writing (respectively) an 8-byte value" (vhost-user spec
// "Support for platforms other than Linux"). The code below never needs to
// know which: it reads whatever is there and writes 8 bytes.

// pollInterval is how long a polling Doorbell (SET_VRING_KICK with
// VHOST_USER_VRING_NOFD_MASK) sleeps before it tells the device to look at
// the ring again.
const pollInterval = 200 * time.Microsecond

// maxDrainReads bounds the reads one Wait makes to empty a kick fd: an
// eventfd in semaphore mode gives 1 per read, and a frontend could have
// written 2^64-2.
const maxDrainReads = 16

// errKickClosed is returned by Wait when the frontend closed the write end
// of a kick pipe.
var errKickClosed = errors.New("kick fd closed by the frontend")

// doorbell implements virtio.Doorbell on a kick fd, or by polling when the
// frontend passed none.
type doorbell struct {
	// fd mode: the kick fd, nonblocking and registered with Go's poller.
	f           *os.File
	rc          syscall.RawConn
	drainFn     func(fd uintptr) bool // d.drain, bound once (no allocation per Wait)
	interrupted atomic.Bool
	got         bool
	rerr        error
	buf         [64]byte

	// poll mode (f == nil).
	intr  chan struct{}
	timer *time.Timer
}

var _ virtio.Doorbell = (*doorbell)(nil)

// newFDDoorbell returns a doorbell on fd, which it owns from then on (also
// on error: it is closed).
func newFDDoorbell(fd int) (*doorbell, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("kick fd: set nonblocking: %w", err)
	}
	// A nonblocking fd makes os.NewFile register it with the runtime
	// poller (epoll, kqueue), so Wait parks the goroutine, not a thread.
	f := os.NewFile(uintptr(fd), "vhost-user-kick")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("kick fd: %w", err)
	}
	d := &doorbell{f: f, rc: rc}
	d.drainFn = d.drain
	return d, nil
}

// newPollDoorbell returns a doorbell for a ring without a kick fd.
func newPollDoorbell() *doorbell {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &doorbell{intr: make(chan struct{}, 1), timer: t}
}

// Wait blocks until the driver kicks (fd mode) or for pollInterval (poll
// mode).
func (d *doorbell) Wait() error {
	if d.f == nil {
		return d.pollWait()
	}
	for {
		if d.interrupted.Swap(false) {
			return virtio.ErrInterrupted
		}
		d.got, d.rerr = false, nil
		err := d.rc.Read(d.drainFn)
		switch {
		case err == nil:
			return d.rerr
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Interrupt's way of waking us. Clear the deadline before the
			// flag is looked at again, so an Interrupt that races with
			// this is seen either by its flag or by its new deadline.
			_ = d.f.SetReadDeadline(time.Time{})
		default:
			return fmt.Errorf("kick fd: %w", err)
		}
	}
}

// drain empties the kick fd. It returns false (wait for readability) while
// nothing has been read.
func (d *doorbell) drain(fd uintptr) bool {
	for i := 0; i < maxDrainReads; i++ {
		n, err := unix.Read(int(fd), d.buf[:])
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return d.got
		case err != nil:
			d.rerr = fmt.Errorf("kick fd: %w", err)
			return true
		case n == 0:
			d.rerr = errKickClosed
			return true
		default:
			d.got = true
		}
	}
	return true
}

func (d *doorbell) pollWait() error {
	// An Interrupt already made wins: the select below picks at random
	// when the interval has passed too (a descheduled goroutine).
	select {
	case <-d.intr:
		return virtio.ErrInterrupted
	default:
	}
	d.timer.Reset(pollInterval)
	select {
	case <-d.intr:
		d.timer.Stop()
		return virtio.ErrInterrupted
	case <-d.timer.C:
		return nil
	}
}

// Interrupt makes a blocked Wait, or the next one, return
// virtio.ErrInterrupted. It is safe to call from any goroutine.
func (d *doorbell) Interrupt() {
	if d.f == nil {
		select {
		case d.intr <- struct{}{}:
		default:
		}
		return
	}
	d.interrupted.Store(true)
	_ = d.f.SetReadDeadline(time.Unix(1, 0))
}

// reset forgets an Interrupt the device did not consume. The session calls
// it before StartQueue, when nothing else uses d.
func (d *doorbell) reset() {
	if d.f == nil {
		select {
		case <-d.intr:
		default:
		}
		return
	}
	d.interrupted.Store(false)
	_ = d.f.SetReadDeadline(time.Time{})
}

func (d *doorbell) close() {
	if d != nil && d.f != nil {
		_ = d.f.Close()
	}
}

// callValue is the 8-byte value written to a call fd: 1, which adds 1 to an
// eventfd counter; on a pipe only its presence matters.
var callValue = func() (b [8]byte) {
	ne.PutUint64(b[:], 1)
	return b
}()

// callFD is one call fd.
type callFD struct {
	f       *os.File
	rc      syscall.RawConn
	writeFn func(fd uintptr) bool
}

func newCallFD(fd int) (*callFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("call fd: set nonblocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "vhost-user-call")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("call fd: %w", err)
	}
	c := &callFD{f: f, rc: rc}
	c.writeFn = c.write
	return c, nil
}

// write sends one notification. A full eventfd counter or pipe (EAGAIN)
// already holds a notification the driver has not consumed, so it is not
// an error; nor is a frontend that closed its end (EPIPE): the session
// notices a vanished frontend on its socket.
func (c *callFD) write(fd uintptr) bool {
	for {
		_, err := unix.Write(int(fd), callValue[:])
		if err != unix.EINTR {
			return true
		}
	}
}

// notifier implements virtio.Notifier for one ring. Its call fd can be
// replaced (SET_VRING_CALL) while the device notifies: QEMU swaps call fds
// on a running ring whenever the guest masks or unmasks the vector.
type notifier struct {
	cur atomic.Pointer[callFD]
}

var _ virtio.Notifier = (*notifier)(nil)

// Notify signals the driver through the current call fd; with none (not
// yet set, or VHOST_USER_VRING_NOFD_MASK: the driver polls) it does
// nothing. It never blocks and does not allocate.
func (n *notifier) Notify() error {
	c := n.cur.Load()
	if c == nil {
		return nil
	}
	if err := c.rc.Write(c.writeFn); err != nil {
		// c was closed under us by a SET_VRING_CALL: the new fd stands
		// for the same interrupt, so notify that one.
		if c2 := n.cur.Load(); c2 != nil && c2 != c {
			_ = c2.rc.Write(c2.writeFn)
		}
	}
	return nil
}

// set replaces the call fd (nil: none) and closes the old one. The close
// waits for a Notify in flight on it (os.File reference counting), so the
// fd number cannot be reused under a concurrent write.
func (n *notifier) set(c *callFD) {
	if old := n.cur.Swap(c); old != nil {
		_ = old.f.Close()
	}
}

// closeFD closes *fd if it is set and marks it unset.
func closeFD(fd *int) {
	if *fd >= 0 {
		_ = unix.Close(*fd)
		*fd = -1
	}
}
