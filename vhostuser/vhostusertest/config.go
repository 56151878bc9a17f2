package vhostusertest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// The virtio-net config space as a frontend reads it (vhost-user
// GET_CONFIG/SET_CONFIG). The layout is written out again here (virtio 1.2
// §5.1.4) rather than taken from vhostuser, so that the frontend checks the
// backend's encoder.

// NetConfigSize is sizeof(struct virtio_net_config), virtio 1.2 §5.1.4.
const NetConfigSize = 24

// ConfigFlagWritable is rust-vmm's VhostUserConfigFlags::WRITABLE (0x1), the
// flags cloud-hypervisor and crosvm send with GET_CONFIG (the vhost-user
// spec calls 0x1 "live migration"; QEMU sends 0).
const ConfigFlagWritable = 0x1

// NetConfig is struct virtio_net_config (virtio 1.2 §5.1.4) decoded.
type NetConfig struct {
	MAC                          [6]byte
	Status                       uint16
	MaxVirtqueuePairs            uint16
	MTU                          uint16
	Speed                        uint32
	Duplex                       uint8
	RSSMaxKeySize                uint8
	RSSMaxIndirectionTableLength uint16
	SupportedHashTypes           uint32
}

// DecodeNetConfig decodes the 24 little-endian bytes of b.
func DecodeNetConfig(b []byte) (NetConfig, error) {
	if len(b) < NetConfigSize {
		return NetConfig{}, fmt.Errorf("vhostusertest: config space of %d bytes", len(b))
	}
	le := binary.LittleEndian
	var c NetConfig
	copy(c.MAC[:], b[0:6])
	c.Status = le.Uint16(b[6:])
	c.MaxVirtqueuePairs = le.Uint16(b[8:])
	c.MTU = le.Uint16(b[10:])
	c.Speed = le.Uint32(b[12:])
	c.Duplex = b[16]
	c.RSSMaxKeySize = b[17]
	c.RSSMaxIndirectionTableLength = le.Uint16(b[18:])
	c.SupportedHashTypes = le.Uint32(b[20:])
	return c, nil
}

// ErrConfigRefused is a GET_CONFIG reply of size 0: "vhost-user back-end
// uses zero length of payload to indicate an error" (spec).
var ErrConfigRefused = errors.New("vhostusertest: GET_CONFIG refused (size 0)")

func configPayload(off, size, flags uint32, data []byte) []byte {
	b := make([]byte, 12+int(size))
	nativeEndian.PutUint32(b[0:], off)
	nativeEndian.PutUint32(b[4:], size)
	nativeEndian.PutUint32(b[8:], flags)
	copy(b[12:], data)
	return b
}

// GetConfigFlags sends GET_CONFIG for size bytes at off, with the request
// flags hdrFlags (need_reply, say) and config flags, and checks the reply
// as rust-vmm's and crosvm's frontends do (same offset and size; size 0 is
// ErrConfigRefused).
func (f *Frontend) GetConfigFlags(off, size, flags, hdrFlags uint32) ([]byte, error) {
	p, err := f.Msg(vhostuser.ReqGetConfig, hdrFlags, configPayload(off, size, flags, nil))
	if err != nil {
		return nil, err
	}
	if len(p) < 12 {
		return nil, fmt.Errorf("vhostusertest: GET_CONFIG reply of %d bytes", len(p))
	}
	rOff, rSize := nativeEndian.Uint32(p[0:]), nativeEndian.Uint32(p[4:])
	if int(rSize) != len(p)-12 {
		return nil, fmt.Errorf("vhostusertest: GET_CONFIG reply size field %d, %d bytes", rSize, len(p)-12)
	}
	if rSize == 0 {
		return nil, ErrConfigRefused
	}
	if rOff != off || rSize != size {
		return nil, fmt.Errorf("vhostusertest: GET_CONFIG reply for %d bytes at %d, asked %d at %d", rSize, rOff, size, off)
	}
	return p[12:], nil
}

// GetConfig is GetConfigFlags as QEMU sends it (no need_reply).
func (f *Frontend) GetConfig(off, size, flags uint32) ([]byte, error) {
	return f.GetConfigFlags(off, size, flags, 0)
}

// ReadNetConfig reads and decodes the whole struct virtio_net_config.
func (f *Frontend) ReadNetConfig() (NetConfig, error) {
	b, err := f.GetConfig(0, NetConfigSize, 0)
	if err != nil {
		return NetConfig{}, err
	}
	return DecodeNetConfig(b)
}

// SetConfig sends SET_CONFIG of data at off with the config flags and the
// request flags hdrFlags; with need_reply (and REPLY_ACK) a refusal is an
// error wrapping ErrNack.
func (f *Frontend) SetConfig(off, flags uint32, data []byte, hdrFlags uint32) error {
	_, err := f.Msg(vhostuser.ReqSetConfig, hdrFlags, configPayload(off, uint32(len(data)), flags, data))
	return err
}
