package ring

import "unsafe"

// Addr returns the host address of b[off] for Prefetch. off is not
// checked: a Prefetch of any address is harmless. It is small enough to be
// inlined.
func Addr(b []byte, off int) uintptr {
	// SAFETY: only an address is computed; it is never dereferenced by Go
	// code, and Prefetch neither faults nor returns data.
	return uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(off)
}

// Prefetch asks the CPU for the cache lines at addrs: x86 PREFETCHT0
// (Intel SDM vol. 2B), arm64 PRFM PLDL1KEEP (Arm ARM C6.2.212); nothing
// elsewhere. A prefetch is a hint: it retires at once, so a loop of them
// puts every miss of a batch in flight, where the loads of a loop that
// does real work per element fill the reorder buffer after a few elements
// and take their misses a few at a time. It never faults, on an address
// outside any mapping included, and reads nothing into the program: it
// adds no guest value to check.
func Prefetch(addrs []uintptr) {
	if len(addrs) > 0 {
		prefetch(&addrs[0], len(addrs))
	}
}

// PrefetchW is Prefetch for lines the caller is about to write: x86
// PREFETCHW (Intel SDM vol. 2B: the line is fetched in exclusive state,
// so the store that follows needs no second request to the other CPU
// that held it; CPUs without it run it as a NOP), arm64 PRFM PSTL1KEEP.
func PrefetchW(addrs []uintptr) {
	if len(addrs) > 0 {
		prefetchw(&addrs[0], len(addrs))
	}
}
