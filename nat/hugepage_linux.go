//go:build linux

package nat

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on amd64 and arm64 (with
// 4 KiB base pages).
const hugePage = 2 << 20

// adviseHuge asks the kernel to back the 2 MiB-aligned part of the n bytes
// at p with transparent huge pages: madvise(2) MADV_HUGEPAGE (Linux 2.6.38
// and later; Documentation/admin-guide/mm/transhuge.rst). It is for the
// large arrays a packet reaches at a random place (the flow index, the
// flow records): with 4 KiB pages, each such access at 1M flows is also a
// TLB miss, and in a virtual machine a nested page walk. Distributions
// default to THP "madvise", where memory is backed by huge pages only where
// it is advised. Call it before the memory is first touched (the kernel
// then faults in huge pages directly). It is a hint: an error (THP
// disabled, an old kernel) changes nothing but the speed.
func adviseHuge(p unsafe.Pointer, n uintptr) {
	a := uintptr(p)
	start := (a + hugePage - 1) &^ (hugePage - 1)
	end := (a + n) &^ (hugePage - 1)
	if end <= start {
		return
	}
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, start-a)), end-start), syscall.MADV_HUGEPAGE)
}
