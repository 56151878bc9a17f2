package ring

import (
	"unsafe"

	"github.com/arcnet/vhost-arcnet/internal/prefetch"
)

// Addr returns the host address of b[off] for Prefetch. off is not
// checked: a Prefetch of any address is harmless. It is small enough to be
// inlined.
func Addr(b []byte, off int) uintptr {
	// SAFETY: only an address is computed; it is never dereferenced by Go
	// code, and Prefetch neither faults nor returns data.
	return uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(off)
}

// Prefetch asks the CPU for the cache lines at addrs, to be read
// (internal/prefetch: a hint that retires at once, never faults and reads
// nothing into the program, so it adds no guest value to check).
func Prefetch(addrs []uintptr) {
	prefetch.Lines(addrs)
}

// PrefetchW is Prefetch for lines the caller is about to write.
func PrefetchW(addrs []uintptr) {
	prefetch.LinesW(addrs)
}
