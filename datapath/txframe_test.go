package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestTxFrameOneBuffer: txFrame's path for a chain of one buffer (the
// header decoded straight from it) gives the frame, header and verdict of
// the general path (the same bytes split after the first byte), for valid
// and invalid headers.
func TestTxFrameOneBuffer(t *testing.T) {
	hdr := func(flags, gso uint8, gsoSize, csumStart, csumOff, numBuf uint16) []byte {
		b := make([]byte, virtio.NetHdrSize)
		b[0], b[1] = flags, gso
		binary.LittleEndian.PutUint16(b[2:], 54)
		binary.LittleEndian.PutUint16(b[4:], gsoSize)
		binary.LittleEndian.PutUint16(b[6:], csumStart)
		binary.LittleEndian.PutUint16(b[8:], csumOff)
		binary.LittleEndian.PutUint16(b[10:], numBuf)
		return b
	}
	all := offloadsOf(virtio.NetFCsum | virtio.NetFHostTSO4 | virtio.NetFHostTSO6 | virtio.NetFHostUFO | virtio.NetFHostECN)
	for _, tc := range []struct {
		name  string
		off   offloads
		hdr   []byte
		frame int
		valid bool
	}{
		{"zeros", offloads{}, hdr(0, 0, 0, 0, 0, 0), 64, true},
		{"num_buffers ignored", offloads{}, hdr(0, 0, 0, 0, 0, 7), 64, true},
		{"data valid", offloads{}, hdr(virtio.NetHdrFDataValid, 0, 0, 0, 0, 0), 64, true},
		{"no offload, other fields set", offloads{}, hdr(0, 0, 1448, 60, 16, 0), 64, true},
		{"ecn alone, not negotiated", offloads{}, hdr(0, virtio.NetHdrGSOECN, 0, 0, 0, 0), 64, false},
		{"unknown gso type", all, hdr(virtio.NetHdrFNeedsCsum, 7, 1448, 34, 16, 0), 64, false},
		{"csum", all, hdr(virtio.NetHdrFNeedsCsum, 0, 0, 34, 16, 0), 64, true},
		{"csum not negotiated", offloads{}, hdr(virtio.NetHdrFNeedsCsum, 0, 0, 34, 16, 0), 64, false},
		{"csum past the frame", all, hdr(virtio.NetHdrFNeedsCsum, 0, 0, 60, 16, 0), 64, false},
		{"tso4", all, hdr(virtio.NetHdrFNeedsCsum, virtio.NetHdrGSOTCPv4, 1448, 34, 16, 0), 9000, true},
		{"tso4 not negotiated", offloads{csum: true}, hdr(virtio.NetHdrFNeedsCsum, virtio.NetHdrGSOTCPv4, 1448, 34, 16, 0), 9000, false},
		{"too short", offloads{}, hdr(0, 0, 0, 0, 0, 0), minFrameLen - 1, false},
		{"shortest", offloads{}, hdr(0, 0, 0, 0, 0, 0), minFrameLen, true},
		{"too long", all, hdr(0, 0, 0, 0, 0, 0), maxFrameLen + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := append(append([]byte{}, tc.hdr...), make([]byte, tc.frame)...)
			for i := range tc.frame {
				buf[virtio.NetHdrSize+i] = byte(i)
			}
			one := virtio.Chain{Out: []virtio.Segment{{Buf: buf}}, OutLen: uint32(len(buf))}
			split := virtio.Chain{Out: []virtio.Segment{{Buf: buf[:1]}, {Buf: buf[1:]}}, OutLen: uint32(len(buf))}
			var f1, f2 Frame
			s1, s2 := make([][]byte, 0, 4), make([][]byte, 0, 4)
			ok1 := txFrame(&one, virtio.NetHdrSize, tc.off, &f1, &s1)
			ok2 := txFrame(&split, virtio.NetHdrSize, tc.off, &f2, &s2)
			require.Equal(t, tc.valid, ok1)
			require.Equal(t, ok2, ok1)
			if tc.frame >= minFrameLen && tc.frame <= maxFrameLen {
				require.Equal(t, tc.off.validTX(&f1.Hdr, f1.Len), ok1, "txFrame's verdict is validTX's")
			}
			if !ok1 {
				return
			}
			require.Equal(t, f2.Hdr, f1.Hdr)
			require.Zero(t, f1.Hdr.NumBuffers)
			require.Equal(t, tc.frame, f1.Len)
			require.Equal(t, f2.Len, f1.Len)
			require.Equal(t, buf[virtio.NetHdrSize:], gatherSegs(f1.Segs))
			require.Equal(t, gatherSegs(f2.Segs), gatherSegs(f1.Segs))
			require.Len(t, f1.Segs, 1)
			require.Zero(t, testing.AllocsPerRun(50, func() { txFrame(&one, virtio.NetHdrSize, tc.off, &f1, &s1) }))
		})
	}
}

// gatherSegs concatenates segs.
func gatherSegs(segs [][]byte) []byte {
	var b []byte
	for _, s := range segs {
		b = append(b, s...)
	}
	return b
}
