//go:build linux

package nat

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// vmFlags returns the VmFlags of the mapping that holds address a, from
// /proc/self/smaps.
func vmFlags(t *testing.T, a uintptr) string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(l, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(l[:strings.IndexByte(l, ' ')], "-") {
			in = lo <= a && a < hi
			continue
		}
		if in && strings.HasPrefix(l, "VmFlags:") {
			return l
		}
	}
	t.Fatalf("no mapping holds %#x", a)
	return ""
}

// TestHugePages checks that a table of 1M flows asks for huge pages where
// packets reach at random: the index and the flow records (a mapping
// advised with MADV_HUGEPAGE shows "hg" in its VmFlags, proc(5)).
func TestHugePages(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		t.Skip("kernel without transparent huge pages")
	}
	// Under qemu-user (make arm64) madvise succeeds but does nothing: check
	// that advice shows in smaps at all, on a mapping of our own.
	m, err := syscall.Mmap(-1, 0, 2*hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	defer syscall.Munmap(m)
	if err := syscall.Madvise(m, syscall.MADV_HUGEPAGE); err != nil {
		t.Skipf("madvise: %v", err)
	}
	if fl := vmFlags(t, uintptr(unsafe.Pointer(&m[0]))); !strings.Contains(fl, " hg") {
		t.Skipf("madvise(MADV_HUGEPAGE) does not show in smaps here: %s", fl)
	}
	e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: 1 << 20, MaxFlowsPerGuest: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	hg := func(what string, p unsafe.Pointer, n uintptr) {
		a := (uintptr(p) + hugePage - 1) &^ (hugePage - 1)
		if a+hugePage > uintptr(p)+n {
			t.Fatalf("%s: %d bytes hold no aligned huge page", what, n)
		}
		if fl := vmFlags(t, a); !strings.Contains(fl, " hg") {
			t.Errorf("%s at %#x not advised: %s", what, a, fl)
		}
	}
	s := e.tab.slots
	hg("index", unsafe.Pointer(&s[0]), uintptr(len(s))*8)
	// chunk 0 is the first of a slab of slabChunks
	hg("records", unsafe.Pointer(e.tab.flow(0)), slabChunks*unsafe.Sizeof([chunkSize]flow{}))

	// A small table allocates chunk by chunk, without slabs.
	small, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: 1000, MaxFlowsPerGuest: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if small.tab.slab != nil {
		t.Errorf("a table of 1000 flows allocated a slab of %d chunks", len(small.tab.slab))
	}
}
