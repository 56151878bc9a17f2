//go:build amd64 || arm64

package nat

// prefetch asks the CPU to bring the cache lines at the n addresses at p
// into its caches (x86 PREFETCHT0, Intel SDM vol. 2B; arm64 PRFM PLDL1KEEP,
// Arm ARM C6.2). Unlike a load, a prefetch retires at once: a loop of them
// puts every miss of a batch in flight, where loads that miss fill the
// reorder buffer after a dozen packets. The addresses are hints only: an
// invalid one does not fault.
//
//go:noescape
func prefetch(p *uintptr, n int)

const havePrefetch = true
