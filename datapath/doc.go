// Package datapath moves Ethernet frames between ports: guest ports that work
// a guest's virtqueues in place, and the uplinks and services they are
// connected to.
//
// It owns the Port seam, the GuestPort (the virtio-net device side of one
// vhost-user connection), the L2 Switch (MAC learning with ageing, flooding,
// anti-spoofing, software GSO segmentation for receivers without the
// offload), the frame-socket guest ports (FramePort on a StreamListener or
// DgramListener: QEMU -netdev stream|dgram, vfkit, libkrun; framesock.go
// has their threat model and concurrency), the measurement uplinks (Sink,
// Source, Loopback) and per-port statistics.
//
// # Threat model
//
// Everything a guest can write is untrusted: its rings, its descriptors and
// its buffers, which it may rewrite at any moment. GuestPort relies on
// package virtio to read every ring index and descriptor once and to bound
// every address by the memory table. The virtio-net header of a transmitted
// frame is copied into backend memory before it is looked at, and any
// Ethernet bytes the backend rewrites (the loopback's MAC swap) are copied
// first: the backend never writes into a driver-readable (TX) buffer.
// The Switch copies each frame's first 128 bytes into backend memory,
// validates and checks that copy (a guest may send only from its own MAC and
// its leased IPv4 address), and delivers the copy followed by the rest of
// the frame, so a guest cannot change a header between check and delivery.
// A queue the guest breaks stops that queue (logged once, counted); it never
// panics the process or touches another guest. A MAC moves to another port
// only on the frontend's word after a live migration (SEND_RARP:
// SwitchPort.TakeMAC, migration.go), and only from a port that runs no
// queue: a guest cannot take another's address, nor a frontend a live
// guest's.
//
// # Concurrency
//
// Each transmit queue has one worker goroutine that pops chains in batches,
// hands them to the port's peer and publishes the used ring once per batch.
// A receive queue is written under its own mutex, taken once per batch, by
// whichever goroutine delivers frames to the guest (a peer's worker, or the
// port's own receive worker when a FrameSource feeds it). With several
// queue pairs a batch is split by flow (steer.go) and each receive queue
// takes its part under its own mutex: there is no port-wide lock; the
// steering table is atomics, written by the transmit workers. An uplink
// reader that reserved receive buffers (Reserve, inplace.go) holds them,
// not the mutex, until End: meanwhile deliver writes only its frame and
// other senders' frames wait in the backlog. StartQueue and
// StopQueue come from the vhost-user session goroutine; StopQueue returns only
// when no goroutine touches the queue any more.
package datapath
