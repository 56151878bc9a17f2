// Package ring holds the memory-ordering primitives for virtqueue ring
// indices shared with a guest, and the dirty-log bit setting: 16-bit
// load-acquire and store-release, a full fence, 32-bit atomic OR, and
// cache line prefetches (Prefetch, through internal/prefetch). It is
// the only place of vhost-arcnet that uses package unsafe.
//
// It is internal so that both virtio (the device) and virtio/virtiotest (the
// driver mock playing the guest) use the same primitives, which also lets the
// race detector see the happens-before edges the ring indices create.
//
// # Why these orderings (virtio 1.2 §2.7.13)
//
// The driver writes descriptors and an avail ring entry, then the avail idx;
// the device reads the avail idx, then the entry and the descriptors. The
// device's load of avail idx must therefore be an acquire (no later read may
// move before it), and the driver's store a release. Symmetrically the
// device writes used elements (and receive buffers) before storing used idx
// with release semantics, and the driver loads used idx with acquire.
// Notification suppression (§2.7.7, §2.7.10) needs a full fence between
// "store my index" and "load the other side's event/flags" (store->load
// order), which neither acquire nor release gives.
//
// # Architectures
//
// amd64 (TSO): every plain load is an acquire and every plain store a
// release; the helpers are assembly only so that the Go compiler cannot move
// ordinary memory accesses across them (a call to an assembly function is a
// compiler barrier). The full fence is a LOCK-prefixed add to the stack
// (ring_amd64.s says why not MFENCE).
//
// arm64: LDARH/STLRH give acquire/release on the halfword itself; the full
// fence is DMB ISH (inner shareable: all CPUs running the guest and us).
//
// Other GOARCHes: a portable fallback that does the access as one
// naturally aligned halfword access and uses a sequentially consistent
// sync/atomic operation as the fence. It relies on every Go port
// implementing sync/atomic read-modify-write operations with full hardware
// barriers, which holds for all of them today.
//
// # Alignment
//
// The caller guarantees that every slice passed here starts at a host
// address aligned to the access size (2 for 16-bit, 4 for 32-bit): virtio
// requires the rings to be aligned (avail 2, used 4) and virtio.NewQueue
// checks the host address too with Aligned, because LDARH faults on a
// misaligned address.
package ring
