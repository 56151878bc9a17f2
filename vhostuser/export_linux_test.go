package vhostuser

import "time"

// ShrinkSealed exports shrinkSealed for tests.
var ShrinkSealed = shrinkSealed

// ShortenCallWatch sets the call watchdog's tick to d for t.
func ShortenCallWatch(t interface{ Cleanup(func()) }, d time.Duration) {
	old := watchTick.Load()
	watchTick.Store(int64(d))
	t.Cleanup(func() { watchTick.Store(old) })
}
