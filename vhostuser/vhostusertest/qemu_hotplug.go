package vhostusertest

import (
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// HotplugMemory is memory plugged into the running guest (a pc-dimm,
// device_add): the memory listener of every queue pair's vhost_dev commits
// the new layout (hw/virtio/vhost.c vhost_commit -> vhost_user_set_mem_table
// -> vhost_user_add_remove_regions -> send_add_regions): ADD_MEM_REG of
// the new region, with need_reply when REPLY_ACK is negotiated. Current
// QEMU sends it from the first pair only (vhost_user_per_device_request,
// QEMU 8.1, hw/virtio/vhost-user.c at 019fbfa4); QEMU 7.2 once per pair,
// as in its recorded boot with queues=2.
func (q *QEMU) HotplugMemory(size uint64) (*Region, error) {
	f := q.F
	r, err := f.newRegionAtTop(size)
	if err != nil {
		return nil, err
	}
	need := q.needReply()
	for p := 0; p < q.Pairs; p++ {
		if p == 0 || q.Version == QEMU72 {
			if err := f.addMemRegMsg(r, need); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// UnplugMemory is the region's removal (device_del, once the guest has
// offlined it): send_remove_regions, REM_MEM_REG without an fd, with the
// same per-pair rule as HotplugMemory.
func (q *QEMU) UnplugMemory(r *Region) error {
	f := q.F
	need := q.needReply()
	b := make([]byte, 40)
	memRegion(b[8:], r)
	for p := 0; p < q.Pairs; p++ {
		if p == 0 || q.Version == QEMU72 {
			if _, err := f.Msg(vhostuser.ReqRemMemReg, need, b); err != nil {
				return err
			}
		}
	}
	f.dropRegion(r)
	return nil
}

// needReply is the need_reply flag QEMU puts on requests it waits for.
func (q *QEMU) needReply() uint32 {
	if q.F.proto&vhostuser.ProtocolFReplyAck != 0 {
		return flagNeedReply
	}
	return 0
}
