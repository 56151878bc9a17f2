package virtio

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// Guest memory faults.
//
// Guest memory is a MAP_SHARED mapping of a file the frontend owns. A
// frontend that truncates that file (ftruncate of a memfd it did not seal
// with F_SEAL_SHRINK) makes every later access to the pages past the new
// end raise SIGBUS, which by default kills the whole process, every other
// guest with it. No check made before an access can rule this out: the
// frontend can truncate between the check and the access.
//
// So the goroutines that touch guest memory run with
// debug.SetPanicOnFault(true), which turns such a fault into a panic whose
// value is a runtime.Error with an Addr method, and recover it where they
// can put things straight: the device's workers (datapath.GuestPort), the
// receive path of a port wherever it runs (another guest's worker
// delivering a frame), and the vhost-user session's goroutine. HandleFault
// turns the recovered value into a *Fault and tells the owner of the
// faulting mapping (WatchFaults: the vhost-user session that mapped it),
// which ends that session. The goroutine that caught it goes on: a fault
// in another guest's memory costs only that guest.

// Fault is the error of a recovered guest memory fault: ErrFault and the
// faulting host address, 0 where the platform does not tell it (qemu-user
// reports none: then the mappings are probed, see HandleFault).
type Fault struct {
	Addr uintptr
}

func (f *Fault) Error() string {
	return fmt.Sprintf("%v at host address %#x: the frontend shrank the file behind its guest memory (or unmapped it)", ErrFault, f.Addr)
}

// Unwrap makes errors.Is(err, ErrFault) true.
func (f *Fault) Unwrap() error { return ErrFault }

// FaultWatch is one watched mapping; see WatchFaults.
type FaultWatch struct {
	b       []byte
	onFault func(*Fault)
	fired   atomic.Bool
}

var watches struct {
	sync.Mutex
	list []*FaultWatch
}

// WatchFaults registers b, a mapping of guest memory (or of a dirty log) a
// frontend shared (the bytes of the file it maps, which were all inside the
// file when mapped: HandleFault may probe its last byte), so that a fault inside it, recovered by HandleFault on
// any goroutine, is reported to onFault, once. onFault runs on the
// goroutine that faulted, which may hold locks of the datapath: it must
// not block. Stop the watch before unmapping b.
func WatchFaults(b []byte, onFault func(*Fault)) *FaultWatch {
	if len(b) == 0 {
		return nil
	}
	w := &FaultWatch{b: b, onFault: onFault}
	watches.Lock()
	watches.list = append(watches.list, w)
	watches.Unlock()
	return w
}

// Stop ends the watch; a nil watch is stopped already.
func (w *FaultWatch) Stop() {
	if w == nil {
		return
	}
	watches.Lock()
	defer watches.Unlock()
	for i, x := range watches.list {
		if x == w {
			last := len(watches.list) - 1
			watches.list[i] = watches.list[last]
			watches.list[last] = nil
			watches.list = watches.list[:last]
			return
		}
	}
}

// Contains reports whether host address addr is inside the watched
// mapping.
func (w *FaultWatch) Contains(addr uintptr) bool {
	return w != nil && ring.Contains(w.b, addr)
}

// HandleFault is called with the value of recover() by a goroutine that
// touches guest memory with debug.SetPanicOnFault(true). It returns nil
// for nil (no panic). A memory fault in a watched mapping is reported to
// the mapping's watch and returned. Any other panic, a memory fault
// outside every watched mapping included, is not a guest's doing:
// HandleFault panics again with it.
//
// The runtime gives the faulting address (the runtime.Error's Addr
// method) where the platform does; where it does not (qemu-user, or an
// address below 4096 that the runtime takes for a nil dereference), every
// watched mapping is probed at its last byte, and those that fault there
// (their file ends before their mapping does) are the ones reported. So
// are they when the address given is in no watched mapping (an
// emulator's wrong address); the Fault then has Addr 0.
func HandleFault(r any) *Fault {
	if r == nil {
		return nil
	}
	re, ok := r.(runtime.Error)
	if !ok {
		panic(r)
	}
	f := &Fault{}
	if a, ok := re.(interface{ Addr() uintptr }); ok && a.Addr() >= 4096 {
		f.Addr = a.Addr()
	}
	watches.Lock()
	list := append([]*FaultWatch(nil), watches.list...)
	watches.Unlock()
	found := report(list, f)
	if !found && f.Addr != 0 {
		// An address in no watched mapping: a fault of the process's
		// own (it panics on, below) or a wrong address. qemu-user
		// reported one once in CI for a fault in a truncated memfd
		// mapping (TestHandleFault, arm64 under qemu-aarch64-static:
		// an address in no mapping of the test). Probe as for a fault
		// without an address; a consumer then probes too (Addr 0).
		f.Addr = 0
		found = report(list, f)
	}
	if !found {
		panic(r)
	}
	return f
}

// report tells the watches of list whose mapping f is in (by f.Addr, or
// by probing each when it is 0) and reports whether there was one.
func report(list []*FaultWatch, f *Fault) (found bool) {
	for _, w := range list {
		if f.Addr != 0 && !w.Contains(f.Addr) || f.Addr == 0 && !probe(w.b) {
			continue
		}
		found = true
		if w.onFault != nil && !w.fired.Swap(true) {
			w.onFault(f)
		}
		if f.Addr != 0 {
			break
		}
	}
	return found
}

// probeSink keeps probe's load from being optimised away.
var probeSink atomic.Uint32

// probe reports whether reading the last byte of b faults.
func probe(b []byte) (faulted bool) {
	if len(b) == 0 {
		return false
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			faulted = true
		}
	}()
	probeSink.Store(uint32(b[len(b)-1]))
	return false
}

// Faulted reports whether fault f is in the queue's guest memory or dirty
// log: by its address, or when it has none by probing them (HandleFault).
func (q *Queue) Faulted(f *Fault) bool {
	if f.Addr != 0 {
		return q.Owns(f.Addr)
	}
	for i := range q.mem.regions {
		if probe(q.mem.regions[i].data) {
			return true
		}
	}
	if l := q.log.Load(); l != nil {
		return probe(l.bitmap)
	}
	return false
}

// Contains reports whether host address addr is inside m's regions.
func (m *Memory) Contains(addr uintptr) bool {
	if m == nil {
		return false
	}
	for i := range m.regions {
		if ring.Contains(m.regions[i].data, addr) {
			return true
		}
	}
	return false
}

// Owns reports whether a fault at host address addr is the queue's: in its
// guest memory or in the dirty log it writes to.
func (q *Queue) Owns(addr uintptr) bool {
	if q.mem.Contains(addr) {
		return true
	}
	if l := q.log.Load(); l != nil {
		return l.contains(addr)
	}
	return false
}

// Break breaks the queue with err (a device's verdict, such as a *Fault
// of its guest memory), as a guest error found by the queue would: the
// error wraps ErrBroken and err, is sticky, and the OnBroken function is
// called. It returns the queue's error (an earlier one if it was broken
// already).
func (q *Queue) Break(err error) error { return q.brk(err) }

// OnBroken sets fn to be called once, on the goroutine that breaks the
// queue, with the queue's error when it breaks (vhost-user signals the
// ring's error fd from it). Set it before the queue is used; fn must not
// block.
func (q *Queue) OnBroken(fn func(error)) { q.onBroken = fn }

// Mark is a position of a queue's consumption: what Rewind goes back to.
type Mark struct{ lastAvail, usedIdx uint16 }

// Mark returns the queue's position now.
func (q *Queue) Mark() Mark {
	return Mark{q.lastAvail, q.usedIdx}
}

// Rewind gives back every chain popped and every used element pushed
// since m, which must be the last Mark and after the last Publish: a
// device that could not finish what it was writing (a fault in the frame
// it was copying from) leaves the queue as it was at m. The bytes it wrote
// into the buffers stay, unseen: the driver reads only what used->idx
// publishes.
//
// Packed rings: Push wrote its used descriptors into the ring, over the
// available descriptors of chains it consumed; Rewind writes those back
// as Pop read them (packed.go), so the chains given back are read again
// from their descriptors, and the driver, which saw no used descriptor of
// them (the first one's flags wait for Publish), sees no change.
func (q *Queue) Rewind(m Mark) {
	if q.packed {
		q.rewindPacked(m.usedIdx)
	}
	q.lastAvail, q.usedIdx = m.lastAvail, m.usedIdx
}
