package datapath

// RxOffloads are the virtio-net offloads a port takes on the frames sent to
// it: which frames it accepts with a partial checksum or unsegmented. The
// switch segments a GSO frame in software for a port that does not accept
// its type (segment.go).
type RxOffloads struct {
	// Csum: frames with VIRTIO_NET_HDR_F_NEEDS_CSUM (VIRTIO_NET_F_GUEST_CSUM).
	Csum bool
	// TSO4: VIRTIO_NET_HDR_GSO_TCPV4 frames (VIRTIO_NET_F_GUEST_TSO4).
	TSO4 bool
	// TSO6: VIRTIO_NET_HDR_GSO_TCPV6 frames (VIRTIO_NET_F_GUEST_TSO6).
	TSO6 bool
	// UFO: VIRTIO_NET_HDR_GSO_UDP frames (VIRTIO_NET_F_GUEST_UFO).
	UFO bool
	// ECN: GSO frames with VIRTIO_NET_HDR_GSO_ECN (VIRTIO_NET_F_GUEST_ECN).
	ECN bool
}

// AcceptsGSO reports whether a port with these offloads takes a frame of
// virtio-net GSO type t (gso_type, ECN bit included) unsegmented (virtio 1.2
// §5.1.6.4.1).
func (o RxOffloads) AcceptsGSO(t uint8) bool {
	return offloads{guestCsum: o.Csum, guestTSO4: o.TSO4, guestTSO6: o.TSO6, guestUFO: o.UFO, guestECN: o.ECN}.acceptsGSO(t)
}

// OffloadReceiver is implemented by ports that do not take every offloaded
// frame as it is. The switch hands a port without this method every frame
// unchanged (an uplink with a virtio-net header passes offloads on).
type OffloadReceiver interface {
	// RxOffloads returns the offloads the port takes now.
	RxOffloads() RxOffloads
}

// RxOffloads returns the receive offloads the guest negotiated (the
// GUEST_* features of its running receive queues); none while no receive
// queue runs. Added for the switch; it takes each receive queue's lock, so
// callers ask once per batch, not per frame.
func (p *GuestPort) RxOffloads() RxOffloads {
	for i := range p.pairs {
		r := &p.pairs[i].rx
		r.mu.Lock()
		running, o := r.q != nil, r.offload
		r.mu.Unlock()
		if running {
			return RxOffloads{Csum: o.guestCsum, TSO4: o.guestTSO4, TSO6: o.guestTSO6, UFO: o.guestUFO, ECN: o.guestECN}
		}
	}
	return RxOffloads{}
}
