package virtio

// NeedEvent exports vring_need_event for tests.
var NeedEvent = needEvent

// Polite reports whether the spin also yields the OS thread.
func (w *Idle) Polite() bool { return w.polite }

// SetLastCall moves the time of the last call back by ago.
func SetLastCall(ago int64) { lastCall.Store(lastCall.Load() - ago) }

// Walk is the slow path of Pop (walk) on the chain at head, without
// consuming it or breaking the queue: tests compare Pop's fast path with it.
func (q *Queue) Walk(c *Chain, head uint16) error { return q.walk(c, head) }
