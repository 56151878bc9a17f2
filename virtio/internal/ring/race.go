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

// loadAcquireHi16 is LoadAcquireHi16 as LoadAcquire16 of the word's upper
// half: the race detector then sees the same acquire on the same address as
// the driver's StoreRelease16 of it (a sync/atomic load of the whole word
// would be an access it does not pair with that store).
func loadAcquireHi16(p *uint32) uint16 {
	// SAFETY: p points to 4 bytes (LoadAcquireHi16 checked); its upper
	// half is 2-byte aligned.
	b := unsafe.Slice((*byte)(unsafe.Pointer(p)), 4)
	return LoadAcquire16(b[2:4])
}
