package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

func TestNetHdrGolden(t *testing.T) {
	h := virtio.NetHdr{
		Flags:      virtio.NetHdrFNeedsCsum,
		GSOType:    virtio.NetHdrGSOTCPv6 | virtio.NetHdrGSOECN,
		HdrLen:     0x0102,
		GSOSize:    0x0304,
		CsumStart:  0x0506,
		CsumOffset: 0x0708,
		NumBuffers: 0x090a,
	}
	var b [virtio.NetHdrSize]byte
	h.Encode(b[:])
	require.Equal(t, []byte{1, 0x84, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9}, b[:])
	var g virtio.NetHdr
	g.Decode(b[:])
	require.Equal(t, h, g)
	require.Equal(t, 12, virtio.NetHdrLen(virtio.FVersion1))
	require.Equal(t, 12, virtio.NetHdrLen(virtio.NetFMrgRxbuf))
	require.Equal(t, 10, virtio.NetHdrLen(0))
}

func FuzzNetHdr(f *testing.F) {
	f.Add([]byte{1, 0x84, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < virtio.NetHdrSize {
			return
		}
		var h virtio.NetHdr
		h.Decode(b)
		var out [virtio.NetHdrSize]byte
		h.Encode(out[:])
		// Not require.Equal: it made this target 35 times slower
		// (about 460 inputs/s against 16,000/s, go test -fuzz, 15 s each).
		if string(b[:virtio.NetHdrSize]) != string(out[:]) {
			t.Fatalf("decode+encode of %x gave %x", b[:virtio.NetHdrSize], out)
		}
	})
}
