package ring

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// bigEndian reports whether the host stores integers big-endian; ring
// fields are little-endian (virtio 1.2 §2.4 "le16").
var bigEndian = binary.NativeEndian.Uint16([]byte{1, 0}) != 1

// ptr16 returns a pointer to b[0:2] as a *uint16.
func ptr16(b []byte) *uint16 {
	// Check the length itself: b[:2] would accept len 1 with cap 2, and
	// _ = b[1] is a read the race detector sees.
	if len(b) < 2 {
		panic("ring: index slice shorter than 2 bytes")
	}
	// SAFETY: b[0:2] is inside the slice (len checked above), the caller
	// guarantees 2-byte alignment, and the slice keeps the memory alive
	// (guest memory mappings outlive every Queue using them).
	return (*uint16)(unsafe.Pointer(unsafe.SliceData(b)))
}

// LoadAcquire16 returns the little-endian uint16 at b[0:2] with acquire
// semantics: no later memory access is performed before it.
func LoadAcquire16(b []byte) uint16 {
	p := ptr16(b)
	v := loadAcquire16(p)
	raceAcquire(p)
	if bigEndian {
		v = bits.ReverseBytes16(v)
	}
	return v
}

// StoreRelease16 stores v little-endian at b[0:2] with release semantics:
// every earlier memory access is performed before it.
func StoreRelease16(b []byte, v uint16) {
	p := ptr16(b)
	if bigEndian {
		v = bits.ReverseBytes16(v)
	}
	raceRelease(p)
	storeRelease16(p, v)
}

// LoadAcquireHi16 returns the little-endian uint16 at b[2:4] with acquire
// semantics, loading the whole 4-byte word b[0:4], which must be 4-byte
// aligned (see Aligned). Outside race builds the load is sync/atomic's
// LoadUint32, which the compiler turns into one instruction (MOV on amd64,
// LDAR on arm64) instead of a call: the flags of a packed descriptor (the
// last two bytes of a 16-aligned descriptor) are loaded once per chain.
func LoadAcquireHi16(b []byte) uint16 {
	if len(b) < 4 {
		panic("ring: word slice shorter than 4 bytes")
	}
	// SAFETY: b[0:4] is inside the slice (len checked above), the caller
	// guarantees 4-byte alignment, the slice keeps the memory alive.
	return loadAcquireHi16((*uint32)(unsafe.Pointer(unsafe.SliceData(b))))
}

// FullFence orders every earlier load and store before every later one,
// including store->load, which acquire/release does not.
func FullFence() { fullFence() }

// Or32 atomically ORs the little-endian mask into the uint32 at b[0:4].
// b must be 4-byte aligned (see Aligned).
func Or32(b []byte, mask uint32) {
	if len(b) < 4 {
		panic("ring: bitmap slice shorter than 4 bytes")
	}
	if bigEndian {
		mask = bits.ReverseBytes32(mask)
	}
	// SAFETY: b[0:4] is inside the slice (len checked above), the caller
	// guarantees 4-byte alignment, the slice keeps the memory alive.
	or32((*uint32)(unsafe.Pointer(unsafe.SliceData(b))), mask)
}

// Aligned reports whether the host address of b's first element is a
// multiple of align (a power of two). An empty slice is aligned.
func Aligned(b []byte, align uintptr) bool {
	if len(b) == 0 {
		return true
	}
	// SAFETY: only the address is inspected, never dereferenced.
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(align-1) == 0
}

// Contains reports whether host address addr lies inside b (fault.go:
// which mapping a memory fault hit).
func Contains(b []byte, addr uintptr) bool {
	// SAFETY: only the address is inspected, never dereferenced.
	return addr-uintptr(unsafe.Pointer(unsafe.SliceData(b))) < uintptr(len(b))
}
