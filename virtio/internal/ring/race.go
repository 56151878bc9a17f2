//go:build race

package ring

import (
	"runtime"
	"unsafe"
)

// The race detector does not see the ordering the assembly helpers give,
// so tell it: a release store on a ring index happens before an acquire
// load of the same index that observes it.

func raceAcquire(p *uint16) {
	// SAFETY: p is only used as a synchronisation key by the race runtime.
	runtime.RaceAcquire(unsafe.Pointer(p))
}

func raceRelease(p *uint16) {
	// SAFETY: p is only used as a synchronisation key by the race runtime.
	runtime.RaceReleaseMerge(unsafe.Pointer(p))
}
