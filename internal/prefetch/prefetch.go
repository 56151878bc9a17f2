// Package prefetch asks the CPU for cache lines ahead of their use: x86
// PREFETCHT0 and PREFETCHW (Intel SDM vol. 2B), arm64 PRFM PLDL1KEEP and
// PSTL1KEEP (Arm ARM C6.2.212); nothing on other architectures
// (Available is false there).
//
// A prefetch is a hint: it retires at once, so a loop of them puts every
// miss of a batch in flight together, where the loads of a loop that does
// real work per element fill the reorder buffer after a few elements and
// take their misses a few at a time. It never faults, on an address
// outside any mapping included, and reads nothing into the program: what
// it touches needs no checking. The NAT engine's batch lookups and the
// virtqueue read-ahead (virtio/internal/ring) use it.
package prefetch

// Lines asks for the cache lines at addrs, to be read.
func Lines(addrs []uintptr) {
	if len(addrs) > 0 {
		lines(&addrs[0], len(addrs))
	}
}

// LinesW asks for the cache lines at addrs, to be written: the line comes
// in exclusive state, so the store that follows needs no second request
// to the CPU that held it (x86 CPUs without PREFETCHW run it as a NOP).
func LinesW(addrs []uintptr) {
	if len(addrs) > 0 {
		linesW(&addrs[0], len(addrs))
	}
}
