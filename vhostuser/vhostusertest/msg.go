package vhostusertest

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Message primitives for the launcher profiles: every request goes out
// with exactly the flags a launcher sets, and the frontend reads what the
// spec says comes back.

// FlagNeedReply is the need_reply bit of a request header
// (VHOST_USER_NEED_REPLY_MASK, vhost-user spec "REPLY_ACK").
const FlagNeedReply = flagNeedReply

// hasOwnReply reports whether req has a reply of its own (vhost-user spec
// "Communication", and the GET_* requests of later extensions).
func (f *Frontend) hasOwnReply(req vhostuser.Request) bool {
	switch req {
	case vhostuser.ReqGetFeatures, vhostuser.ReqGetProtocolFeatures, vhostuser.ReqGetVringBase,
		vhostuser.ReqGetQueueNum, vhostuser.ReqGetMaxMemSlots, vhostuser.ReqGetStatus, vhostuser.ReqGetConfig:
		return true
	case vhostuser.ReqSetLogBase:
		return f.proto&vhostuser.ProtocolFLogShmfd != 0
	}
	return false
}

// Msg sends req with exactly flags (the version bit is added), payload and
// fds, and reads what the backend answers: the request's own reply, which
// it returns, or, when flags has need_reply and REPLY_ACK is negotiated,
// the ack, which must be 0 (a non-zero ack is an error wrapping
// ErrNack). Otherwise nothing is read.
func (f *Frontend) Msg(req vhostuser.Request, flags uint32, payload []byte, fds ...int) ([]byte, error) {
	if err := f.WriteMessage(req, flags, payload, fds...); err != nil {
		return nil, err
	}
	if f.hasOwnReply(req) {
		return f.ReadReply(req)
	}
	if flags&flagNeedReply == 0 || f.proto&vhostuser.ProtocolFReplyAck == 0 {
		return nil, nil
	}
	p, err := f.ReadReply(req)
	if err != nil {
		return nil, err
	}
	if len(p) != 8 {
		return nil, fmt.Errorf("vhostusertest: ack of %v has %d bytes", req, len(p))
	}
	if v := nativeEndian.Uint64(p); v != 0 {
		return nil, fmt.Errorf("vhostusertest: %v: ack %d: %w", req, v, ErrNack)
	}
	return nil, nil
}

// ErrNack is a non-zero REPLY_ACK ack: the backend refused the request.
var ErrNack = fmt.Errorf("request refused by the backend")

// msgU64 sends a request with a u64 payload.
func (f *Frontend) msgU64(req vhostuser.Request, flags uint32, v uint64, fds ...int) ([]byte, error) {
	return f.Msg(req, flags, u64(v), fds...)
}

// getU64Flags is getU64 with flags: a GET_* request and its u64 reply.
func (f *Frontend) getU64Flags(req vhostuser.Request, flags uint32) (uint64, error) {
	p, err := f.Msg(req, flags, nil)
	if err != nil {
		return 0, err
	}
	if len(p) != 8 {
		return 0, fmt.Errorf("vhostusertest: %v reply of %d bytes", req, len(p))
	}
	return nativeEndian.Uint64(p), nil
}

// Ring messages with a launcher's flags. Each is one request about ring
// idx of the rings PrepareRings laid out.

func (f *Frontend) vringNum(idx int, flags uint32) error {
	_, err := f.Msg(vhostuser.ReqSetVringNum, flags, vringState(idx, uint32(f.rings[idx].Driver.Size())))
	return err
}

func (f *Frontend) vringBase(idx int, base uint16, flags uint32) error {
	_, err := f.Msg(vhostuser.ReqSetVringBase, flags, vringState(idx, uint32(base)))
	return err
}

func (f *Frontend) vringAddr(idx int, flags uint32) error {
	d := f.rings[idx].Driver
	b := make([]byte, 40)
	nativeEndian.PutUint32(b[0:], uint32(idx))
	nativeEndian.PutUint64(b[8:], f.UVA(d.DescGPA()))
	nativeEndian.PutUint64(b[16:], f.UVA(d.UsedGPA()))
	nativeEndian.PutUint64(b[24:], f.UVA(d.AvailGPA()))
	_, err := f.Msg(vhostuser.ReqSetVringAddr, flags, b)
	return err
}

func (f *Frontend) vringKick(idx int, flags uint32) error {
	_, err := f.msgU64(vhostuser.ReqSetVringKick, flags, uint64(idx), f.rings[idx].kickR)
	return err
}

func (f *Frontend) vringCall(idx int, flags uint32) error {
	_, err := f.msgU64(vhostuser.ReqSetVringCall, flags, uint64(idx), f.rings[idx].callFD())
	return err
}

func (f *Frontend) vringEnable(idx int, on bool, flags uint32) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := f.Msg(vhostuser.ReqSetVringEnable, flags, vringState(idx, v))
	return err
}

func (f *Frontend) vringGetBase(idx int, flags uint32) (uint16, error) {
	p, err := f.Msg(vhostuser.ReqGetVringBase, flags, vringState(idx, 0))
	if err != nil {
		return 0, err
	}
	if len(p) != 8 || nativeEndian.Uint32(p) != uint32(idx) {
		return 0, fmt.Errorf("vhostusertest: GET_VRING_BASE reply % x", p)
	}
	return uint16(nativeEndian.Uint32(p[4:])), nil
}

// memTableMsg sends every region with one SET_MEM_TABLE (one fd per
// region, the same fd again for regions of one file).
func (f *Frontend) memTableMsg(flags uint32) error {
	n := len(f.regions)
	b := make([]byte, 8+32*n)
	nativeEndian.PutUint32(b, uint32(n))
	fds := make([]int, n)
	for i, r := range f.regions {
		memRegion(b[8+32*i:], r)
		fds[i] = r.fd
	}
	if _, err := f.Msg(vhostuser.ReqSetMemTable, flags, b, fds...); err != nil {
		return err
	}
	f.memSent = true
	return nil
}

// addMemRegMsg sends ADD_MEM_REG for r.
func (f *Frontend) addMemRegMsg(r *Region, flags uint32) error {
	b := make([]byte, 40)
	memRegion(b[8:], r)
	_, err := f.Msg(vhostuser.ReqAddMemReg, flags, b, r.fd)
	return err
}

// notifierFD returns an fd QEMU would pass for a notifier it keeps to
// itself (vhost_virtqueue_init's masked and error notifiers): the write end
// of an eventfd, or of a pipe with Options.Pipes. The frontend closes it.
func (f *Frontend) notifierFD() (int, error) {
	_, w, err := f.notifierPair()
	return w, err
}

// notifierPair makes an eventfd (r == w), or a pipe with Options.Pipes,
// that the frontend closes with Close.
func (f *Frontend) notifierPair() (r, w int, err error) {
	mk := newEventFD
	if f.opts.Pipes {
		mk = newPipe
	}
	if r, w, err = mk(); err != nil {
		return -1, -1, err
	}
	f.extraFDs = append(f.extraFDs, r)
	if w != r {
		f.extraFDs = append(f.extraFDs, w)
	}
	return r, w, nil
}

// Rings returns the number of rings PrepareRings laid out.
func (f *Frontend) Rings() int { return len(f.rings) }

// guestFeatures returns what a guest driver acks of offered: everything
// the backend and the launcher (allowed) have, but VHOST_F_LOG_ALL (the
// frontend's, for migration) and VHOST_USER_F_PROTOCOL_FEATURES (added by
// the frontend itself).
func guestFeatures(offered, allowed uint64) uint64 {
	return offered & allowed &^ (vhostuser.FLogAll | vhostuser.FProtocolFeatures)
}

// ErrGuestRefuses is the guest's virtio_net driver refusing the device it
// is shown: the launcher never gets DRIVER_OK.
var ErrGuestRefuses = fmt.Errorf("vhostusertest: the guest's virtio_net driver refuses the device")

// linuxValidate is Linux's virtnet_validate_features
// (drivers/net/virtio_net.c, called by virtnet_validate before the driver
// acks its features): a device that offers one of these without
// VIRTIO_NET_F_CTRL_VQ fails the probe ("device advertises feature %s but
// not %s"). seen is what the launcher shows the guest. Launchers that pass
// the backend's feature bits through (cloud-hypervisor, crosvm) make this
// the backend's business; QEMU adds its own control queue.
func linuxValidate(seen uint64) error {
	if seen&virtio.NetFCtrlVQ != 0 {
		return nil
	}
	for _, f := range []struct {
		bit  uint64
		name string
	}{
		{virtio.NetFCtrlRx, "VIRTIO_NET_F_CTRL_RX"},
		{virtio.NetFCtrlVLAN, "VIRTIO_NET_F_CTRL_VLAN"},
		{virtio.NetFGuestAnnounce, "VIRTIO_NET_F_GUEST_ANNOUNCE"},
		{virtio.NetFMQ, "VIRTIO_NET_F_MQ"},
		{virtio.NetFCtrlMACAddr, "VIRTIO_NET_F_CTRL_MAC_ADDR"},
	} {
		if seen&f.bit != 0 {
			return fmt.Errorf("%w: device advertises feature %s but not VIRTIO_NET_F_CTRL_VQ", ErrGuestRefuses, f.name)
		}
	}
	return nil
}
