// Package virtio is the device side of virtio for vhost-arcnet: feature
// bits, the guest memory map (guest physical address -> backend bytes),
// split and packed virtqueues (virtio 1.2 §2.7, §2.8; packed.go) worked in
// place in guest memory behind one Queue type,
// descriptor chains, used-ring publication, notification suppression
// (VIRTIO_F_EVENT_IDX and the flags variant), struct virtio_net_hdr_v1 and
// the virtio-net receive path with mergeable buffers (§5.1.6), and the
// vhost-user dirty page log.
//
// It knows nothing of sockets, vhost-user messages or networking above the
// virtio-net header; vhostuser builds Memory and Queue values from the
// frontend's messages, datapath pops, pushes and writes frames.
//
// # Threat model
//
// The guest is untrusted and can rewrite its rings, descriptors and
// buffers at any moment, from another CPU. Therefore:
//   - every ring index, ring entry and descriptor is read once into backend
//     memory; only that copy is validated and used (no double fetch);
//   - every guest address range is checked against the memory regions with
//     overflow-safe arithmetic (offsets inside a region, never gpa+len);
//   - every chain walk is bounded by the size of the table it runs in, so
//     loops and over-long chains end with an error;
//   - guest misbehaviour never panics: it breaks the queue with a sticky
//     error wrapping ErrBroken (and ErrBadRing, ErrBadChain or
//     ErrOutOfBounds), after which the queue touches guest memory no more;
//   - the device never writes into device-readable buffers;
//   - a guest memory access that faults because the frontend shrank the
//     file behind it (SIGBUS) is recovered by the goroutine that made it
//     (debug.SetPanicOnFault, HandleFault in fault.go), breaks the queue
//     (Queue.Break, OnBroken) and ends the session that mapped it
//     (WatchFaults), not the process.
//
// Buffer bytes (Chain.Out/In segments) remain guest memory: a consumer that
// parses them must copy what it parses first.
//
// # Using a queue
//
// A worker sleeping on kicks runs the usual loop (the re-check in
// EnableNotify closes the race with a driver that adds a chain while
// notifications are being re-enabled; virtio 1.2 §2.7.10):
//
//	q.DisableNotify()
//	for {
//		for batch { ok, err := q.Pop(&c); ...; q.Push(c.Head, n) }
//		q.Publish()                     // one used->idx store per batch
//		if q.NeedNotify() { call.Notify() }
//		if nothing was popped {
//			if q.EnableNotify() { q.DisableNotify(); continue }
//			kick.Wait()
//			q.DisableNotify()
//		}
//	}
//
// # Concurrency
//
// Memory is immutable and safe for concurrent use. A Queue and its NetRX are
// used by one goroutine at a time (the queue's worker); only Queue.SetLog
// may be called from another goroutine. DirtyLog.Mark is safe for
// concurrent use. Ordering against the guest's CPUs is done by the ring
// index helpers in internal/ring (load-acquire, store-release, full fence),
// the only unsafe code of the project (with ring.Aligned and
// ring.Contains, which look at addresses without dereferencing them).
package virtio
