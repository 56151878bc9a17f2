// Package testclock is the fake clock of the tests: the packages that take
// an injected clock (nat.Config.Clock, services.Config.Clock, the switch's
// lease cache) get Clock.Now, and the test moves time with Advance.
//
// # Concurrency
//
// A Clock is safe for concurrent use: the code under test may read it from
// its own goroutines while the test advances it.
package testclock

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told to.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock that reads start until it is advanced.
func New(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's time; it has the signature of time.Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
