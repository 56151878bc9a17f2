package virtio

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoDoorbell is returned by Idle.Wait when the worker would sleep but has
// no doorbell to sleep on (a queue started without a kick fd and not
// polled): the worker must end.
var ErrNoDoorbell = errors.New("no doorbell to wait on")

// Idle is the idle step of a device worker on one queue: the one place that
// decides between spinning, re-arming driver notifications and sleeping.
// A worker calls Busy after a poll of its queue found work and Wait after
// one found none, then polls again (and checks whether it must stop).
//
// Wait first spins: for Spin after the ring ran empty it yields the
// processor and returns, so that under load a driver that keeps adding
// buffers refills the ring before the worker sleeps and notifications stay
// off (a kick costs a write(2) in the driver and a thread wake-up here,
// several microseconds on each side). Then it re-enables notifications and
// looks at the queue once more before it sleeps on the doorbell:
//
//	device (Wait)                          driver
//	EnableNotify: store avail_event        add chain: store avail->idx
//	  (or clear VIRTQ_USED_F_NO_NOTIFY)    full fence
//	full fence                             load avail_event / used flags:
//	load avail->idx: new chains? poll        kick if asked to
//	else sleep on the kick
//
// Each side stores, fences, then loads what the other stored, so at least
// one of them sees the other's store: either the driver sees that the
// device asked for a kick and kicks, or the device sees the new chain and
// polls instead of sleeping (virtio 1.2 §2.7.10; Linux vhost's
// vhost_enable_notify and virtqueue_kick_prepare). Without the fences either
// load may pass the earlier store (even on amd64, through the store buffer)
// and both sides wait for each other forever. The fences are in
// Queue.EnableNotify and, on the driver side, virtiotest.Driver.
//
// The spin is bounded in time, not in yields: a yield costs from 0.1 to
// several microseconds depending on what else the process runs, so a count
// gave spins from tens of microseconds to milliseconds. A ping-pong
// through the switch needs the spin to outlast one round trip (the
// worker's next frame is the answer to the one it just passed on);
// anything longer only burns CPU after the last frame.
//
// A spin that follows a used buffer notification (a call: CallSent, from
// any device of the process, within the last Spin) also gives up the
// worker's OS thread on each turn (sched_yield(2) on Linux): the call woke
// a driver thread (a guest's vCPU, a frontend) that needs a CPU to answer,
// and a thread that spins through runtime.Gosched alone keeps its CPU until
// the kernel's time slice ends. On 2 CPUs a ping-pong through the switch
// between guests that sleep on interrupts had both guests' workers spinning
// while the woken guest waited for one of them to sleep, one spin (50 us)
// a hop (issue 14: 155 us a round trip, 1.3 kicks). A yield with nothing
// else runnable returns at once. Drivers that poll with notifications off
// get no calls, so their workers spin without the syscall.
//
// After a wake-up Wait turns notifications off again: the worker polls
// until the ring runs empty, with no kicks while it does.
//
// An Idle belongs to one worker goroutine; it is not safe for concurrent
// use.
type Idle struct {
	// Spin is how long after the ring ran empty Wait keeps yielding
	// instead of sleeping; zero sleeps at once.
	Spin time.Duration
	// Poll makes Wait only ever yield: the worker busy-polls (benchmarks).
	Poll   bool
	n      int           // empty polls in a row
	start  time.Duration // when the ring ran empty (n > 0), since epoch
	polite bool          // the spin also yields the thread: a call was sent lately
}

// clockEvery is how many empty polls share one reading of the clock (75 ns
// on a 2-vCPU KVM guest, a yield 0.2 us or more).
const clockEvery = 4

// Busy records that the last poll found work: the next Wait starts its spin
// anew.
func (w *Idle) Busy() { w.n = 0 }

// Wait is called after a poll of q found nothing; see Idle. It returns nil
// when the worker should poll again, the doorbell's error (ErrInterrupted
// after Interrupt: the worker should check whether it must stop), or
// ErrNoDoorbell. If mu is not nil, the caller holds it and it guards q (a
// receive queue other goroutines also write): Wait releases it while it
// yields or sleeps and holds it again when it returns.
func (w *Idle) Wait(q *Queue, kick Doorbell, mu sync.Locker) error {
	if w.Poll || w.spinning() {
		unlock(mu)
		runtime.Gosched()
		if w.polite {
			yieldThread()
		}
		lock(mu)
		return nil
	}
	w.n = 0
	if q.EnableNotify() {
		q.DisableNotify()
		return nil
	}
	if kick == nil {
		return ErrNoDoorbell
	}
	unlock(mu)
	err := kick.Wait()
	lock(mu)
	q.DisableNotify()
	return err
}

// spinning counts an empty poll and reports whether the spin goes on; on
// the first poll and every clockEvery-th it reads the clock and decides
// whether the spin is polite.
func (w *Idle) spinning() bool {
	if w.Spin <= 0 {
		return false
	}
	w.n++
	if w.n != 1 && w.n%clockEvery != 0 {
		return true
	}
	now := time.Since(epoch)
	if w.n == 1 {
		w.start = now
	}
	w.polite = now-time.Duration(lastCall.Load()) < w.Spin // SinceCall
	return now-w.start < w.Spin
}

// epoch is the origin of lastCall's clock (monotonic).
var epoch = time.Now()

// lastCall is when a device of this process last sent a used buffer
// notification (nanoseconds since epoch).
var lastCall atomic.Int64

// CallSent records that a device has just sent a used buffer notification
// to a driver (written its call fd), that is, woken a thread of a guest
// that slept waiting for it. It stores at most once a callGrain: the
// workers of many rings share the word, and a spin is tens of
// microseconds.
func CallSent() {
	now := int64(time.Since(epoch))
	if now-lastCall.Load() >= int64(callGrain) {
		lastCall.Store(now)
	}
}

// SinceCall returns how long ago a device of the process last sent a used
// buffer notification (CallSent), to within a callGrain.
func SinceCall() time.Duration {
	return time.Since(epoch) - time.Duration(lastCall.Load())
}

// callGrain is how finely lastCall follows the calls.
const callGrain = time.Microsecond

func lock(mu sync.Locker) {
	if mu != nil {
		mu.Lock()
	}
}

func unlock(mu sync.Locker) {
	if mu != nil {
		mu.Unlock()
	}
}
