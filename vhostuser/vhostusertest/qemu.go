package vhostusertest

import (
	"fmt"
	"net"

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// QEMU's vhost-user-net frontend (-chardev socket + -netdev vhost-user +
// -device virtio-net-pci), message for message.
//
// QEMU 7.2 (Debian 12's 1:7.2+dfsg-7+deb12u18) was recorded with a proxy
// between the real binary, booting a Linux 6.1 guest, and vhost-arcnet:
// requests, flags, payloads and fds of a boot, traffic and poweroff, with
// one and with two queue pairs, and of a reconnect=1 session whose backend
// was restarted (vhostuser/testdata/launchers/*.rec). The functions that
// send them (QEMU source): hw/virtio/vhost-user.c vhost_user_backend_init,
// vhost_user_set_owner, vhost_user_get_features, vhost_set_vring_file,
// vhost_user_set_vring_enable, vhost_user_set_features and
// vhost_user_add_status, vhost_user_set_mem_table ->
// vhost_user_add_remove_regions -> send_add_regions, vhost_set_vring,
// vhost_user_set_vring_addr, vhost_user_dev_start, vhost_user_reset_status,
// vhost_user_get_vring_base; hw/virtio/vhost.c vhost_dev_init ->
// vhost_virtqueue_init (the masked call notifier and the error notifier),
// vhost_dev_start -> vhost_virtqueue_start (NUM, BASE, ADDR, KICK, CALL),
// vhost_dev_stop -> vhost_virtqueue_stop; hw/net/vhost_net.c
// vhost_net_start_one; hw/net/virtio-net.c virtio_net_set_status and
// virtio_net_set_queue_pairs / peer_attach (vhost_set_vring_enable);
// net/vhost-user.c net_vhost_user_event (CHR_EVENT_OPENED ->
// vhost_user_start, and the reconnect through chr_closed_bh).
//
// A current QEMU (9.x/10.x, hw/virtio/vhost-user.c at qemu/qemu 019fbfa4)
// differs in what a net backend sees in two ways, both modelled by
// QEMUCurrent: vhost_user_set_vring_enable waits for each SET_VRING_ENABLE
// ("wait_for_reply=true": need_reply with REPLY_ACK, else a GET_FEATURES);
// and vhost_user_per_device_request sends ADD_MEM_REG and REM_MEM_REG for
// the first queue pair only. Both versions mask
// VHOST_USER_PROTOCOL_F_CONFIG for virtio-net in vhost_user_backend_init,
// with the warning "vhost-user backend supports
// VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not." (seen from 7.2.22).
// Everything else a net backend receives is the same sequence. QEMU 9.1+
// also shares guest memory from memory-backend-shm (Options.Memory =
// MemoryShm) and, on macOS, uses pipes for kick and call (Options.Pipes):
// the read end of the kick pipe, the write end of the call pipe
// (event_notifier_get_fd / event_notifier_get_wfd).

// QEMUVersion selects the QEMU behaviour a QEMU launcher replays.
type QEMUVersion int

const (
	// QEMU72 is QEMU 7.2, as recorded from the real binary.
	QEMU72 QEMUVersion = iota
	// QEMUCurrent is QEMU 9.x/10.x, from its source.
	QEMUCurrent
)

func (v QEMUVersion) String() string {
	if v == QEMUCurrent {
		return "QEMU 9.x/10.x"
	}
	return "QEMU 7.2"
}

// qemuProtocolMask is VHOST_USER_PROTOCOL_FEATURE_MASK: every protocol
// feature QEMU knows (bits 0..16 in 7.2, more in current versions: none a
// net backend offers beyond these).
const qemuProtocolMask = 1<<17 - 1

// QEMU status bits (virtio 1.2 §2.1).
const (
	statusAcknowledge = 1
	statusDriver      = 2
	statusDriverOK    = 4
	statusFeaturesOK  = 8
)

// QEMU replays QEMU's vhost-user-net frontend. The Frontend plays the
// guest's driver (Linux 6.1 on one vCPU: it uses one queue pair) and holds
// memory, rings and fds.
type QEMU struct {
	F       *Frontend
	Version QEMUVersion
	// Pairs is -netdev vhost-user,queues=N (with -device
	// virtio-net-pci,mq=on): one vhost_dev per queue pair; default 1.
	Pairs int
	// GuestFeatures are the virtio features the guest driver acks (of
	// those the backend offers); zero means Linux 6.1's virtio_net set:
	// everything a net backend offers but VHOST_F_LOG_ALL.
	GuestFeatures uint64
	// RingSize is the size of each ring (QEMU's default: 256).
	RingSize uint16

	offered uint64
	acked   uint64 // what SET_FEATURES sent at Start: the guest's driver keeps it across reconnects
	status  uint8
}

// NewQEMU returns a QEMU launcher over f, with one queue pair.
func NewQEMU(f *Frontend, v QEMUVersion) *QEMU {
	return &QEMU{F: f, Version: v, Pairs: 1, RingSize: 256}
}

// DialBackend is -chardev socket,path=PATH[,reconnect=1]: QEMU connects to
// the backend's listening socket (vhost-arcnet --socket).
func (q *QEMU) DialBackend(path string) error { return q.F.Dial(path) }

// AcceptBackend is -chardev socket,path=PATH,server=on: QEMU listens and
// the backend connects (vhost-arcnet --connect); QEMU takes one connection
// at a time and, after a disconnect, waits for the next.
func (q *QEMU) AcceptBackend(l *net.UnixListener) error { return q.F.Accept(l) }

// Init is what QEMU sends as soon as the chardev connects
// (net_vhost_user_event CHR_EVENT_OPENED -> vhost_user_start ->
// vhost_net_init -> vhost_dev_init, once per queue pair), before the guest
// runs. Recorded from QEMU 7.2, for each queue pair p:
//
//	GET_FEATURES; GET_PROTOCOL_FEATURES; SET_PROTOCOL_FEATURES;
//	GET_QUEUE_NUM (MQ; pair 0 only); GET_MAX_MEM_SLOTS
//	  (CONFIGURE_MEM_SLOTS); SET_OWNER (pair 0 only); GET_FEATURES;
//	SET_VRING_CALL 2p, SET_VRING_ERR 2p, SET_VRING_CALL 2p+1,
//	  SET_VRING_ERR 2p+1 (vhost_virtqueue_init: masked call notifier,
//	  error notifier);
//
// then the queue pairs attached: SET_VRING_ENABLE 1 for pair 0, 0 for the
// others (virtio_net_set_queue_pairs). GET_QUEUE_NUM and SET_OWNER are
// "one time" requests, sent for vq_index 0 only
// (vhost_user_one_time_request in 7.2; vhost_user_per_device_request,
// which also lists ADD_MEM_REG and REM_MEM_REG, in current QEMU).
// No request carries need_reply.
func (q *QEMU) Init() error {
	for p := 0; p < q.Pairs; p++ {
		if err := q.initPair(p); err != nil {
			return err
		}
	}
	return q.setQueuePairs()
}

// initPair is vhost_user_backend_init and vhost_dev_init of pair p.
func (q *QEMU) initPair(pair int) error {
	f := q.F
	off, err := f.getU64Flags(vhostuser.ReqGetFeatures, 0)
	if err != nil {
		return err
	}
	q.offered = off
	if off&vhostuser.FProtocolFeatures == 0 {
		return fmt.Errorf("vhostusertest: %v needs VHOST_USER_F_PROTOCOL_FEATURES", q.Version)
	}
	p, err := f.getU64Flags(vhostuser.ReqGetProtocolFeatures, 0)
	if err != nil {
		return err
	}
	// "we suppress F_CONFIG if we know QEMUs internal code can not
	// support it" (vhost_user_backend_init), with the warning
	// "vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU
	// does not." (7.2.22 too).
	p &= qemuProtocolMask &^ vhostuser.ProtocolFConfig
	if _, err := f.msgU64(vhostuser.ReqSetProtocolFeatures, 0, p); err != nil {
		return err
	}
	f.proto = p
	if p&vhostuser.ProtocolFMQ != 0 && pair == 0 {
		n, err := f.getU64Flags(vhostuser.ReqGetQueueNum, 0)
		if err != nil {
			return err
		}
		// net/vhost-user.c vhost_user_start: "you are asking more queues
		// than supported" if queues= (queue pairs) > the answer.
		if n < uint64(q.Pairs) {
			return fmt.Errorf("vhostusertest: QEMU refuses GET_QUEUE_NUM %d for queues=%d", n, q.Pairs)
		}
	}
	if p&vhostuser.ProtocolFConfigureMemSlots != 0 {
		n, err := f.getU64Flags(vhostuser.ReqGetMaxMemSlots, 0)
		if err != nil {
			return err
		}
		if n < uint64(len(f.regions)) {
			return fmt.Errorf("vhostusertest: QEMU needs %d memory slots, backend has %d", len(f.regions), n)
		}
	}
	if pair == 0 {
		if _, err := f.Msg(vhostuser.ReqSetOwner, 0, nil); err != nil {
			return err
		}
	}
	if _, err := f.getU64Flags(vhostuser.ReqGetFeatures, 0); err != nil {
		return err
	}
	for idx := 2 * pair; idx < 2*pair+2; idx++ {
		for _, req := range []vhostuser.Request{vhostuser.ReqSetVringCall, vhostuser.ReqSetVringErr} {
			fd, err := f.notifierFD()
			if err != nil {
				return err
			}
			if _, err := f.msgU64(req, 0, uint64(idx), fd); err != nil {
				return err
			}
		}
	}
	return nil
}

// enablePair is vhost_set_vring_enable for the rings of pair p: QEMU 7.2
// sends it without need_reply; current QEMU waits for each (need_reply
// with REPLY_ACK: vhost_user_set_vring_enable, wait_for_reply=true).
func (q *QEMU) enablePair(pair int, on bool) error {
	var flags uint32
	if q.Version == QEMUCurrent && q.F.proto&vhostuser.ProtocolFReplyAck != 0 {
		flags = flagNeedReply
	}
	for idx := 2 * pair; idx < 2*pair+2; idx++ {
		if err := q.F.vringEnable(idx, on, flags); err != nil {
			return err
		}
	}
	return nil
}

// setQueuePairs is virtio_net_set_queue_pairs with the guest using one
// pair: pair 0 attached (enabled), the others detached (disabled).
func (q *QEMU) setQueuePairs() error {
	for p := 0; p < q.Pairs; p++ {
		if err := q.enablePair(p, p == 0); err != nil {
			return err
		}
	}
	return nil
}

// GuestBoot is the guest driver probing the device before it sets
// DRIVER_OK: QEMU 7.2 was recorded attaching the queue pairs three times
// (device resets of virtio_net's probe: every pair, as in Init), then
// enabling pair 0 once more.
func (q *QEMU) GuestBoot() error {
	for i := 0; i < 3; i++ {
		if err := q.setQueuePairs(); err != nil {
			return err
		}
	}
	return q.enablePair(0, true)
}

// Start is the guest setting DRIVER_OK (virtio_net_set_status ->
// vhost_net_start -> vhost_net_start_one -> vhost_dev_start, per queue
// pair), rings at avail index 0. Recorded from QEMU 7.2, for each pair:
//
//	SET_FEATURES (guest's | PROTOCOL_FEATURES); GET_STATUS;
//	SET_STATUS |FEATURES_OK unless set (vhost_user_set_features +
//	  vhost_user_add_status);
//	ADD_MEM_REG per region, need_reply (CONFIGURE_MEM_SLOTS; 7.2: for
//	  every pair, current QEMU: pair 0 only), or one SET_MEM_TABLE,
//	  need_reply (pair 0 only);
//	per ring: SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR,
//	  SET_VRING_KICK, SET_VRING_CALL;
//
// then, for the last pair, GET_STATUS; SET_STATUS |ACKNOWLEDGE|DRIVER|
// DRIVER_OK (vhost_user_dev_start). With more than one pair the guest then
// sets its number of queue pairs through QEMU's control queue
// (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET -> virtio_net_set_queue_pairs).
//
// The guest's receive buffers are posted before (PrepareRings), as Linux
// posts them when it opens the device.
func (q *QEMU) Start() error {
	f := q.F
	feat := q.GuestFeatures
	if feat == 0 {
		feat = guestFeatures(q.offered, ^uint64(0))
	}
	f.features = feat&q.offered | vhostuser.FProtocolFeatures
	q.acked = f.features
	if err := f.PrepareRings(q.Pairs, q.RingSize); err != nil {
		return err
	}
	return q.start(make([]uint16, 2*q.Pairs))
}

func (q *QEMU) start(bases []uint16) error {
	f := q.F
	var need uint32
	if f.proto&vhostuser.ProtocolFReplyAck != 0 {
		need = flagNeedReply
	}
	for p := 0; p < q.Pairs; p++ {
		if _, err := f.msgU64(vhostuser.ReqSetFeatures, 0, f.features); err != nil {
			return err
		}
		f.setFeaturesState(f.features)
		if err := q.addStatus(statusFeaturesOK); err != nil {
			return err
		}
		switch {
		case f.proto&vhostuser.ProtocolFConfigureMemSlots != 0 && (p == 0 || q.Version == QEMU72):
			for _, r := range f.regions {
				if err := f.addMemRegMsg(r, need); err != nil {
					return err
				}
			}
			f.memSent = true
		case f.proto&vhostuser.ProtocolFConfigureMemSlots == 0 && p == 0:
			if err := f.memTableMsg(need); err != nil {
				return err
			}
		}
		for idx := 2 * p; idx < 2*p+2; idx++ {
			if err := f.vringNum(idx, 0); err != nil {
				return err
			}
			if err := f.vringBase(idx, bases[idx], 0); err != nil {
				return err
			}
			if err := f.vringAddr(idx, 0); err != nil {
				return err
			}
			if err := f.vringKick(idx, 0); err != nil {
				return err
			}
			if err := f.vringCall(idx, 0); err != nil {
				return err
			}
		}
	}
	if err := q.addStatus(statusAcknowledge | statusDriver | statusDriverOK); err != nil {
		return err
	}
	if q.Pairs > 1 {
		return q.setQueuePairs()
	}
	return nil
}

// addStatus is vhost_user_add_status: GET_STATUS, then SET_STATUS with the
// bits added unless they are all there (STATUS negotiated only).
func (q *QEMU) addStatus(bits uint8) error {
	f := q.F
	if f.proto&vhostuser.ProtocolFStatus == 0 {
		return nil
	}
	s, err := f.getU64Flags(vhostuser.ReqGetStatus, 0)
	if err != nil {
		return err
	}
	if uint8(s)&bits == bits {
		return nil
	}
	q.status = uint8(s) | bits
	_, err = f.msgU64(vhostuser.ReqSetStatus, 0, uint64(q.status))
	return err
}

// Stop is the guest powering off (virtio_net_set_status -> vhost_net_stop
// -> vhost_dev_stop per queue pair), then QEMU exiting. Recorded from QEMU
// 7.2, for each pair: SET_STATUS 0 (last pair only:
// vhost_user_reset_status), GET_VRING_BASE of its two rings
// (vhost_virtqueue_stop); then the queue pairs attached again
// (SET_VRING_ENABLE, as in Init), and the socket closes. It returns the
// avail indexes the backend reported, per ring.
func (q *QEMU) Stop() ([]uint16, error) {
	f := q.F
	bases := make([]uint16, 2*q.Pairs)
	for p := 0; p < q.Pairs; p++ {
		if p == q.Pairs-1 && f.proto&vhostuser.ProtocolFStatus != 0 {
			if _, err := f.msgU64(vhostuser.ReqSetStatus, 0, 0); err != nil {
				return bases, err
			}
		}
		for idx := 2 * p; idx < 2*p+2; idx++ {
			var err error
			if bases[idx], err = f.vringGetBase(idx, 0); err != nil {
				return bases, err
			}
		}
	}
	if err := q.setQueuePairs(); err != nil {
		return bases, err
	}
	f.Disconnect()
	return bases, nil
}

// Reconnect is QEMU with reconnect=1 (reconnect-ms=1000 since 9.2) after
// the backend went away while the guest ran: chr_closed_bh stops the
// device without the backend (vhost_virtqueue_stop restores each ring's
// last avail index from its used index), the chardev reconnects a second
// later, CHR_EVENT_OPENED runs Init again and, the guest's DRIVER_OK being
// set, the start sequence at once, rings at their used indexes, on the same
// ring memory (recorded from QEMU 7.2: SET_VRING_BASE 2 after two frames).
// The guest does not reset: its buffers stay where they are. path is the
// backend's socket; "" means the connection is already there (server=on:
// AcceptBackend took the backend's new connection).
func (q *QEMU) Reconnect(path string) error {
	f := q.F
	if path != "" {
		if err := f.Dial(path); err != nil {
			return err
		}
	}
	if err := q.Init(); err != nil {
		return err
	}
	if len(f.rings) != 2*q.Pairs {
		return fmt.Errorf("vhostusertest: Reconnect before Start")
	}
	f.features = q.acked
	bases := make([]uint16, len(f.rings))
	for i, r := range f.rings {
		bases[i] = r.Driver.UsedIdx()
	}
	return q.start(bases)
}

// setFeaturesState records the features acked with SET_FEATURES and
// configures the drivers for them.
func (f *Frontend) setFeaturesState(v uint64) {
	f.features = v
	for _, r := range f.rings {
		r.Driver.Config(v)
	}
}
