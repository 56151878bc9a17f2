package vhostuser

import (
	"sync"
	"sync/atomic"
	"time"
)

// The call watchdog: finds a notification that waits on a frontend's full
// eventfd counter (callFD) and ends the wait.
//
// Every eventfd call or error fd is on its list while it is open. Once a
// tick (a goroutine that runs only while the list is not empty: one
// wake-up a second with guests attached) it looks at each: a write was in
// progress at the last tick and still is, and none finished between, so
// one has taken a tick at least. If the fd's O_NONBLOCK is off (the
// frontend cleared it: with it on, a write never waits, and the write is
// merely slow) the write waits on the counter: unstick reads the counter
// ("a write(2) ... blocks until a read(2) is performed on the file
// descriptor", eventfd(2)), which ends the wait, sets O_NONBLOCK again,
// and tells the session (onBlocked), which ends.

// watchTick is the watchdog's period in nanoseconds: a blocked
// notification waits two at most (tests shorten it).
var watchTick atomic.Int64

func init() { watchTick.Store(int64(time.Second)) }

var watch struct {
	mu      sync.Mutex
	fds     map[*callFD]struct{}
	running bool
}

// watchAdd puts c on the list and starts the watchdog if it was idle.
func watchAdd(c *callFD) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if watch.fds == nil {
		watch.fds = make(map[*callFD]struct{})
	}
	watch.fds[c] = struct{}{}
	if !watch.running {
		watch.running = true
		go watchLoop()
	}
}

// watchRemove takes c off the list (it is being closed).
func watchRemove(c *callFD) {
	watch.mu.Lock()
	delete(watch.fds, c)
	watch.mu.Unlock()
}

func watchLoop() {
	for {
		time.Sleep(time.Duration(watchTick.Load()))
		if !watchLook() {
			return
		}
	}
}

// watchLook is one tick: it unsticks every fd whose write has waited
// since the last. It returns false, and the watchdog stops, when the list
// is empty.
func watchLook() bool {
	watch.mu.Lock()
	if len(watch.fds) == 0 {
		watch.running = false
		watch.mu.Unlock()
		return false
	}
	var stuck []*callFD
	for c := range watch.fds {
		v := c.state.Load()
		busy, done := uint32(v)&callBusy != 0, uint32(v>>32)
		if busy && c.seenBusy && done == c.seenDone {
			stuck = append(stuck, c)
		}
		c.seenBusy, c.seenDone = busy, done
	}
	watch.mu.Unlock()
	for _, c := range stuck {
		if c.acquire() {
			unstick(c)
			c.put(putLook)
		}
	}
	return true
}
