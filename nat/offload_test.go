package nat

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

// partialize replaces the transport checksum of a complete packet with its
// pseudo-header sum, as a virtio driver does with NEEDS_CSUM, and returns
// the checksum offset.
func partialize(b []byte, l4len uint16) int {
	ip := header.IPv4(b)
	off := ip.HeaderLen() + header.TCPChecksumOffset
	if ip.Protocol() == 17 {
		off = ip.HeaderLen() + header.UDPChecksumOffset
	}
	put16(b[off:], ip.PseudoHeaderChecksum(ip.Protocol(), l4len))
	return off
}

// complete does what the device does for NEEDS_CSUM: checksum from
// csum_start to the end, field included, stored complemented.
func complete(b []byte, off int) {
	start := header.IPv4(b).HeaderLen()
	put16(b[off:], ^header.Checksum(b[start:], 0))
}

func TestPartialChecksum(t *testing.T) {
	for _, proto := range []Proto{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			e, _ := newEngine(t, nil)
			g, r := ap(guestA, 1234), ap(remote, 80)
			b := pkt{proto: proto, src: g, dst: r, flags: tcpSYN, payload: []byte("partial payload")}.build()
			l4len := uint16(len(b) - 20)
			off := partialize(b, l4len)
			p := one(e, Guest, b, CsumPartial)
			require.Equal(t, ToUplink, p.Verdict)
			// The field now holds the pseudo-header sum of the new addresses.
			require.Equal(t, header.IPv4(p.Buf).PseudoHeaderChecksum(uint8(proto), l4len), be16(p.Buf[off:]))
			require.True(t, header.IPv4(p.Buf).IsChecksumValid())
			complete(p.Buf, off)
			want := pkt{proto: proto, src: ap(extAddr, 1234), dst: r, flags: tcpSYN, payload: []byte("partial payload")}.build()
			require.Equal(t, want, p.Buf)

			// And back.
			b = pkt{proto: proto, src: r, dst: ap(extAddr, 1234), flags: tcpACK, payload: []byte("x")}.build()
			off = partialize(b, uint16(len(b)-20))
			p = one(e, Uplink, b, CsumPartial)
			require.Equal(t, ToGuest, p.Verdict)
			complete(p.Buf, off)
			require.Equal(t, pkt{proto: proto, src: r, dst: g, flags: tcpACK, payload: []byte("x")}.build(), p.Buf)
		})
	}
}

// TestGSOHeaderOnly translates the 40 header bytes of a 64 KB TCP
// super-frame: total length beyond the buffer, checksum partial.
func TestGSOHeaderOnly(t *testing.T) {
	e, _ := newEngine(t, nil)
	g, r := ap(guestA, 50000), ap(remote, 5201)
	const l4len = 20 + 65000
	b := pkt{proto: TCP, src: g, dst: r, flags: tcpACK}.build()
	header.IPv4(b).SetTotalLength(20 + l4len)
	header.IPv4(b).UpdateChecksum()
	off := partialize(b, l4len)
	p := one(e, Guest, b, GSO)
	require.Equal(t, ToUplink, p.Verdict, "reason %v", p.Reason)
	ip := header.IPv4(p.Buf)
	require.True(t, ip.IsChecksumValid())
	require.Equal(t, extAddr, ip.Src())
	require.Equal(t, uint16(50000), header.TCP(ip.Payload()).SrcPort())
	require.Equal(t, ip.PseudoHeaderChecksum(6, l4len), be16(p.Buf[off:]))

	// GSO without a consistent total length is accepted (the device owns it).
	b = pkt{proto: TCP, src: g, dst: r, flags: tcpACK}.build()
	header.IPv4(b).SetTotalLength(0)
	require.Equal(t, ToUplink, one(e, Guest, b, GSO).Verdict)
	b[2], b[3] = 0, 0
	require.Equal(t, ReasonMalformed, one(e, Guest, b, 0).Reason)
}

// TestHeaderCopyFullChecksum translates only the first bytes of a packet
// with a complete checksum; with the untouched payload appended, every
// checksum is right.
func TestHeaderCopyFullChecksum(t *testing.T) {
	e, _ := newEngine(t, nil)
	payload := make([]byte, 1400)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for _, proto := range []Proto{TCP, UDP} {
		full := pkt{proto: proto, src: ap(guestA, 999), dst: ap(remote, 443), flags: tcpACK, payload: payload}.build()
		hdr := clone(full[:20+20])
		p := one(e, Guest, hdr, 0)
		require.Equal(t, ToUplink, p.Verdict)
		out := append(append([]byte(nil), p.Buf...), full[40:]...)
		checkSums(t, out)
		require.Equal(t, pkt{proto: proto, src: ap(extAddr, 999), dst: ap(remote, 443), flags: tcpACK, payload: payload}.build(), out)
	}
}
