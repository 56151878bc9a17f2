//go:build !linux

package nat

import "unsafe"

// adviseHuge does nothing where there is no madvise(2) MADV_HUGEPAGE
// (hugepage_linux.go).
func adviseHuge(p unsafe.Pointer, n uintptr) {}
