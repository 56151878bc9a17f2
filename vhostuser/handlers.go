package vhostuser

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Handlers of the negotiation and device-wide requests. Each validates its
// decoded payload against the session state before it changes anything.

// GET_FEATURES.
func (s *Session) getFeatures(*payload, *fdSet) ([]byte, error) {
	return s.replyU64(s.cfg.features), nil
}

// SET_FEATURES. QEMU sends it once per queue pair at start, and again with
// VHOST_F_LOG_ALL set or cleared while the rings run (migration); the bits
// a started ring was built with may not change under it.
func (s *Session) setFeatures(p *payload, _ *fdSet) ([]byte, error) {
	v := p.U64
	if extra := v &^ s.cfg.features; extra != 0 {
		return nil, fmt.Errorf("%w: features %#x were not offered", ErrNotNegotiated, extra)
	}
	if s.featuresAcked && (v^s.features)&^FLogAll != 0 && s.anyStarted() {
		return nil, fmt.Errorf("%w: features changed from %#x to %#x while rings are started", ErrInvalid, s.features, v)
	}
	logOn := v&FLogAll != 0
	if logOn && s.logArea == nil {
		// Logging without a log would lose dirty pages silently and break
		// the migration; QEMU always sends SET_LOG_BASE first.
		return nil, fmt.Errorf("%w: VHOST_F_LOG_ALL before SET_LOG_BASE", ErrInvalid)
	}
	s.features, s.featuresAcked = v, true
	if logOn != s.logOn {
		s.logOn = logOn
		// A worker in the middle of a batch holds the log it loaded, so
		// the started rings are paused around the swap, as for a new log
		// area (setLogBase): once the reply is out every write is marked
		// (on: a write after it and unmarked could miss the migration's
		// copy of its page) or none is (off: the frontend reads the log a
		// last time and may unmap it; a mark after StopDirtyLog was seen
		// in TestLauncherCloudHypervisorPaths under qemu-user).
		paused := s.pauseAll()
		s.applyLog()
		if err := s.resume(paused); err != nil {
			return nil, err
		}
		s.log.Info("dirty page logging", "on", logOn)
	}
	return nil, nil
}

// SET_OWNER: "a session start flag"; QEMU sends it once per connection.
func (s *Session) setOwner(*payload, *fdSet) ([]byte, error) {
	s.owner = true
	return nil, nil
}

// RESET_OWNER is deprecated; the spec recommends to "either ignore this
// message, or use it to disable all rings". Every ring is stopped and its
// configuration forgotten; features, memory and the log stay (discarding
// them "would lead to bugs").
func (s *Session) resetOwner(*payload, *fdSet) ([]byte, error) {
	for i := range s.rings {
		s.stopRing(i)
		s.rings[i].release()
		s.ringErr[i].set(nil)
		s.rings[i].init()
	}
	s.owner = false
	return nil, nil
}

// GET_PROTOCOL_FEATURES: legal whenever VHOST_USER_F_PROTOCOL_FEATURES is
// offered, even before SET_FEATURES.
func (s *Session) getProtocolFeatures(*payload, *fdSet) ([]byte, error) {
	if s.cfg.features&FProtocolFeatures == 0 {
		return nil, fmt.Errorf("%w: VHOST_USER_F_PROTOCOL_FEATURES not offered", ErrNotNegotiated)
	}
	return s.replyU64(s.cfg.proto), nil
}

// SET_PROTOCOL_FEATURES.
func (s *Session) setProtocolFeatures(p *payload, _ *fdSet) ([]byte, error) {
	if s.cfg.features&FProtocolFeatures == 0 {
		return nil, fmt.Errorf("%w: VHOST_USER_F_PROTOCOL_FEATURES not offered", ErrNotNegotiated)
	}
	if extra := p.U64 &^ s.cfg.proto; extra != 0 {
		return nil, fmt.Errorf("%w: protocol features %s were not offered", ErrNotNegotiated, protocolFeatureString(extra))
	}
	s.proto = p.U64
	s.log.Debug("protocol features", "acked", protocolFeatureString(s.proto))
	return nil, nil
}

// GET_QUEUE_NUM: "Query how many queues the back-end supports" (spec):
// the number of virtqueues, 2 per queue pair. rust-vmm frontends need
// exactly that: cloud-hypervisor refuses a backend whose answer is below
// its num_queues (2 per pair, virtio-devices/src/vhost_user/net.rs
// Net::new) and rust-vmm's Frontend then refuses ring indexes at or above
// it (vhost/src/vhost_user/frontend.rs get_queue_num); crosvm sizes the
// device's queue list with it (devices/src/virtio/vhost_user_frontend/
// mod.rs VhostUserFrontend::new). QEMU compares its netdev queues= (queue
// pairs) with it (net/vhost-user.c vhost_user_start), which twice the
// pairs also satisfies. (DPDK's vhost library answers queue pairs.)
func (s *Session) getQueueNum(*payload, *fdSet) ([]byte, error) {
	return s.replyU64(uint64(2 * s.cfg.queuePairs)), nil
}

// SEND_RARP: the first 6 bytes of the payload are the guest's MAC.
func (s *Session) sendRARP(p *payload, _ *fdSet) ([]byte, error) {
	var b [8]byte
	ne.PutUint64(b[:], p.U64)
	var mac [6]byte
	copy(mac[:], b[:6])
	if rs, ok := s.dev.(RARPSender); ok {
		rs.SendRARP(mac)
	} else {
		s.log.Debug("SEND_RARP ignored: the device sends no RARP", "mac", fmt.Sprintf("% x", mac))
	}
	return nil, nil
}

// minMTU is the smallest MTU a virtio-net device may report (virtio 1.2
// §5.1.4.1: "The device MUST set mtu to between 68 and 65535 inclusive").
const minMTU = 68

// NET_SET_MTU: "If VHOST_USER_PROTOCOL_F_REPLY_ACK is negotiated, the
// back-end must respond with zero in case the specified MTU is valid, or
// non-zero otherwise."
func (s *Session) netSetMTU(p *payload, _ *fdSet) ([]byte, error) {
	if s.cfg.features&virtio.NetFMTU == 0 {
		return nil, fmt.Errorf("%w: VIRTIO_NET_F_MTU not offered", ErrNotNegotiated)
	}
	if p.U64 < minMTU || p.U64 > uint64(s.cfg.mtu) {
		return nil, fmt.Errorf("%w: MTU %d outside %d..%d", ErrInvalid, p.U64, minMTU, s.cfg.mtu)
	}
	s.mtu = uint16(p.U64)
	if ms, ok := s.dev.(MTUSetter); ok {
		ms.SetMTU(s.mtu)
	}
	return nil, nil
}

// SET_STATUS: the virtio device status byte (virtio 1.2 §2.1). It is
// recorded for GET_STATUS; rings follow their own messages (QEMU sends
// SET_STATUS 0 before GET_VRING_BASE when it stops the device).
func (s *Session) setStatus(p *payload, _ *fdSet) ([]byte, error) {
	if p.U64 > 0xff {
		return nil, fmt.Errorf("%w: status %#x does not fit 8 bits", ErrInvalid, p.U64)
	}
	s.status = uint8(p.U64)
	s.log.Debug("device status", "status", s.status)
	return nil, nil
}

// GET_STATUS.
func (s *Session) getStatus(*payload, *fdSet) ([]byte, error) {
	return s.replyU64(uint64(s.status)), nil
}

// GET_MAX_MEM_SLOTS.
func (s *Session) getMaxMemSlots(*payload, *fdSet) ([]byte, error) {
	return s.replyU64(uint64(s.cfg.maxMemSlots)), nil
}
