package vhostusertest

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// cloud-hypervisor's pause/resume and live migration paths, from
// virtio-devices/src/vhost_user/vu_common_ctrl.rs at ae44c2971 (v53.0-246):
//
//   - VhostUserHandle::pause_vhost_user / resume_vhost_user (vm.pause,
//     vm.resume, and around a snapshot or migration): SET_VRING_ENABLE 0,
//     then later 1, for every queue; no GET/SET_VRING_BASE in between,
//     the rings stay where they are.
//   - start_dirty_log (migration start): update_log_base (a new memfd of
//     last_ram_addr / (4096 * 8) + 1 bytes, sealed against growing and
//     shrinking, sent with SET_LOG_BASE, mmap_offset 0), SET_FEATURES of
//     the acked features | VHOST_F_LOG_ALL, then set_vring_logging(true):
//     SET_VRING_ADDR of every queue again with VHOST_VRING_F_LOG and
//     log_guest_addr the used ring's guest address.
//   - dirty_log (each migration iteration): update_log_base again, a new
//     area, and the previous one is read as the dirty bitmap: rotating
//     the area is how cloud-hypervisor stops the backend writing to the
//     one it reads.
//   - stop_dirty_log: SET_VRING_ADDR without the log flag, SET_FEATURES
//     of the acked features, and the area is unmapped.
//
// Every request carries need_reply (REPLY_ACK acked, as in the rest of the
// profile); SET_LOG_BASE's reply is the echoed log description (rust-vmm
// vhost 0.16+, see vhostuser/dirtylog.go). The log memfd is not sealed
// here (sealing is Linux-only; the backend neither grows nor shrinks it).

// Pause is pause_vhost_user: SET_VRING_ENABLE 0 for every queue.
func (c *CloudHypervisor) Pause() error { return c.enableAll(false) }

// Resume is resume_vhost_user: SET_VRING_ENABLE 1 for every queue.
func (c *CloudHypervisor) Resume() error { return c.enableAll(true) }

func (c *CloudHypervisor) enableAll(on bool) error {
	if !c.queuesStarted {
		return nil // "if self.ready"
	}
	for i := 0; i < c.F.Rings(); i++ {
		if err := c.F.vringEnable(i, on, c.hdr()); err != nil {
			return err
		}
	}
	return nil
}

// chLogSize is update_log_base's area size for guest RAM ending at
// lastRAM: one bit per 4 KiB page from address 0, plus a byte.
func chLogSize(lastRAM uint64) uint64 { return lastRAM/(4096*8) + 1 }

// lastRAM is the highest guest physical address of the frontend's memory.
func (c *CloudHypervisor) lastRAM() uint64 {
	var end uint64
	for _, r := range c.F.regions {
		end = max(end, r.GPA+r.Size)
	}
	return end - 1
}

// StartDirtyLog is start_dirty_log. It returns the log area (the bitmap
// the backend writes from now on).
func (c *CloudHypervisor) StartDirtyLog() ([]byte, error) {
	if c.features&vhostuser.FLogAll == 0 || c.proto&vhostuser.ProtocolFLogShmfd == 0 {
		return nil, fmt.Errorf("vhostusertest: cloud-hypervisor: migration not supported (LOG_ALL and LOG_SHMFD needed)")
	}
	bm, err := c.F.setLogBaseMsg(chLogSize(c.lastRAM()), c.hdr())
	if err != nil {
		return nil, err
	}
	acked := c.F.features & c.features
	if _, err := c.F.msgU64(vhostuser.ReqSetFeatures, c.hdr(), acked|vhostuser.FLogAll); err != nil {
		return nil, err
	}
	return bm, c.vringLogging(true)
}

// DirtyLog is dirty_log: a new log area, and the previous one returned to
// be read (the backend no longer writes it once SET_LOG_BASE is acked).
// The new area is returned too.
func (c *CloudHypervisor) DirtyLog(prev []byte) (dirty, next []byte, err error) {
	next, err = c.F.setLogBaseMsg(chLogSize(c.lastRAM()), c.hdr())
	return prev, next, err
}

// StopDirtyLog is stop_dirty_log.
func (c *CloudHypervisor) StopDirtyLog() error {
	if err := c.vringLogging(false); err != nil {
		return err
	}
	_, err := c.F.msgU64(vhostuser.ReqSetFeatures, c.hdr(), c.F.features&c.features)
	return err
}

// vringLogging is set_vring_logging: SET_VRING_ADDR of every queue with
// (or without) VHOST_VRING_F_LOG and the used ring's guest address.
func (c *CloudHypervisor) vringLogging(on bool) error {
	for i := 0; i < c.F.Rings(); i++ {
		if err := c.F.vringAddrLog(i, on, c.hdr()); err != nil {
			return err
		}
	}
	return nil
}

// vringAddrLog is SET_VRING_ADDR of ring idx with flags; log sets
// VHOST_VRING_F_LOG with log_guest_addr the used ring's guest address.
func (f *Frontend) vringAddrLog(idx int, log bool, flags uint32) error {
	d := f.rings[idx].Driver
	b := make([]byte, 40)
	nativeEndian.PutUint32(b[0:], uint32(idx))
	nativeEndian.PutUint64(b[8:], f.UVA(d.DescGPA()))
	nativeEndian.PutUint64(b[16:], f.UVA(d.UsedGPA()))
	nativeEndian.PutUint64(b[24:], f.UVA(d.AvailGPA()))
	if log {
		nativeEndian.PutUint32(b[4:], vringFLog)
		nativeEndian.PutUint64(b[32:], d.UsedGPA())
	}
	_, err := f.Msg(vhostuser.ReqSetVringAddr, flags, b)
	return err
}

// setLogBaseMsg is SET_LOG_BASE with flags of a new memfd log area of size
// bytes at offset 0; the reply must echo the log description. It returns
// the area, mapped until the test ends.
func (f *Frontend) setLogBaseMsg(size uint64, flags uint32) ([]byte, error) {
	fd, data, err := newSharedMemory("vhost_user_dirty_log", int(size))
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd) //nolint:errcheck // sent; the backend has its own copy
	f.t.Cleanup(func() { _ = unix.Munmap(data) })
	b := make([]byte, 16)
	nativeEndian.PutUint64(b[0:], size)
	p, err := f.Msg(vhostuser.ReqSetLogBase, flags, b, fd)
	if err != nil {
		return nil, err
	}
	if len(p) != 16 || nativeEndian.Uint64(p) != size || nativeEndian.Uint64(p[8:]) != 0 {
		return nil, fmt.Errorf("vhostusertest: SET_LOG_BASE reply % x", p)
	}
	return data, nil
}
