//go:build !amd64 && !arm64

package nat

// prefetch is a no-op where the package has no assembly for it: the batch
// loop's later loads then miss (prefetch_asm.go).
func prefetch(p *uintptr, n int) {}

const havePrefetch = false
