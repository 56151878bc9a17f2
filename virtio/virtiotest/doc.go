// Package virtiotest is a driver-side mock of a split virtqueue (virtio 1.2
// §2.7): it plays the guest's virtio driver on any byte slice that stands
// for guest memory at a given guest physical address, a plain []byte in
// unit tests or a memfd mapping shared with a vhost-user backend.
//
// A Driver lays out the descriptor table, the available and used rings and
// a buffer area in its memory, adds direct and indirect chains, publishes
// the avail index (honouring avail_event / VIRTQ_USED_F_NO_NOTIFY to say
// whether to kick), reads used elements (moving used_event like Linux's
// virtio_ring), and has raw writers for hostile tests: arbitrary
// descriptors, loops, out-of-range heads and addresses, avail index jumps.
// Misaligned or out-of-memory rings need no driver support: shift the
// addresses of the QueueConfig that Config returns.
//
// With DriverOptions.Packed the Driver plays a packed virtqueue (virtio
// 1.2 §2.8, packed.go) behind the same methods: buffer ids stand for
// heads, positions (index | wrap<<15) for indices, the event suppression
// structures for the flags and event fields; WritePackedDesc and
// SetDriverEvent are its raw writers for hostile tests.
//
// Ring indices are accessed with the same acquire/release helpers as the
// device (virtio/internal/ring), so a driver and a device on two
// goroutines are correctly ordered and race-detector clean.
//
// A Driver is used by one goroutine at a time; it trusts nothing the device
// writes beyond the used ring format.
package virtiotest
