//go:build !amd64 && !arm64

package nat

import (
	"sync/atomic"
	"unsafe"
)

// storeRel stores v at p (asm.go); without assembly, a sequentially
// consistent store.
func storeRel(p *uint64, v uint64) { atomic.StoreUint64(p, v) }

// storeRel4 is storeRel of a, b, c and d to the four words from p on.
func storeRel4(p *uint64, a, b, c, d uint64) {
	s := (*[4]uint64)(unsafe.Pointer(p))
	for i, v := range [4]uint64{a, b, c, d} {
		atomic.StoreUint64(&s[i], v)
	}
}
