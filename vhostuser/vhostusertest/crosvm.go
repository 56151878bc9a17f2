package vhostusertest

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// crosvm's vhost-user frontend (crosvm run --vhost-user net,socket=PATH),
// replayed from its source at google/crosvm f1e797a68:
//
//   - src/crosvm/sys/linux/device_helpers.rs create_vhost_user_frontend,
//     vhost_user_connection: crosvm connects to the backend's listening
//     socket (retrying only with --vhost-user-connect-timeout-ms), or
//     takes an inherited one (socket=/proc/self/fd/N). It never listens
//     and never reconnects: when the backend closes the connection the
//     worker fails and the VM stops (worker.rs, VmEventType::
//     DeviceCrashed); the next crosvm process makes a new connection.
//   - devices/src/virtio/vhost_user_frontend/mod.rs VhostUserFrontend::new:
//     SET_OWNER first, GET_FEATURES (kept: VIRTIO_DEVICE_TYPE_SPECIFIC_
//     FEATURES_MASK 0xfffc_0000_00ff_ffff | base_features (VERSION_1,
//     EVENT_IDX, VIRTIO_F_SUSPEND) | PROTOCOL_FEATURES, so neither
//     INDIRECT_DESC nor LOG_ALL), GET_PROTOCOL_FEATURES,
//     SET_PROTOCOL_FEATURES (CONFIG, MQ, BACKEND_REQ, DEVICE_STATE, SHMEM,
//     REPLY_ACK & offered), GET_QUEUE_NUM (MQ): the number of queues of
//     the device.
//   - VirtioDevice::read_config / write_config: every guest access to the
//     device's config space is a GET_CONFIG (flags WRITABLE) or SET_CONFIG
//     (flags 0) of that access's offset and width; nothing is cached.
//   - VirtioDevice::activate (DRIVER_OK): SET_FEATURES if the acked
//     features changed, SET_MEM_TABLE (all regions of the one guest
//     memory file, at their offsets: vm_memory/src/guest_memory.rs), then
//     activate_vring per queue: SET_VRING_NUM, SET_VRING_ADDR,
//     SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK, SET_VRING_ENABLE 1.
//   - VirtioDevice::reset and virtio_sleep: deactivate_vring per queue:
//     SET_VRING_ENABLE 0, GET_VRING_BASE. virtio_wake is activate again
//     with the rings where they stopped.
//
// crosvm's BackendClient (third_party/vmm_vhost/src/backend_client.rs)
// never sets need_reply ("we negotiate it only so that the backend can
// choose to set the "need_reply" in the backend-to-frontend requests").

// crosvmAllowFeatures is VhostUserFrontend::new's allow_features for
// an unprotected VM.
const crosvmAllowFeatures = 0xfffc_0000_00ff_ffff | virtio.FVersion1 | virtio.FEventIdx |
	1<<42 /* VIRTIO_F_SUSPEND */ | vhostuser.FProtocolFeatures

// crosvmAllowProtocol is VhostUserFrontend::new's allow_protocol_features.
// Its bits are crosvm's own numbering (third_party/vmm_vhost/src/
// message.rs VhostUserProtocolFeatures at f1e797a68): DEVICE_STATE is
// 0x0008_0000 (bit 19) and SHMEM 0x0040_0000 (bit 22); QEMU's
// vhost-user.rst has GET_VRING_BASE_INFLIGHT at bit 20, which crosvm
// does not know.
const crosvmAllowProtocol = vhostuser.ProtocolFConfig | vhostuser.ProtocolFMQ |
	vhostuser.ProtocolFBackendReq | crosvmProtocolDeviceState | crosvmProtocolShmem | vhostuser.ProtocolFReplyAck

// crosvm's protocol feature bits this backend does not offer.
const (
	crosvmProtocolDeviceState = 1 << 19 // VhostUserProtocolFeatures::DEVICE_STATE
	crosvmProtocolShmem       = 1 << 22 // VhostUserProtocolFeatures::SHMEM
)

// Crosvm replays crosvm's vhost-user frontend for a net device.
type Crosvm struct {
	F *Frontend
	// QueueSize is the ring size the guest uses (crosvm offers
	// max-queue-size, default 32768 clamped by the guest; Linux uses 256).
	QueueSize uint16

	avail uint64 // avail_features
	// acked is acked_features: it only ever grows, ack_features ORs what
	// the guest acks into it (mod.rs VhostUserFrontend::ack_features:
	// "self.acked_features |= features & self.avail_features"), so a
	// guest that acks less after a reset still gets the earlier set.
	acked     uint64
	lastAcked uint64
	numQueues int
	sent      []int // queue indexes activated
}

// NewCrosvm returns a crosvm launcher over f. Give f Options.SingleFile
// (crosvm's guest memory is one file) and, like x86 crosvm, two regions
// with GPAs {0, 4 GiB}.
func NewCrosvm(f *Frontend) *Crosvm { return &Crosvm{F: f, QueueSize: 256} }

// Connect is vhost_user_connection + VhostUserFrontend::new: connect,
// SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM. It
// returns the number of queues crosvm gives the device.
func (c *Crosvm) Connect(path string) (int, error) {
	f := c.F
	if err := f.Dial(path); err != nil {
		return 0, err
	}
	if _, err := f.Msg(vhostuser.ReqSetOwner, 0, nil); err != nil {
		return 0, err
	}
	off, err := f.getU64Flags(vhostuser.ReqGetFeatures, 0)
	if err != nil {
		return 0, err
	}
	c.avail = crosvmAllowFeatures & off
	c.acked, c.lastAcked = 0, 0
	var proto uint64
	if c.avail&vhostuser.FProtocolFeatures != 0 {
		// "add it to acked_features so it will be included in any future
		// set_features() calls".
		c.acked = vhostuser.FProtocolFeatures
		c.lastAcked = c.acked // last_acked_features: acked_features
		p, err := f.getU64Flags(vhostuser.ReqGetProtocolFeatures, 0)
		if err != nil {
			return 0, err
		}
		proto = crosvmAllowProtocol & p
		if _, err := f.msgU64(vhostuser.ReqSetProtocolFeatures, 0, proto); err != nil {
			return 0, err
		}
		f.proto = proto
	}
	c.numQueues = 2 // device_type.min_queues() for net
	if proto&vhostuser.ProtocolFMQ != 0 {
		n, err := f.getU64Flags(vhostuser.ReqGetQueueNum, 0)
		if err != nil {
			return 0, err
		}
		c.numQueues = int(n)
	}
	return c.numQueues, nil
}

// ReadConfig is one guest access to the config space through crosvm's
// read_config: GET_CONFIG of exactly that offset and width, flags
// WRITABLE.
func (c *Crosvm) ReadConfig(off, size uint32) ([]byte, error) {
	return c.F.GetConfigFlags(off, size, ConfigFlagWritable, 0)
}

// WriteConfig is write_config: SET_CONFIG with flags 0 and no need_reply
// (a refusal is only visible in the backend's log).
func (c *Crosvm) WriteConfig(off uint32, data []byte) error {
	return c.F.SetConfig(off, 0, data, 0)
}

// GuestProbe is Linux 6.1's virtio_net reading the config space through
// crosvm while it probes, with the access widths it uses: mtu (le16, in
// virtnet_validate, before FEATURES_OK), max_virtqueue_pairs (le16), mac
// a byte at a time (virtio_cread_bytes), status (le16), speed (le32) and
// duplex (u8). Fields are read only when their feature is offered. It
// returns what the guest learnt, or an error wrapping ErrGuestRefuses when
// the driver refuses the device's features before it reads anything
// (virtnet_validate).
func (c *Crosvm) GuestProbe() (NetConfig, error) {
	var cfg NetConfig
	if err := linuxValidate(c.avail); err != nil {
		return cfg, err
	}
	read := func(off, size uint32) (uint64, error) {
		b, err := c.ReadConfig(off, size)
		if err != nil {
			return 0, err
		}
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v, nil
	}
	if c.avail&virtio.NetFMTU != 0 {
		v, err := read(10, 2)
		if err != nil {
			return cfg, err
		}
		cfg.MTU = uint16(v)
	}
	if c.avail&virtio.NetFMQ != 0 {
		v, err := read(8, 2)
		if err != nil {
			return cfg, err
		}
		cfg.MaxVirtqueuePairs = uint16(v)
	}
	if c.avail&virtio.NetFMAC != 0 {
		for i := uint32(0); i < 6; i++ {
			v, err := read(i, 1)
			if err != nil {
				return cfg, err
			}
			cfg.MAC[i] = byte(v)
		}
	}
	if c.avail&virtio.NetFStatus != 0 {
		v, err := read(6, 2)
		if err != nil {
			return cfg, err
		}
		cfg.Status = uint16(v)
	}
	if c.avail&virtio.NetFSpeedDuplex != 0 {
		v, err := read(12, 4)
		if err != nil {
			return cfg, err
		}
		cfg.Speed = uint32(v)
		if v, err = read(16, 1); err != nil {
			return cfg, err
		}
		cfg.Duplex = uint8(v)
	}
	return cfg, nil
}

// Activate is the guest's DRIVER_OK with pairs queue pairs: ack_features
// (what the guest acks of avail_features), then activate: SET_FEATURES if
// changed, SET_MEM_TABLE, and per queue NUM, ADDR, BASE, CALL, KICK,
// ENABLE. The rings are laid out afresh, receive buffers posted.
func (c *Crosvm) Activate(pairs int) error {
	return c.ActivateAcking(pairs, ^uint64(0))
}

// ActivateAcking is Activate with a guest that acks only the features of
// guest (a driver loaded with fewer offloads after a reset): crosvm ORs
// them into the features acked before and sends the union.
func (c *Crosvm) ActivateAcking(pairs int, guest uint64) error {
	f := c.F
	if 2*pairs > c.numQueues {
		return fmt.Errorf("vhostusertest: crosvm has %d queues for %d pairs", c.numQueues, pairs)
	}
	if err := linuxValidate(c.avail); err != nil {
		return err
	}
	c.acked |= guestFeatures(c.avail, guest)
	f.features = c.acked
	if err := f.PrepareRings(pairs, c.QueueSize); err != nil {
		return err
	}
	return c.activate(make([]uint16, 2*pairs))
}

func (c *Crosvm) activate(bases []uint16) error {
	f := c.F
	acked := f.features
	if acked != c.lastAcked {
		if _, err := f.msgU64(vhostuser.ReqSetFeatures, 0, acked); err != nil {
			return err
		}
		c.lastAcked = acked
	}
	f.setFeaturesState(acked)
	if err := f.memTableMsg(0); err != nil {
		return err
	}
	c.sent = c.sent[:0]
	for i := range bases {
		if err := f.vringNum(i, 0); err != nil {
			return err
		}
		if err := f.vringAddr(i, 0); err != nil {
			return err
		}
		if err := f.vringBase(i, bases[i], 0); err != nil {
			return err
		}
		if err := f.vringCall(i, 0); err != nil {
			return err
		}
		if err := f.vringKick(i, 0); err != nil {
			return err
		}
		if acked&vhostuser.FProtocolFeatures != 0 {
			if err := f.vringEnable(i, true, 0); err != nil {
				return err
			}
		}
		c.sent = append(c.sent, i)
	}
	return nil
}

// Sleep is virtio_sleep (crosvm suspend or snapshot) and, without the
// Wake, reset: deactivate_vring per queue (SET_VRING_ENABLE 0,
// GET_VRING_BASE). It returns the bases.
func (c *Crosvm) Sleep() ([]uint16, error) {
	f := c.F
	var bases []uint16
	for _, i := range c.sent {
		if c.lastAcked&vhostuser.FProtocolFeatures != 0 {
			if err := f.vringEnable(i, false, 0); err != nil {
				return bases, err
			}
		}
		b, err := f.vringGetBase(i, 0)
		if err != nil {
			return bases, err
		}
		bases = append(bases, b)
	}
	c.sent = c.sent[:0]
	return bases, nil
}

// Wake is virtio_wake: activate again on the same rings, each at the base
// Sleep returned (Queue::vhost_user_reclaim). SET_FEATURES is skipped: the
// acked features did not change.
func (c *Crosvm) Wake(bases []uint16) error {
	return c.activate(bases)
}

// Exit is the crosvm process ending: the socket closes without a message.
func (c *Crosvm) Exit() { c.F.Disconnect() }
