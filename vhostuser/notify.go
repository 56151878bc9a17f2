package vhostuser

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/internal/blockpoll"
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
//
// A worker sleeps on its kick fd in a blocking poll(2) on its own thread,
// not in Go's network poller: the kernel then wakes that thread directly
// when the frontend kicks. Through the network poller the wake-up waited
// until some thread of the process polled the network, and a worker that
// spins on another ring (virtio.Idle: runtime.Gosched in a loop) keeps its
// thread finding that goroutine runnable before it ever polls: guest B's
// kick sat unseen for as long as guest A's worker spun (issue 14: about 20
// us a hop of a ping-pong through the switch). The kick fd is not
// registered with the network poller at all (no os.File), so a kick wakes
// the one thread that waits for it and no other. A sleeping worker costs
// one thread blocked in the kernel (Go's threads are reused, not freed).
// The poll gives up the goroutine's P first (internal/blockpoll): with
// unix.Poll the sleeping worker held it, and the process's other workers
// stood still until Go's monitor thread took it back, up to 20 ms later.
type doorbell struct {
	// fd mode (kick >= 0): the kick fd, nonblocking (poll(2) does the
	// waiting), and the wake fd Interrupt and close write to (an eventfd,
	// or a pipe's ends). busy is held while Wait uses the fds, so close
	// frees them only once no Wait polls them (no reuse of a number).
	// The kick fd's open file description is the frontend's too: it can
	// clear O_NONBLOCK on it at any time, so its reads do not rely on the
	// flag (kickReader).
	kick        int
	wakeR       int
	wakeW       int
	busy        sync.Mutex
	pfd         [2]unix.PollFd
	interrupted atomic.Bool
	closing     atomic.Bool
	got         bool
	rerr        error
	buf         [64]byte
	kr          kickReader

	// poll mode (kick < 0).
	intr  chan struct{}
	timer *time.Timer
}

var _ virtio.Doorbell = (*doorbell)(nil)

// errKickFDClosed is Wait's error once close has begun.
var errKickFDClosed = fmt.Errorf("kick fd: %w", os.ErrClosed)

// newFDDoorbell returns a doorbell on fd, which it owns from then on (also
// on error: it is closed).
func newFDDoorbell(fd int) (*doorbell, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("kick fd: set nonblocking: %w", err)
	}
	r, w, err := newWakeFD()
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("kick fd: interrupt fd: %w", err)
	}
	d := &doorbell{kick: fd, wakeR: r, wakeW: w}
	d.kr.init(d.buf[:])
	return d, nil
}

// newPollDoorbell returns a doorbell for a ring without a kick fd.
func newPollDoorbell() *doorbell {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &doorbell{kick: -1, wakeR: -1, wakeW: -1, intr: make(chan struct{}, 1), timer: t}
}

// Wait blocks until the driver kicks (fd mode) or for pollInterval (poll
// mode).
func (d *doorbell) Wait() error {
	if d.kick < 0 {
		return d.pollWait()
	}
	for {
		if d.interrupted.Swap(false) {
			return virtio.ErrInterrupted
		}
		d.busy.Lock()
		if d.closing.Load() {
			d.busy.Unlock()
			return errKickFDClosed
		}
		d.got, d.rerr = false, nil
		d.waitFD()
		d.busy.Unlock()
		if d.got || d.rerr != nil {
			return d.rerr
		}
		// Woken by Interrupt or close, or spuriously: look again.
	}
}

// waitFD empties the kick fd, or sleeps until the kick fd or the wake fd
// is readable and then empties them. Interrupt and close set their flag
// before they write the wake fd, so a flag set after Wait looked at it
// still ends the poll below.
func (d *doorbell) waitFD() {
	if d.drain() || d.interrupted.Load() || d.closing.Load() {
		return
	}
	d.pfd[0] = unix.PollFd{Fd: int32(d.kick), Events: unix.POLLIN}
	d.pfd[1] = unix.PollFd{Fd: int32(d.wakeR), Events: unix.POLLIN}
	_, err := blockpoll.Poll(d.pfd[:])
	switch {
	case err == unix.EINTR:
		return
	case err != nil:
		d.rerr = fmt.Errorf("kick fd: poll: %w", err)
		return
	}
	if d.pfd[1].Revents != 0 {
		drainWakeFD(d.wakeR, d.buf[:])
	}
	if d.pfd[0].Revents&unix.POLLNVAL != 0 {
		d.rerr = fmt.Errorf("kick fd: poll: %w", unix.EBADF)
		return
	}
	if d.pfd[0].Revents != 0 {
		d.drain() // a hung-up pipe reads 0: errKickClosed
	}
}

// drain empties the kick fd. It returns false while nothing has been read.
func (d *doorbell) drain() bool {
	for i := 0; i < maxDrainReads; i++ {
		n, err := d.kr.read(d.kick, d.buf[:])
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

// drainWakeFD empties a wake fd (nonblocking).
func drainWakeFD(fd int, buf []byte) {
	for i := 0; i < maxDrainReads; i++ {
		if n, err := unix.Read(fd, buf); err != unix.EINTR && (err != nil || n == 0) {
			return
		}
	}
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
	if d.kick < 0 {
		select {
		case d.intr <- struct{}{}:
		default:
		}
		return
	}
	d.interrupted.Store(true)
	wakeUp(d.wakeW)
}

// reset forgets an Interrupt the device did not consume. The session calls
// it before StartQueue, when nothing else uses d.
func (d *doorbell) reset() {
	if d.kick < 0 {
		select {
		case <-d.intr:
		default:
		}
		return
	}
	d.interrupted.Store(false)
	drainWakeFD(d.wakeR, d.buf[:])
}

// close releases the doorbell's fds. A Wait blocked on it returns an error;
// no Interrupt may follow.
func (d *doorbell) close() {
	if d == nil || d.kick < 0 || d.closing.Swap(true) {
		return
	}
	wakeUp(d.wakeW)
	d.busy.Lock() // a Wait in poll(2) has returned; later ones see closing
	_ = unix.Close(d.kick)
	closeWakeFD(d.wakeR, d.wakeW)
	d.busy.Unlock()
}

// wakeUp writes one wake-up to a wake fd; a full one already holds one.
func wakeUp(fd int) {
	for {
		if _, err := unix.Write(fd, callValue[:]); err != unix.EINTR {
			return
		}
	}
}

// callValue is the 8-byte value written to a call fd: 1, which adds 1 to an
// eventfd counter; on a pipe only its presence matters.
var callValue = func() (b [8]byte) {
	ne.PutUint64(b[:], 1)
	return b
}()

// callFD is one call (or error) fd. Like the kick fd it is not registered
// with Go's network poller: a write to an eventfd registered there woke a
// thread of this process blocked in epoll_wait for nothing, 2.5
// epoll_pwait calls per round trip of a ping-pong (issue 14).
//
// Its open file description is shared with the frontend, which can clear
// O_NONBLOCK on it at any time. A write to a pipe or socket then still
// does not wait (pwritev2 RWF_NOWAIT, callfd_linux.go); an eventfd takes
// no such flag for writes, and a write waits only when its counter is at
// the maximum (2^64-2), which only the frontend can bring about, by
// writing that itself: the write then waits until somebody reads the
// counter, and with it whichever worker notified (another guest's,
// delivering a frame). The call watchdog (callwatch.go) finds such a
// write, reads the counter so the write ends, and tells the session,
// which ends: the frontend is hostile.
//
// The fd is closed once nobody uses it: state counts the writes in
// progress (bits 0-30, the watchdog's looks too), whether a notifier holds
// it (bit 31), and the writes finished (bits 32-63, wrapping), so
// a write and the close that follows a swap (SET_VRING_CALL) never meet on
// a reused number.
type callFD struct {
	fd    int
	state atomic.Uint64
	// eventfd: written with write(2) and watched; a pipe or socket is
	// written with RWF_NOWAIT (until the kernel refuses it: noWaitOff).
	eventfd   bool
	noWaitOff atomic.Bool
	// onBlocked is told, once, that a write waited on the full counter
	// (from the watchdog's goroutine); nil: nobody to tell.
	onBlocked func()
	// The watchdog's (its goroutine only; seen* under watch.mu): what it
	// saw at its last look, and whether it told onBlocked.
	seenBusy bool
	seenDone uint32
	told     bool
}

const (
	callHeld = 1 << 31 // state: a notifier holds the fd
	callBusy = callHeld - 1
	// What put is given back: after a write (one use less, one write
	// finished), after the watchdog's look, when a notifier lets go.
	putWrite = 1<<32 - 1
	putLook  = ^uint64(0)
	putHold  = ^uint64(callHeld - 1)
)

// newCallFD makes fd, which it owns from then on (also on error: it is
// closed), a call fd held by the notifier it is given to (set).
func newCallFD(fd int, onBlocked func()) (*callFD, error) {
	eventfd, err := notifyFDIsEventfd(fd)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("call fd: fstat: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("call fd: set nonblocking: %w", err)
	}
	c := &callFD{fd: fd, eventfd: eventfd, onBlocked: onBlocked}
	c.state.Store(callHeld)
	if eventfd {
		watchAdd(c)
	}
	return c, nil
}

// acquire takes a use of c (a write, or the watchdog's look); false once
// c is closed or closing.
func (c *callFD) acquire() bool {
	for {
		v := c.state.Load()
		if uint32(v) == 0 {
			return false
		}
		if c.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// put gives back what acquire or the notifier's hold took (putWrite,
// putLook, putHold) and closes the fd when nothing is left.
func (c *callFD) put(delta uint64) {
	if uint32(c.state.Add(delta)) != 0 {
		return
	}
	if c.eventfd {
		watchRemove(c)
	}
	_ = unix.Close(c.fd)
}

// write sends one notification. A full eventfd counter or pipe (EAGAIN)
// already holds a notification the driver has not consumed, so it is not
// an error; nor is a frontend that closed its end (EPIPE): the session
// notices a vanished frontend on its socket. It tells virtio.Idle that a
// driver thread was woken (spinning workers then yield their thread).
func (c *callFD) write() {
	virtio.CallSent()
	for c.writeOnce() == unix.EINTR {
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
// nothing. It does not allocate, and it does not wait for a swap.
func (n *notifier) Notify() error {
	for {
		c := n.cur.Load()
		if c == nil {
			return nil
		}
		if c.acquire() {
			c.write()
			c.put(putWrite)
			return nil
		}
		// Swapped out and closing since the Load: the new one is in cur.
	}
}

// set replaces the call fd (nil: none); the old one is closed once no
// Notify writes to it.
func (n *notifier) set(c *callFD) {
	if old := n.cur.Swap(c); old != nil {
		old.put(putHold)
	}
}

// closeFD closes *fd if it is set and marks it unset.
func closeFD(fd *int) {
	if *fd >= 0 {
		_ = unix.Close(*fd)
		*fd = -1
	}
}
