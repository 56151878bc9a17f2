package prefetch

import (
	"testing"
	"unsafe"
)

// TestLinesNeverFault: a prefetch of any address, a mapped line, address
// 0, an unaligned one and the last address, neither faults nor changes
// memory; empty and nil lists are fine.
func TestLinesNeverFault(t *testing.T) {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	base := uintptr(unsafe.Pointer(&b[0]))
	addrs := []uintptr{base, base + 64, base + 255, 0, 8, 3, ^uintptr(0)}
	Lines(addrs)
	LinesW(addrs)
	Lines(nil)
	LinesW(addrs[:0])
	for i := range b {
		if b[i] != byte(i) {
			t.Fatalf("b[%d] = %d after a prefetch", i, b[i])
		}
	}
}
