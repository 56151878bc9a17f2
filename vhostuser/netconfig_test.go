package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// configPayload encodes a VhostUserConfig: offset, size, flags, data (size
// zero bytes when data is nil).
func configPayload(off, size, flags uint32, data []byte) []byte {
	b := make([]byte, sizeConfigHdr+int(size))
	configHdr{Offset: off, Size: size, Flags: flags}.encode(b)
	copy(b[sizeConfigHdr:], data)
	return b
}

// macSetterDevice is a nopDevice that records SetMAC.
type macSetterDevice struct {
	*nopDevice
	macs [][6]byte
}

func (d *macSetterDevice) SetMAC(mac [6]byte) { d.macs = append(d.macs, mac) }

// configSession is a session with the config space negotiated (and
// REPLY_ACK when ack), the MAC 02:00:5e:10:00:01, 3 queue pairs, MTU 9000
// and a 10 Gbit/s link.
func configSession(t *testing.T, o Options, ack bool) (*Session, *macSetterDevice, *fakeConn) {
	t.Helper()
	if o.QueuePairs == 0 {
		o.QueuePairs = 3
	}
	if o.MTU == 0 {
		o.MTU = 9000
	}
	if o.LinkSpeed == 0 {
		o.LinkSpeed = 10000
	}
	c := &fakeConn{}
	s, nd := testSession(t, o, c)
	d := &macSetterDevice{nopDevice: nd}
	s.dev = d
	s.mac = [6]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	s.proto = ProtocolFConfig
	if ack {
		s.proto |= ProtocolFReplyAck
	}
	return s, d, c
}

// getConfig sends GET_CONFIG and returns the reply's VhostUserConfig and
// bytes.
func getConfig(t *testing.T, s *Session, c *fakeConn, off, size, flags uint32) (configHdr, []byte) {
	t.Helper()
	c.out.Reset()
	body := configPayload(off, size, flags, nil)
	require.NoError(t, s.dispatch(header{Request: ReqGetConfig, Flags: flagVersion, Size: uint32(len(body))}, body))
	reqs, ps := replies(t, c.out.Bytes())
	require.Equal(t, []Request{ReqGetConfig}, reqs)
	require.GreaterOrEqual(t, len(ps[0]), sizeConfigHdr)
	h := decodeConfigHdr(ps[0])
	require.Equal(t, int(h.Size), len(ps[0])-sizeConfigHdr, "reply size field matches its bytes")
	return h, ps[0][sizeConfigHdr:]
}

// setConfig sends SET_CONFIG with need_reply and returns the ack (-1:
// none).
func setConfig(t *testing.T, s *Session, c *fakeConn, off, flags uint32, data []byte) int64 {
	t.Helper()
	c.out.Reset()
	body := configPayload(off, uint32(len(data)), flags, data)
	require.NoError(t, s.dispatch(header{Request: ReqSetConfig, Flags: flagVersion | flagNeedReply, Size: uint32(len(body))}, body),
		"a refused SET_CONFIG keeps the session")
	if c.out.Len() == 0 {
		return -1
	}
	reqs, ps := replies(t, c.out.Bytes())
	require.Equal(t, []Request{ReqSetConfig}, reqs)
	return int64(ne.Uint64(ps[0]))
}

// TestNetConfigLayout: the 24 bytes of struct virtio_net_config at the
// offsets of virtio 1.2 §5.1.4, little-endian, read whole and field by
// field with the access widths a guest uses (Linux reads mac a byte at a
// time, status, max_virtqueue_pairs and mtu as le16, speed as le32).
func TestNetConfigLayout(t *testing.T) {
	s, _, c := configSession(t, Options{}, true)
	h, all := getConfig(t, s, c, 0, NetConfigSize, 0)
	require.Equal(t, configHdr{Offset: 0, Size: NetConfigSize, Flags: 0}, h)
	want := []byte{
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // mac
		0x01, 0x00, // status: VIRTIO_NET_S_LINK_UP, le16
		0x03, 0x00, // max_virtqueue_pairs: 3, le16
		0x28, 0x23, // mtu: 9000 = 0x2328, le16
		0x10, 0x27, 0x00, 0x00, // speed: 10000 = 0x2710, le32
		0x01,       // duplex: full
		0x00,       // rss_max_key_size (no RSS)
		0x00, 0x00, // rss_max_indirection_table_length
		0x00, 0x00, 0x00, 0x00, // supported_hash_types
	}
	require.Equal(t, want, all)

	for _, tc := range []struct {
		name      string
		off, size uint32
		want      uint64
	}{
		{"mac[0]", 0, 1, 0x02}, {"mac[3]", 3, 1, 0x10}, {"mac[5]", 5, 1, 0x01},
		{"status", 6, 2, uint64(NetStatusLinkUp)},
		{"max_virtqueue_pairs", 8, 2, 3},
		{"mtu", 10, 2, 9000},
		{"speed", 12, 4, 10000},
		{"duplex", 16, 1, uint64(DuplexFull)},
		{"rss_max_key_size", 17, 1, 0},
		{"rss_max_indirection_table_length", 18, 2, 0},
		{"supported_hash_types", 20, 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// rust-vmm frontends send flags 0x1 (their WRITABLE): echoed.
			h, b := getConfig(t, s, c, tc.off, tc.size, 1)
			require.Equal(t, configHdr{Offset: tc.off, Size: tc.size, Flags: 1}, h)
			var v uint64
			switch tc.size {
			case 1:
				v = uint64(b[0])
			case 2:
				v = uint64(binary.LittleEndian.Uint16(b))
			case 4:
				v = uint64(binary.LittleEndian.Uint32(b))
			}
			require.Equal(t, tc.want, v)
		})
	}
}

// TestNetConfigBounds: reads past the struct but inside the 256 bytes of a
// VhostUserConfig are zeros (tail padding, virtio 1.2 §2.5); an access
// past 256 bytes, of size 0 or with unknown flags gets the spec's error
// reply (size 0, no bytes) and the session goes on.
func TestNetConfigBounds(t *testing.T) {
	s, _, c := configSession(t, Options{}, true)
	h, b := getConfig(t, s, c, 20, 16, 0)
	require.Equal(t, uint32(16), h.Size)
	require.Equal(t, make([]byte, 16), b)
	h, b = getConfig(t, s, c, 250, 6, 0)
	require.Equal(t, configHdr{Offset: 250, Size: 6}, h)
	require.Equal(t, make([]byte, 6), b)
	h, b = getConfig(t, s, c, 200, 56, 0) // ends at 256 exactly
	require.Equal(t, uint32(56), h.Size)
	require.Len(t, b, 56)
	for _, tc := range []struct {
		name             string
		off, size, flags uint32
	}{
		{"past 256", 251, 6, 0},
		{"offset past 256", 300, 1, 0},
		{"offset overflow", 0xffffffff, 2, 0},
		{"size 0", 0, 0, 0},
		{"unknown flag", 0, 6, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, b := getConfig(t, s, c, tc.off, tc.size, tc.flags)
			require.Equal(t, configHdr{Offset: tc.off, Size: 0, Flags: tc.flags}, h)
			require.Empty(t, b)
		})
	}
	// Still a working session.
	_, b = getConfig(t, s, c, 8, 2, 0)
	require.Equal(t, []byte{3, 0}, b)
}

// TestNetConfigBeforeFeatures: before SET_FEATURES every field whose
// feature is offered reads (virtio 1.2 §2.5.2); fields of features not
// offered read as zero, and STATUS/MAC/SPEED_DUPLEX are not offered
// without the config space.
func TestNetConfigBeforeFeatures(t *testing.T) {
	s, _, c := configSession(t, Options{}, false)
	require.False(t, s.featuresAcked)
	_, b := getConfig(t, s, c, 0, NetConfigSize, 0)
	require.Equal(t, []byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}, b[netCfgMAC:netCfgMAC+6])
	require.Equal(t, NetStatusLinkUp, binary.LittleEndian.Uint16(b[netCfgStatus:]))
	require.Equal(t, uint16(3), binary.LittleEndian.Uint16(b[netCfgMaxVQPairs:]))
	require.Equal(t, uint16(9000), binary.LittleEndian.Uint16(b[netCfgMTU:]))

	// Only MAC offered of the conditional ones.
	s, _, c = configSession(t, Options{Features: virtio.FVersion1 | virtio.NetFMAC | FProtocolFeatures}, false)
	_, b = getConfig(t, s, c, 0, NetConfigSize, 0)
	require.Equal(t, append([]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}, make([]byte, 18)...), b)

	// Without CONFIG, MAC, STATUS and SPEED_DUPLEX are not offered.
	s, _ = testSession(t, Options{ProtocolFeatures: DefaultProtocolFeatures &^ ProtocolFConfig}, &fakeConn{})
	require.Zero(t, s.cfg.features&configFeatures)
	require.Equal(t, DefaultFeatures&^(configFeatures|virtio.NetFMQ), s.cfg.features)
	s, _ = testSession(t, Options{}, &fakeConn{})
	require.Equal(t, configFeatures, s.cfg.features&configFeatures)
}

// TestNetConfigMTUFromFrontend: after NET_SET_MTU the config space reports
// the frontend's MTU.
func TestNetConfigMTUFromFrontend(t *testing.T) {
	s, _, c := configSession(t, Options{}, false)
	s.proto |= ProtocolFMTU
	body := u64b(1500)
	require.NoError(t, s.dispatch(header{Request: ReqNetSetMTU, Flags: flagVersion, Size: 8}, body))
	_, b := getConfig(t, s, c, netCfgMTU, 2, 0)
	require.Equal(t, uint16(1500), binary.LittleEndian.Uint16(b))
}

// TestSetConfig: what a frontend may write (virtio 1.2 §5.1.4: fields are
// read-only for a driver; mac is driver-writable under the legacy
// interface, §5.1.4.3; vhost-user spec: no read-only field "unless the live
// migration bit is set").
func TestSetConfig(t *testing.T) {
	mac0 := [6]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	newMAC := [6]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	setFeatures := func(t *testing.T, s *Session, v uint64) {
		require.NoError(t, s.dispatch(header{Request: ReqSetFeatures, Flags: flagVersion, Size: 8}, u64b(v)))
	}
	modern := DefaultFeatures &^ FLogAll
	legacy := modern &^ virtio.FVersion1

	t.Run("modern driver: mac read-only", func(t *testing.T) {
		s, d, c := configSession(t, Options{}, true)
		setFeatures(t, s, modern)
		require.Equal(t, int64(1), setConfig(t, s, c, 0, 0, newMAC[:]))
		require.Equal(t, mac0, s.mac)
		require.Empty(t, d.macs)
	})
	t.Run("before SET_FEATURES: mac read-only", func(t *testing.T) {
		s, _, c := configSession(t, Options{}, true)
		require.Equal(t, int64(1), setConfig(t, s, c, 0, 0, newMAC[:]))
		require.Equal(t, mac0, s.mac)
	})
	t.Run("legacy driver: mac byte by byte", func(t *testing.T) {
		s, d, c := configSession(t, Options{}, true)
		setFeatures(t, s, legacy)
		for i := range newMAC {
			require.Equal(t, int64(0), setConfig(t, s, c, uint32(i), 0, newMAC[i:i+1]), "byte %d", i)
		}
		require.Equal(t, newMAC, s.mac)
		require.Len(t, d.macs, 5, "one SetMAC per byte that changed (the first did not)")
		require.Equal(t, newMAC, d.macs[4])
		_, b := getConfig(t, s, c, 0, 6, 0)
		require.Equal(t, newMAC[:], b)
	})
	t.Run("legacy driver with CTRL_MAC_ADDR acked: read-only", func(t *testing.T) {
		s, _, c := configSession(t, Options{Features: DefaultFeatures | virtio.NetFCtrlMACAddr}, true)
		setFeatures(t, s, legacy|virtio.NetFCtrlMACAddr)
		require.Equal(t, int64(1), setConfig(t, s, c, 0, 0, newMAC[:]))
	})
	t.Run("read-only fields", func(t *testing.T) {
		s, _, c := configSession(t, Options{}, true)
		setFeatures(t, s, legacy)
		require.Equal(t, int64(1), setConfig(t, s, c, netCfgMTU, 0, []byte{0xdc, 0x05}), "mtu")
		require.Equal(t, int64(1), setConfig(t, s, c, netCfgStatus, 0, []byte{0, 0}), "status")
		require.Equal(t, int64(1), setConfig(t, s, c, 4, 0, []byte{1, 2, 3}), "across mac and status")
		require.Equal(t, int64(1), setConfig(t, s, c, 30, 0, []byte{0}), "past the struct")
		require.Equal(t, int64(1), setConfig(t, s, c, 0, 4, newMAC[:]), "unknown flag")
		// Writing what is there already changes nothing and is fine.
		require.Equal(t, int64(0), setConfig(t, s, c, netCfgMTU, 0, []byte{0x28, 0x23}))
		_, b := getConfig(t, s, c, netCfgMTU, 2, 0)
		require.Equal(t, []byte{0x28, 0x23}, b)
	})
	t.Run("migration", func(t *testing.T) {
		for _, flag := range []uint32{configFlagMigration, configFlagRustVMMMigration} {
			s, d, c := configSession(t, Options{}, true)
			setFeatures(t, s, modern)
			var src [NetConfigSize]byte
			s.netConfig(&src)
			copy(src[:], newMAC[:])
			require.Equal(t, int64(0), setConfig(t, s, c, 0, flag, src[:]), "the source's config, with its mac")
			require.Equal(t, newMAC, s.mac)
			require.Equal(t, [][6]byte{newMAC}, d.macs)
			src[netCfgMaxVQPairs] = 8
			require.Equal(t, int64(1), setConfig(t, s, c, 0, flag, src[:]), "another number of queue pairs")
		}
	})
	t.Run("MAC not offered", func(t *testing.T) {
		s, _, c := configSession(t, Options{Features: DefaultFeatures &^ virtio.NetFMAC}, true)
		setFeatures(t, s, legacy&^virtio.NetFMAC)
		require.Equal(t, int64(1), setConfig(t, s, c, 0, configFlagMigration, newMAC[:]))
	})
	t.Run("no REPLY_ACK: no ack, session goes on", func(t *testing.T) {
		s, _, c := configSession(t, Options{}, false)
		setFeatures(t, s, modern)
		require.Equal(t, int64(-1), setConfig(t, s, c, netCfgMTU, 0, []byte{1, 1}))
		_, b := getConfig(t, s, c, netCfgMTU, 2, 0)
		require.Equal(t, []byte{0x28, 0x23}, b)
	})
}

func TestGenerateMAC(t *testing.T) {
	a := GenerateMAC("/run/arcnet/vm.sock", 0)
	require.Equal(t, a, GenerateMAC("/run/arcnet/vm.sock", 0), "stable")
	require.Equal(t, a, GenerateMAC("/run/arcnet/../arcnet/vm.sock", 0), "same socket, other spelling")
	require.Equal(t, byte(0x02), a[0], "locally administered, unicast")
	seen := map[[6]byte]bool{a: true}
	for _, m := range [][6]byte{
		GenerateMAC("/run/arcnet/vm.sock", 1), GenerateMAC("/run/arcnet/vm.sock", 2),
		GenerateMAC("/run/arcnet/vm2.sock", 0), GenerateMAC("", 0),
	} {
		require.Equal(t, byte(0x02), m[0])
		require.False(t, seen[m], "%s collides", macString(m))
		seen[m] = true
	}
	// A golden value: changing the derivation changes every guest's MAC.
	require.Equal(t, "02:92:6a:65:b3:39", macString(GenerateMAC("/run/arcnet/vm.sock", 0)))
}

func TestMACPlus(t *testing.T) {
	base := [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	require.Equal(t, base, macPlus(base, 0))
	require.Equal(t, [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x57}, macPlus(base, 1))
	require.Equal(t, [6]byte{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}, macPlus([6]byte{0x52, 0x54, 0x00, 0xff, 0xff, 0xff}, 2), "wraps in the NIC part")
}

// FuzzConfigSpace sends arbitrary GET_CONFIG and SET_CONFIG payloads to a
// session, with and without features acked: never a panic, a GET_CONFIG
// reply of exactly its size field (or 0), and no byte but mac ever
// changes.
func FuzzConfigSpace(f *testing.F) {
	f.Add(configPayload(0, 24, 0, nil), false, uint64(0))
	f.Add(configPayload(0, 6, 0, []byte{2, 1, 2, 3, 4, 5}), true, DefaultFeatures&^virtio.FVersion1)
	f.Add(configPayload(250, 6, 1, nil), false, uint64(0))
	f.Add(configPayload(0xfffffff0, 16, 2, nil), true, uint64(0))
	f.Add([]byte{0, 0, 0, 0, 4, 0, 0, 0}, true, uint64(0))
	f.Fuzz(func(t *testing.T, body []byte, set bool, features uint64) {
		c := &fakeConn{}
		s, _ := testSession(t, Options{}, c)
		s.proto = ProtocolFConfig | ProtocolFReplyAck
		s.mac = [6]byte{2, 0, 0, 0, 0, 1}
		if features != 0 {
			_ = s.dispatch(header{Request: ReqSetFeatures, Flags: flagVersion, Size: 8}, u64b(features&s.cfg.features))
		}
		var before [NetConfigSize]byte
		s.netConfig(&before)
		req := ReqGetConfig
		if set {
			req = ReqSetConfig
		}
		if len(body) > maxPayload {
			body = body[:maxPayload]
		}
		c.out.Reset()
		err := s.dispatch(header{Request: req, Flags: flagVersion | flagNeedReply, Size: uint32(len(body))}, body)
		if err != nil {
			if !errors.Is(err, ErrBadSize) {
				t.Fatalf("only a malformed message ends the session: %v", err)
			}
			return
		}
		out := c.out.Bytes()
		if len(out) < headerSize {
			t.Fatal("no reply")
		}
		n := int(ne.Uint32(out[8:]))
		if !set {
			h := decodeConfigHdr(out[headerSize:])
			if n != sizeConfigHdr+int(h.Size) || (h.Size != 0 && h.Size != ne.Uint32(body[4:])) {
				t.Fatalf("GET_CONFIG reply of %d bytes, size field %d", n, h.Size)
			}
		}
		var after [NetConfigSize]byte
		s.netConfig(&after)
		if !bytes.Equal(after[macLen:], before[macLen:]) {
			t.Fatal("a read-only field changed")
		}
	})
}
