// Package vhostuser is the backend side of the vhost-user protocol (QEMU
// docs/interop/vhost-user.rst, "the spec" below): it serves frontends such
// as QEMU, cloud-hypervisor, crosvm and DPDK's virtio_user on unix sockets,
// maps the guest memory they share, and hands each virtqueue, built in
// place in that memory, to a Device (datapath.GuestPort) together with its
// kick (virtio.Doorbell) and call (virtio.Notifier).
//
// It owns: the wire format and the message table (one row per request:
// name, payload shape and exact size, fds allowed, protocol feature
// needed, handler); SCM_RIGHTS fd passing; the session state machine
// (feature and protocol feature negotiation, REPLY_ACK, ring states,
// memory table with SET_MEM_TABLE and ADD/REM_MEM_REG, the dirty log of
// live migration); kick and call fds (eventfds or pipes); both socket
// roles (Server.Listen, and Server.Connect with reconnection); and the
// lifecycle of every mapping and fd a frontend passes.
//
// It also serves the virtio-net device configuration space (virtio 1.2
// §5.1.4) with GET_CONFIG/SET_CONFIG (netconfig.go): the guest port's MAC
// address, link status, queue pairs, MTU, speed and duplex, which crosvm
// and cloud-hypervisor show their guests. Each connection gets a slot on
// its socket (the lowest free one) and a MAC address: Options.MACs, or one
// derived from the socket path and the slot (GenerateMAC), so the same
// guest gets the same address after a restart (SessionInfo.Slot and MAC).
//
// What each launcher sends, and how this backend answers, is replayed
// message for message by the launcher profiles of package vhostusertest
// (QEMU 7.2 as recorded from the real binary, current QEMU,
// cloud-hypervisor, crosvm) and described in the README ("Attaching a VM").
//
// # Threat model
//
// The frontend is untrusted: every byte of every message, every fd and
// every address it sends is checked before use. A message with a bad
// header, a wrong size, too many or too few fds, an unknown request, a
// request whose feature was not negotiated, a value out of range (ring
// index, ring size, MTU, status), an unusable memory table (empty or
// overlapping regions, offsets that overflow, fds that are not shared
// memory files or are shorter than announced) or ring addresses outside
// guest memory ends that session: one log line, the Server's error
// counter, the fds of the message closed, the session's queues stopped,
// its device closed, its memory unmapped. Other sessions and the process
// are untouched; nothing panics.
//
// A SET_CONFIG that writes a read-only field (every field but mac, and mac
// too unless the driver uses the legacy interface or the write is a
// migration's) is refused with a non-zero ack and one log line; the
// session goes on. A GET_CONFIG outside the 256 bytes of a config space
// message gets the spec's error reply (no bytes).
//
// The guest (through the rings) is handled by package virtio. A ring the
// guest breaks (an avail index that jumps past the ring size, a bad
// descriptor chain) is stopped by the device and its SET_VRING_ERR fd, if
// the frontend gave one, is written (as a call fd is) from the goroutine
// that found it broken; the session goes on.
//
// No check at map time can stop a frontend from truncating a memory file
// after it was mapped; every later access to the lost pages faults
// (SIGBUS). A region beyond the end of its file is refused when it is
// mapped (fstat), and a file sealed with F_SEAL_SHRINK (F_GET_SEALS; QEMU's
// memory-backend-memfd seals so by default) cannot shrink at all. For the
// others the fault is contained (virtio/fault.go): every goroutine that
// touches guest memory runs with debug.SetPanicOnFault and recovers the
// fault; the mapping's session (virtio.WatchFaults) logs it once, writes
// every ring's error fd and ends with an error wrapping ErrBadMemory and
// virtio.ErrFault (Stats.Faults). Other sessions, including those whose
// workers were copying into or out of the shrunk memory, go on.
//
// Memory is bounded per session (Options.MaxGuestMemory, default 1 TiB:
// beyond it the session ends) and for the whole server
// (Options.MaxMemory, default 64 GiB, the sum over every session: beyond
// it a SET_MEM_TABLE or ADD_MEM_REG is refused with a non-zero ack and one
// log line naming the limit, ErrMemoryLimit, and the session keeps the
// memory it had).
//
// # Concurrency
//
// Each session runs on one goroutine, which reads a message, handles it
// and replies, so Device methods are called one at a time per session.
// The device's goroutines use the queues, doorbells and notifiers they
// were given between StartQueue and StopQueue; anything that would change
// what they point at (new memory, ring addresses, kick fd, a resized log)
// first stops the affected queues, changes it, and starts them again from
// the avail index they reached. SET_VRING_CALL swaps the call fd under a
// running queue (a Notify in flight finishes on the old fd before it is
// closed), and VHOST_F_LOG_ALL sets the queues' logs atomically. Kick and
// call fds stay out of Go's network poller: a device worker sleeps on its
// kick fd in poll(2) on its own thread (notify.go says why). Server and Session counters are safe to read from anywhere.
package vhostuser
