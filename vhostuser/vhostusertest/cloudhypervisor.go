package vhostusertest

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// cloud-hypervisor's vhost-user-net frontend (--net vhost_user=true,
// socket=PATH,vhost_mode=client|server,num_queues=N), replayed from its
// source at cloud-hypervisor/cloud-hypervisor ae44c2971 (after v53.0,
// with commit 8df75a07a "virtio-devices: vhost_user: net: Support using
// backend config"), which speaks through rust-vmm's vhost crate 0.17
// (rust-vmm/vhost 4e217d9, vhost/src/vhost_user/frontend.rs):
//
//   - virtio-devices/src/vhost_user/vu_common_ctrl.rs
//     VhostUserHandle::connect_vhost_user: vhost_mode=client connects to
//     the backend's socket, retrying every 100 ms for 60 s;
//     vhost_mode=server binds the socket itself and accepts one
//     connection, then drops the listener (a local UnixListener: the
//     socket file stays, and a backend that dials it gets ECONNREFUSED
//     until cloud-hypervisor removes it and binds again on its next
//     reconnect). Either way: SET_OWNER, GET_FEATURES.
//   - VhostUserHandle::negotiate_features_vhost_user:
//     GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES (MQ,
//     CONFIGURE_MEM_SLOTS, REPLY_ACK, INFLIGHT_SHMFD, LOG_SHMFD,
//     DEVICE_STATE, CONFIG & offered); with REPLY_ACK acked,
//     set_hdr_flags(NEED_REPLY): every later request carries need_reply,
//     GET_* requests included (rust-vmm Frontend new_request_header), and
//     every request without a reply of its own waits for the ack
//     (FrontendInternal::wait_for_ack).
//   - virtio-devices/src/vhost_user/net.rs Net::new: GET_QUEUE_NUM (MQ)
//     must be at least num_queues, and becomes rust-vmm's max_queue_num:
//     ring indexes at or above it are refused before they are sent;
//     GET_CONFIG of sizeof(VirtioNetConfig) = 17 bytes (net_util
//     VirtioNetConfig, packed: mac, status, max_virtqueue_pairs, mtu,
//     speed, duplex) at offset 0 with flags WRITABLE (CONFIG acked); the
//     backend's MAC is used when the backend offers VIRTIO_NET_F_MAC and
//     no mac= was given, its MTU when it offers VIRTIO_NET_F_MTU.
//   - VhostUserHandle::setup_vhost_user (device activation, and after a
//     reconnect): SET_FEATURES (guest's acked & backend's), SET_MEM_TABLE
//     (every region, memfds from --memory shared=on), SET_VRING_NUM for
//     every queue, then per queue SET_VRING_ADDR, SET_VRING_BASE (the
//     avail index the guest has published; with VIRTIO_F_IN_ORDER after a
//     reconnect, the used index), SET_VRING_CALL (only when the queue has
//     an interrupt notifier: virtio_interrupt.notifier returns None for a
//     queue without an MSI-X vector, and then no call fd is sent at all),
//     SET_VRING_KICK; then SET_VRING_ENABLE 1 for every queue.
//   - VhostUserHandle::add_memory_region (memory hotplug, --memory
//     hotplug_method=acpi + ch-remote resize): ADD_MEM_REG of the new
//     region when CONFIGURE_MEM_SLOTS is acked, else SET_MEM_TABLE of all
//     (update_mem_table).
//   - VhostUserHandle::reset_vhost_user (guest reset): per queue
//     SET_VRING_ENABLE 0, GET_VRING_BASE.
//   - virtio-devices/src/vhost_user/mod.rs VhostUserEpollHandler::
//     reconnect: on HUP of the socket, connect_vhost_user again (server
//     mode: remove the socket file, bind, accept), then
//     reinitialize_vhost_user: SET_PROTOCOL_FEATURES (the acked ones, no
//     GET_PROTOCOL_FEATURES), NEED_REPLY from then on, setup_vhost_user.

// chAvailProtocol is Net::new's avail_protocol_features, as rust-vmm bits.
const chAvailProtocol = vhostuser.ProtocolFMQ | vhostuser.ProtocolFConfigureMemSlots |
	vhostuser.ProtocolFReplyAck | 1<<12 /* INFLIGHT_SHMFD */ | vhostuser.ProtocolFLogShmfd |
	1<<19 /* DEVICE_STATE */ | vhostuser.ProtocolFConfig

// chBackendAvailFeatures is Net::new's backend_avail_features with the
// default offloads (offload_csum, offload_tso and offload_ufo on):
// MRG_RXBUF, CTRL_VQ, GUEST_ANNOUNCE, MAC, MTU, MQ, CSUM, GUEST_CSUM,
// HOST/GUEST_ECN, HOST/GUEST_TSO4/6, HOST/GUEST_UFO and
// DEFAULT_VIRTIO_FEATURES (INDIRECT_DESC, EVENT_IDX, VERSION_1, IN_ORDER,
// ORDER_PLATFORM, NOTIFICATION_DATA, PROTOCOL_FEATURES, LOG_ALL).
const chBackendAvailFeatures = virtio.NetFMrgRxbuf | virtio.NetFCtrlVQ | virtio.NetFGuestAnnounce |
	virtio.NetFMAC | virtio.NetFMTU | virtio.NetFMQ | virtio.NetFCsum | virtio.NetFGuestCsum |
	virtio.NetFHostECN | virtio.NetFHostTSO4 | virtio.NetFHostTSO6 | virtio.NetFGuestECN |
	virtio.NetFGuestTSO4 | virtio.NetFGuestTSO6 | virtio.NetFHostUFO | virtio.NetFGuestUFO |
	virtio.FIndirectDesc | virtio.FEventIdx | virtio.FVersion1 | virtio.FInOrder |
	virtio.FOrderPlatform | virtio.FNotificationData | vhostuser.FProtocolFeatures | vhostuser.FLogAll

// chConfigSize is sizeof(net_util::VirtioNetConfig): 17 bytes, packed.
const chConfigSize = 17

// CloudHypervisor replays cloud-hypervisor's vhost-user-net frontend.
type CloudHypervisor struct {
	F *Frontend
	// Server is vhost_mode=server: cloud-hypervisor listens on Socket and
	// the backend connects. Otherwise (vhost_mode=client, the default) it
	// connects to the backend's socket.
	Server bool
	Socket string
	// NumQueues is --net num_queues (default 2: one queue pair).
	NumQueues int
	// QueueSize is --net queue_size (default 256).
	QueueSize uint16
	// MAC is --net mac=; zero means none, and the backend's config space
	// MAC is used.
	MAC [6]byte
	// NoCall lists the queues the guest gave no MSI-X vector
	// (VIRTIO_MSI_NO_VECTOR): setup_vhost_user sends them no
	// SET_VRING_CALL, and the backend never has a call fd for them.
	NoCall map[int]bool

	listener      *net.UnixListener
	features      uint64 // backend's GET_FEATURES
	backendAcked  uint64 // backend_avail_features & backend's
	proto         uint64 // acked protocol features
	config        NetConfig
	guestAcked    uint64
	queuesStarted bool
}

// NewCloudHypervisor returns a cloud-hypervisor launcher over f for the
// socket at path.
func NewCloudHypervisor(f *Frontend, path string, server bool) *CloudHypervisor {
	return &CloudHypervisor{F: f, Socket: path, Server: server, NumQueues: 2, QueueSize: 256}
}

// Connect is VhostUserHandle::connect_vhost_user: client mode connects
// (retrying every 100 ms, up to 60 s, while the socket is missing or
// refuses); server mode binds Socket (removing a stale file first when
// rebinding) and accepts the backend's connection. Then SET_OWNER and
// GET_FEATURES, without need_reply (no protocol features yet).
func (c *CloudHypervisor) Connect(unlink bool) error {
	f := c.F
	if c.Server {
		if c.listener == nil || unlink {
			if c.listener != nil {
				_ = c.listener.Close()
			}
			if unlink {
				_ = os.Remove(c.Socket)
			}
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.Socket, Net: "unix"})
			if err != nil {
				return fmt.Errorf("vhostusertest: cloud-hypervisor bind: %w", err)
			}
			l.SetUnlinkOnClose(true)
			c.listener = l
			f.t.Cleanup(func() { _ = l.Close() })
		}
		if err := f.Accept(c.listener); err != nil {
			return err
		}
		// The listener goes out of scope after the accept; its file stays.
		c.listener.SetUnlinkOnClose(false)
		_ = c.listener.Close()
		c.listener = nil
	} else {
		deadline := time.Now().Add(f.opts.Timeout)
		for {
			err := f.Dial(c.Socket)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(100 * time.Millisecond) // RETRY_INTERVAL
		}
	}
	if _, err := f.Msg(vhostuser.ReqSetOwner, 0, nil); err != nil {
		return err
	}
	var err error
	c.features, err = f.getU64Flags(vhostuser.ReqGetFeatures, 0)
	return err
}

// Listen binds the server-mode socket without accepting yet, so a backend
// can be told to connect before Connect runs.
func (c *CloudHypervisor) Listen() error {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.Socket, Net: "unix"})
	if err != nil {
		return err
	}
	l.SetUnlinkOnClose(true)
	c.listener = l
	c.F.t.Cleanup(func() { _ = l.Close() })
	return nil
}

// hdr is the header flags rust-vmm's Frontend puts on every request once
// set_hdr_flags(NEED_REPLY) ran.
func (c *CloudHypervisor) hdr() uint32 {
	if c.proto&vhostuser.ProtocolFReplyAck != 0 {
		return flagNeedReply
	}
	return 0
}

// Negotiate is Net::new after the connection: negotiate_features_vhost_user,
// GET_QUEUE_NUM, GET_CONFIG. It returns the config space read (zero without
// CONFIG).
func (c *CloudHypervisor) Negotiate() (NetConfig, error) {
	f := c.F
	c.backendAcked = chBackendAvailFeatures & c.features
	if c.backendAcked&vhostuser.FProtocolFeatures != 0 {
		p, err := f.getU64Flags(vhostuser.ReqGetProtocolFeatures, 0)
		if err != nil {
			return NetConfig{}, err
		}
		c.proto = chAvailProtocol & p
		// set_protocol_features: sent before the header flags change.
		if _, err := f.msgU64(vhostuser.ReqSetProtocolFeatures, 0, c.proto); err != nil {
			return NetConfig{}, err
		}
		f.proto = c.proto
	}
	if c.proto&vhostuser.ProtocolFMQ != 0 {
		n, err := f.getU64Flags(vhostuser.ReqGetQueueNum, c.hdr())
		if err != nil {
			return NetConfig{}, err
		}
		if n > 0x8000 {
			return NetConfig{}, fmt.Errorf("vhostusertest: GET_QUEUE_NUM %d above VHOST_USER_MAX_VRINGS", n)
		}
		if uint64(c.NumQueues) > n {
			return NetConfig{}, fmt.Errorf("vhostusertest: vhost-user-net requested too many queues (%d) since the backend only supports %d", c.NumQueues, n)
		}
	}
	if c.proto&vhostuser.ProtocolFConfig != 0 {
		b, err := f.GetConfigFlags(0, chConfigSize, ConfigFlagWritable, c.hdr())
		if err != nil {
			return NetConfig{}, err
		}
		full := make([]byte, NetConfigSize)
		copy(full, b)
		if c.config, err = DecodeNetConfig(full); err != nil {
			return NetConfig{}, err
		}
	}
	return c.config, nil
}

// GuestFeatures is what cloud-hypervisor shows the guest
// (Net::guest_avail_features): the backend's acked bits, MAC, MTU, and
// STATUS and GUEST_ANNOUNCE when CTRL_VQ is there (cloud-hypervisor then
// serves the control queue itself).
func (c *CloudHypervisor) GuestFeatures() uint64 {
	g := c.backendAcked | virtio.NetFMAC | virtio.NetFMTU
	if g&virtio.NetFCtrlVQ != 0 {
		g |= virtio.NetFStatus | virtio.NetFGuestAnnounce
	}
	return g
}

// GuestMAC is the MAC the guest sees: mac= if given, else the backend's
// config space MAC when it offers VIRTIO_NET_F_MAC and CONFIG was acked.
func (c *CloudHypervisor) GuestMAC() ([6]byte, bool) {
	if c.MAC != ([6]byte{}) {
		return c.MAC, true
	}
	if c.backendAcked&virtio.NetFMAC != 0 && c.proto&vhostuser.ProtocolFConfig != 0 {
		return c.config.MAC, true
	}
	return [6]byte{}, false // MacAddr::local_random
}

// Activate is the guest's DRIVER_OK: VhostUserCommon::activate ->
// setup_vhost_user with the rings laid out afresh; receive buffers are
// posted first (Linux posts them at open). If the guest's Linux driver
// refuses what cloud-hypervisor shows it (linuxValidate), there is no
// DRIVER_OK: nothing is sent and the error wraps ErrGuestRefuses.
func (c *CloudHypervisor) Activate() error {
	f := c.F
	if err := linuxValidate(c.GuestFeatures()); err != nil {
		return err
	}
	// The guest acks what cloud-hypervisor shows it (backend_acked | MAC
	// | MTU; STATUS and GUEST_ANNOUNCE only with CTRL_VQ, which this
	// backend does not offer); setup_vhost_user masks that with the
	// backend's features.
	c.guestAcked = guestFeatures(c.GuestFeatures(), ^uint64(0)) & c.features
	f.features = c.guestAcked | c.backendAcked&vhostuser.FProtocolFeatures
	if err := f.PrepareRings(c.NumQueues/2, c.QueueSize); err != nil {
		return err
	}
	// SET_VRING_BASE is the avail index the guest has published when it
	// sets DRIVER_OK: 0, Linux posts its receive buffers when it opens the
	// device, after (PrepareRings has them in the ring already, which the
	// backend reads the same way).
	return c.setup(make([]uint16, f.Rings()), false)
}

// setup is setup_vhost_user with the given SET_VRING_BASE values; kick
// writes each queue's kick eventfd afterwards (reinitialize_vhost_user with
// IN_ORDER, when a ring has pending buffers).
func (c *CloudHypervisor) setup(bases []uint16, kick bool) error {
	f := c.F
	h := c.hdr()
	acked := f.features & c.features
	if _, err := f.msgU64(vhostuser.ReqSetFeatures, h, acked); err != nil {
		return err
	}
	f.setFeaturesState(acked)
	if err := f.memTableMsg(h); err != nil {
		return err
	}
	n := f.Rings()
	for i := 0; i < n; i++ {
		if err := f.vringNum(i, h); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		if err := f.vringAddr(i, h); err != nil {
			return err
		}
		if err := f.vringBase(i, bases[i], h); err != nil {
			return err
		}
		if !c.NoCall[i] {
			if err := f.vringCall(i, h); err != nil {
				return err
			}
		}
		if err := f.vringKick(i, h); err != nil {
			return err
		}
	}
	if f.features&vhostuser.FProtocolFeatures != 0 {
		for i := 0; i < n; i++ {
			if err := f.vringEnable(i, true, h); err != nil {
				return err
			}
		}
	}
	c.queuesStarted = true
	if kick {
		for i := 0; i < n; i++ {
			d := f.rings[i].Driver
			if d.UsedIdx() != d.AvailIdx() {
				if err := f.Kick(i); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// HotplugMemory is VhostUserHandle::add_memory_region after ch-remote
// resize --memory (ACPI hotplug): a new memfd region of size bytes after
// the highest guest address, sent with ADD_MEM_REG (CONFIGURE_MEM_SLOTS
// acked) or, else, with a SET_MEM_TABLE of all regions (update_mem_table).
func (c *CloudHypervisor) HotplugMemory(size uint64) (*Region, error) {
	f := c.F
	r, err := f.newRegionAtTop(size)
	if err != nil {
		return nil, err
	}
	if c.proto&vhostuser.ProtocolFConfigureMemSlots != 0 {
		return r, f.addMemRegMsg(r, c.hdr())
	}
	return r, f.memTableMsg(c.hdr())
}

// Reset is reset_vhost_user (the guest resets the device, e.g. on reboot):
// per queue SET_VRING_ENABLE 0 and GET_VRING_BASE. It returns the bases.
func (c *CloudHypervisor) Reset() ([]uint16, error) {
	f := c.F
	var bases []uint16
	for i := 0; i < f.Rings(); i++ {
		if err := f.vringEnable(i, false, c.hdr()); err != nil {
			return bases, err
		}
		b, err := f.vringGetBase(i, c.hdr())
		if err != nil {
			return bases, err
		}
		bases = append(bases, b)
	}
	c.queuesStarted = false
	return bases, nil
}

// Reconnect is VhostUserEpollHandler::reconnect after a HUP on the socket
// (the backend went away): connect_vhost_user with unlink (server mode
// rebinds), then reinitialize_vhost_user: SET_PROTOCOL_FEATURES with the
// protocol features acked before (no GET_PROTOCOL_FEATURES), NEED_REPLY
// from then on, and setup_vhost_user on the running rings: the bases are
// the used indexes (and the queues with pending buffers are kicked) when
// VIRTIO_F_IN_ORDER was negotiated, else the avail indexes the guest
// published (buffers the backend had not used by then are never used).
func (c *CloudHypervisor) Reconnect() error {
	f := c.F
	features := f.features
	if err := c.Connect(true); err != nil {
		return err
	}
	if _, err := f.msgU64(vhostuser.ReqSetProtocolFeatures, 0, c.proto); err != nil {
		return err
	}
	f.proto = c.proto
	f.features = features
	if !c.queuesStarted {
		return nil
	}
	bases := make([]uint16, f.Rings())
	inOrder := features&virtio.FInOrder != 0
	for i := range bases {
		d := f.rings[i].Driver
		if inOrder {
			bases[i] = d.UsedIdx()
		} else {
			bases[i] = d.AvailIdx()
		}
	}
	return c.setup(bases, inOrder)
}
