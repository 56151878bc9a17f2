package xdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds every use of unsafe in the package: the ring indices the
// kernel shares with us in mmap'ed memory, and the two socket options whose
// argument is a struct.

// indexAt returns the ring index (a __u32 the kernel reads and writes
// concurrently) at offset off of mem.
//
// SAFETY: mem is a ring's mmap'ed region, which stays mapped until the
// socket is closed (after every user of the ring has stopped); off comes
// from XDP_MMAP_OFFSETS and is checked by mapRing to leave 4 aligned bytes
// inside mem.
func indexAt(mem []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// The ring protocol (Documentation/networking/af_xdp.rst "Rings";
// tools/lib/bpf xsk.h): a producer writes descriptors, then publishes them
// with a store-release of its producer index; a consumer reads the
// producer index with a load-acquire before reading descriptors, and
// returns them with a store-release of its consumer index. Go's
// sync/atomic operations are sequentially consistent, which is at least
// that on every architecture.

// setsockoptUmemReg registers the UMEM with the socket (XDP_UMEM_REG).
func setsockoptUmemReg(fd int, reg *unix.XDPUmemReg) error {
	// SAFETY: reg points at a live struct for the duration of the call;
	// the kernel copies at most its size.
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(reg)), unsafe.Sizeof(*reg), 0)
	if e != 0 {
		return e
	}
	return nil
}

// getsockoptMmapOffsets reads the rings' layout (XDP_MMAP_OFFSETS).
func getsockoptMmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	// SAFETY: off and size are live for the call; the kernel writes at
	// most size bytes.
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return off, e
	}
	if size != uint32(unsafe.Sizeof(off)) {
		// Kernels before 5.4 have no flags word: no need-wakeup either.
		return off, unix.EOPNOTSUPP
	}
	return off, nil
}

// getsockoptStatistics reads the socket's drop counters (XDP_STATISTICS).
func getsockoptStatistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	size := uint32(unsafe.Sizeof(st))
	// SAFETY: as in getsockoptMmapOffsets.
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return st, e
	}
	return st, nil
}

// umemReg describes umem for XDP_UMEM_REG: aligned chunks of chunk bytes.
func umemReg(umem []byte, chunk uint32) unix.XDPUmemReg {
	// SAFETY: umem is an anonymous mapping that stays mapped until after
	// the socket is closed (closeSocket unmaps it last); the kernel pins
	// its pages on registration.
	return unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&umem[0]))), Len: uint64(len(umem)), Size: chunk}
}
