package vhostuser_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// configMsg encodes a VhostUserConfig payload (vhost-user spec "Virtio
// device config space"): offset, size, flags and size zero bytes.
func configMsg(off, size, flags uint32) []byte {
	b := make([]byte, 12+int(size))
	binary.NativeEndian.PutUint32(b[0:], off)
	binary.NativeEndian.PutUint32(b[4:], size)
	binary.NativeEndian.PutUint32(b[8:], flags)
	return b
}

// TestConfigBeforeFeatures: through a real socket, a frontend reads the
// config space right after SET_PROTOCOL_FEATURES, before SET_FEATURES (as
// crosvm and cloud-hypervisor do): every field of an offered feature is
// there (virtio 1.2 §2.5.2), little-endian.
func TestConfigBeforeFeatures(t *testing.T) {
	h := newHarness(t, vhostuser.Options{QueuePairs: 2, MTU: 1500})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	off, err := f.GetFeatures()
	require.NoError(t, err)
	require.NotZero(t, off&virtio.NetFMAC)
	require.NotZero(t, off&virtio.NetFStatus)
	require.NotZero(t, off&virtio.NetFSpeedDuplex)
	p, err := f.GetProtocolFeatures()
	require.NoError(t, err)
	require.NotZero(t, p&vhostuser.ProtocolFConfig)
	require.NoError(t, f.SetProtocolFeatures(vhostuser.ProtocolFConfig|vhostuser.ProtocolFMQ))
	cfg, err := f.GetConfig(0, vhostuser.NetConfigSize, 0)
	require.NoError(t, err)
	d := h.lastDevice()
	require.Equal(t, d.info.MAC[:], cfg[0:6], "mac")
	require.Equal(t, vhostuser.GenerateMAC(h.path, 0), d.info.MAC)
	require.Equal(t, vhostuser.NetStatusLinkUp, binary.LittleEndian.Uint16(cfg[6:]), "status")
	require.Equal(t, uint16(2), binary.LittleEndian.Uint16(cfg[8:]), "max_virtqueue_pairs")
	require.Equal(t, uint16(1500), binary.LittleEndian.Uint16(cfg[10:]), "mtu")
	require.Equal(t, vhostuser.SpeedUnknown, binary.LittleEndian.Uint32(cfg[12:]), "speed")
	require.Equal(t, vhostuser.DuplexFull, cfg[16], "duplex")
	// The frontend's decoder agrees.
	nc, err := f.ReadNetConfig()
	require.NoError(t, err)
	require.Equal(t, vhostusertest.NetConfig{MAC: d.info.MAC, Status: 1, MaxVirtqueuePairs: 2, MTU: 1500,
		Speed: 0xffffffff, Duplex: 1}, nc)
	// And the session goes on to a normal start.
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 64))
	echoOnce(t, f, 0, frame(60, 7), vhostusertest.LayoutSplit)
}

// TestSessionSlotsAndMACs: the guest ports of a socket get slots 0, 1, ...
// and the MAC of Options.MACs plus the slot; a port that reconnects after
// its session ended gets its slot, and MAC, back. (Generated MACs:
// TestConfigBeforeFeatures.)
func TestSessionSlotsAndMACs(t *testing.T) {
	base := [6]byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0x00}
	path := filepath.Join(shortTempDir(t), "vm.sock")
	h := newHarnessAt(t, vhostuser.Options{MACs: map[string][6]byte{path: base}}, path)
	dial := func() (*vhostusertest.Frontend, vhostusertest.NetConfig) {
		f := vhostusertest.New(t, vhostusertest.Options{Regions: 1, RegionSize: 1 << 20})
		require.NoError(t, f.Dial(h.path))
		_, err := f.GetFeatures()
		require.NoError(t, err)
		require.NoError(t, f.SetProtocolFeatures(vhostuser.ProtocolFConfig))
		nc, err := f.ReadNetConfig()
		require.NoError(t, err)
		return f, nc
	}
	f0, nc0 := dial()
	_, nc1 := dial()
	require.Equal(t, base, nc0.MAC)
	require.Equal(t, [6]byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}, nc1.MAC)
	slots := map[int][6]byte{}
	for _, s := range h.srv.Sessions() {
		slots[s.Info().Slot] = s.Info().MAC
	}
	require.Equal(t, map[int][6]byte{0: nc0.MAC, 1: nc1.MAC}, slots)

	f0.Disconnect()
	require.Equal(t, 0, h.waitEnded().info.Slot)
	_, nc2 := dial()
	require.Equal(t, base, nc2.MAC, "slot 0 is free again")
}

// memRegMsg encodes VhostUserMemRegMsg (ADD_MEM_REG, REM_MEM_REG) for r.
func memRegMsg(r *vhostusertest.Region) []byte {
	b := make([]byte, 40)
	binary.NativeEndian.PutUint64(b[8:], r.GPA)
	binary.NativeEndian.PutUint64(b[16:], r.Size)
	binary.NativeEndian.PutUint64(b[24:], r.UVA)
	binary.NativeEndian.PutUint64(b[32:], r.Offset)
	return b
}

// TestAddMemRegTwice: QEMU 7.2 sends ADD_MEM_REG (and REM_MEM_REG) once
// per queue pair (testdata/launchers/qemu-7.2-mq.rec): the same region
// again is counted, not refused; it goes at its last REM_MEM_REG. The same
// addresses in another file are still an overlap.
func TestAddMemRegTwice(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := vhostusertest.New(t, vhostusertest.Options{Regions: 3, RegionSize: 4 << 20})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 64)) // rings in regions 0 and 1
	r := f.Regions()[2]
	_, err := f.Request(vhostuser.ReqAddMemReg, false, memRegMsg(r), r.FD())
	require.NoError(t, err, "the same region again")
	echoOnce(t, f, 0, frame(64, 1), vhostusertest.LayoutSplit)
	for i := 0; i < 2; i++ {
		_, err = f.Request(vhostuser.ReqRemMemReg, false, memRegMsg(r))
		require.NoError(t, err, "removal %d", i+1)
		echoOnce(t, f, 0, frame(64, byte(2+i)), vhostusertest.LayoutSplit)
	}
	// Now it is gone.
	_, err = f.Request(vhostuser.ReqRemMemReg, false, memRegMsg(r))
	require.Error(t, err)
	require.ErrorIs(t, h.waitEnded().err, vhostuser.ErrBadMemory)

	// The addresses of a mapped region in another file: an overlap.
	f2 := vhostusertest.New(t, vhostusertest.Options{Regions: 1, RegionSize: 4 << 20})
	other := vhostusertest.New(t, vhostusertest.Options{Regions: 1, RegionSize: 4 << 20})
	require.NoError(t, f2.Dial(h.path))
	require.NoError(t, f2.Negotiate(0))
	require.NoError(t, f2.SendMemory())
	o := other.Regions()[0]
	_, err = f2.Request(vhostuser.ReqAddMemReg, false, memRegMsg(f2.Regions()[0]), o.FD())
	require.Error(t, err)
	require.ErrorIs(t, h.waitEnded().err, vhostuser.ErrBadMemory)
}
