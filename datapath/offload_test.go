package datapath

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

// split cuts b into pieces at random points.
func split(r *rand.Rand, b []byte) [][]byte {
	var segs [][]byte
	for len(b) > 0 {
		n := 1 + r.IntN(len(b))
		segs = append(segs, b[:n])
		b = b[n:]
	}
	return segs
}

func TestPartialSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.IntN(300))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		start := 0
		if len(b) > 0 {
			start = r.IntN(len(b) + 1)
		}
		require.Equal(t, headertest.RefChecksum(b[start:], 0), partialSum(split(r, b), start), "len %d start %d", len(b), start)
	}
}

func FuzzPartialSum(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint8(1), uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8, start uint16) {
		s := int(start) % (len(b) + 1)
		c := int(cut) % (len(b) + 1)
		if got, want := partialSum([][]byte{b[:c], b[c:]}, s), headertest.RefChecksum(b[s:], 0); got != want {
			t.Fatalf("partialSum = %#x, want %#x", got, want)
		}
	})
}

// TestPrepareCompletesChecksum builds a UDP/IPv4 frame with a partial
// checksum (the pseudo-header sum in the field, as a guest with
// VIRTIO_NET_F_CSUM sends it) and checks that a receiver without
// GUEST_CSUM gets the full, correct checksum and the source stays as it was.
func TestPrepareCompletesChecksum(t *testing.T) {
	frame := make([]byte, 14+20+8+37)
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[9] = 17
	copy(ip[12:], []byte{192, 168, 127, 2, 192, 168, 127, 1})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 5353)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	for i := 8; i < len(udp); i++ {
		udp[i] = byte(i * 7)
	}
	// pseudo-header: src, dst, proto, udp length
	pseudo := append(append([]byte{}, ip[12:20]...), 0, 17, 0, 0)
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], headertest.RefChecksum(pseudo, 0))
	orig := append([]byte{}, frame...)

	r := &rxQueue{offload: offloads{}}
	f := frameOf(frame[:20], frame[20:50], frame[50:])
	f.Hdr.Flags = 1 // NEEDS_CSUM
	f.Hdr.CsumStart = 34
	f.Hdr.CsumOffset = 6
	h, segs, ok := r.prepare(&f)
	require.True(t, ok)
	require.Zero(t, h.Flags)
	out := make([]byte, len(frame))
	require.Equal(t, len(frame), copyFrame(out, segs))
	require.Equal(t, orig, frame, "the source frame was written")
	// A correct UDP checksum sums (with the pseudo-header) to 0xffff.
	check := append(append([]byte{}, pseudo...), out[34:]...)
	require.Equal(t, uint16(0xffff), headertest.RefChecksum(check, 0))

	// A receiver with GUEST_CSUM gets the frame as it is.
	r.offload.guestCsum = true
	h, segs, ok = r.prepare(&f)
	require.True(t, ok)
	require.Equal(t, uint8(1), h.Flags)
	require.Len(t, segs, 3)
}

func TestPrepareRefusesGSOTheGuestLacks(t *testing.T) {
	r := &rxQueue{offload: offloads{guestCsum: true, guestTSO4: true}}
	f := frameOf(make([]byte, 100))
	f.Hdr.Flags = 1
	f.Hdr.GSOType = 4 // TCPv6
	_, _, ok := r.prepare(&f)
	require.False(t, ok)
	f.Hdr.GSOType = 1 // TCPv4
	_, _, ok = r.prepare(&f)
	require.True(t, ok)
}
