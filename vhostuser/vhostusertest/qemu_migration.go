package vhostusertest

import (
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// QEMU's live migration as a vhost-user-net backend sees it (QEMU
// docs/interop/vhost-user.rst, "Migration" and "Dirty pages logging";
// hw/virtio/vhost.c and hw/virtio/vhost-user.c at qemu/qemu 019fbfa4):
//
//   - On the source, when the migration starts, the memory listener of
//     every queue pair's vhost_dev runs vhost_migration_log(enable):
//     vhost_dev_log_resize -> vhost_user_set_log_base (SET_LOG_BASE with
//     the log memfd, whose reply QEMU reads with LOG_SHMFD), then
//     vhost_dev_set_log(true): vhost_user_set_features with
//     VHOST_F_LOG_ALL ("wait for a reply if logging is enabled":
//     need_reply with REPLY_ACK; then vhost_user_add_status(FEATURES_OK),
//     a GET_STATUS with STATUS) and, per ring, vhost_user_set_vring_addr
//     with VHOST_VRING_F_LOG and log_guest_addr the used ring (need_reply
//     again). SET_LOG_BASE goes from the first queue pair only since
//     QEMU 8.0 (c98ac64cfb53 "vhost-user: send set log base message only
//     once": vhost_user_set_log_base returns early for vq_index != 0),
//     and 9.1 lists it among the per-device requests (7c211eb078c4,
//     vhost_user_per_device_request); QEMU 7.2 sends it for every pair,
//     the same log memfd each time.
//   - A cancelled migration: vhost_migration_log(disable):
//     vhost_dev_set_log(false): SET_FEATURES without LOG_ALL and
//     SET_VRING_ADDR without the flag, neither waiting for a reply.
//   - A completed one stops the source's device (vm_stop ->
//     vhost_dev_stop: Stop), and the destination, started with -incoming,
//     runs its device from the migrated ring indexes and announces the
//     guest: qemu_announce_self -> net/vhost-user.c vhost_user_receive
//     (the 60-byte RARP QEMU builds) -> vhost_user_migration_done:
//     SEND_RARP with the guest's MAC, for a guest without
//     VIRTIO_NET_F_GUEST_ANNOUNCE, when RARP is negotiated. The announce
//     repeats (announce-rounds, 5 by default).

// MigrationLogStart is the source's migration start: per queue pair
// SET_LOG_BASE (see above: pair 0 only but on QEMU 7.2), SET_FEATURES |
// LOG_ALL, and SET_VRING_ADDR with the log flag for its two rings. It
// returns the log (size bytes, one bit per 4 KiB page).
func (q *QEMU) MigrationLogStart(size uint64) ([]byte, error) {
	f := q.F
	var need uint32
	if f.proto&vhostuser.ProtocolFReplyAck != 0 {
		need = flagNeedReply
	}
	var log []byte
	for p := 0; p < q.Pairs; p++ {
		if p == 0 || q.Version == QEMU72 {
			if log == nil {
				var err error
				if log, err = f.setLogBaseMsg(size, 0); err != nil {
					return nil, err
				}
			} else if _, err := f.setLogBaseMsg(size, 0); err != nil {
				// A second memfd stands in for QEMU's same one: the
				// backend sees one more SET_LOG_BASE of the same size.
				return nil, err
			}
		}
		if _, err := f.msgU64(vhostuser.ReqSetFeatures, need, f.features|vhostuser.FLogAll); err != nil {
			return nil, err
		}
		if err := q.addStatus(statusFeaturesOK); err != nil {
			return nil, err
		}
		for idx := 2 * p; idx < 2*p+2; idx++ {
			if err := f.vringAddrLog(idx, true, need); err != nil {
				return nil, err
			}
		}
	}
	return log, nil
}

// MigrationLogStop is a cancelled migration on the source: per queue pair
// SET_FEATURES without LOG_ALL and SET_VRING_ADDR without the log flag.
func (q *QEMU) MigrationLogStop() error {
	f := q.F
	for p := 0; p < q.Pairs; p++ {
		if _, err := f.msgU64(vhostuser.ReqSetFeatures, 0, f.features); err != nil {
			return err
		}
		if err := q.addStatus(statusFeaturesOK); err != nil {
			return err
		}
		for idx := 2 * p; idx < 2*p+2; idx++ {
			if err := f.vringAddrLog(idx, false, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// AnnounceMigrated is the destination's announcement after the switchover
// (vhost_user_migration_done): SEND_RARP with mac, once per announce
// round, if RARP was negotiated (QEMU sends it to the first queue pair's
// vhost_dev: one message per round).
func (q *QEMU) AnnounceMigrated(mac [6]byte, rounds int) error {
	f := q.F
	if f.proto&vhostuser.ProtocolFRARP == 0 {
		return nil
	}
	var b [8]byte
	copy(b[:], mac[:])
	for i := 0; i < rounds; i++ {
		if _, err := f.Msg(vhostuser.ReqSendRARP, 0, b[:]); err != nil {
			return err
		}
	}
	return nil
}
