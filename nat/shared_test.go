package nat

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSharedAddress: with an external address shared with the host, every
// external port and echo identifier lies in the range, the guest's own one
// only when it does; replies to them come back.
func TestSharedAddress(t *testing.T) {
	const lo, hi = 61000, 61009
	e, _ := newEngine(t, func(c *Config) { c.PortMin, c.PortMax, c.SharedAddress = lo, hi, true })
	r := ap(remote, 443)
	for _, tc := range []struct {
		name     string
		p        pkt
		port     func(b []byte) uint16 // the external port of the translated packet
		keepOwn  bool
		ownValue uint16
	}{
		// A guest's own port inside the range first: a flow outside it
		// opened before could have been given that very port toward the
		// same destination (1 in 10), and then the guest's could not be kept.
		{"tcp inside the range", pkt{proto: TCP, src: ap(guestA, 61005), dst: r, flags: tcpSYN}, srcPort, true, 61005},
		{"tcp outside the range", pkt{proto: TCP, src: ap(guestA, 40000), dst: r, flags: tcpSYN}, srcPort, false, 40000},
		{"udp inside the range", pkt{proto: UDP, src: ap(guestB, 61001), dst: r}, srcPort, true, 61001},
		{"udp outside the range", pkt{proto: UDP, src: ap(guestA, 5353), dst: r}, srcPort, false, 5353},
		{"icmp echo id outside the range", pkt{proto: ICMP, src: ap(guestA, 7), dst: ap(remote, 0)}, echoID, false, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := one(e, Guest, tc.p.build(), 0)
			require.Equal(t, ToUplink, p.Verdict, "reason %v", p.Reason)
			x := tc.port(p.Buf)
			require.GreaterOrEqual(t, x, uint16(lo))
			require.LessOrEqual(t, x, uint16(hi))
			if tc.keepOwn {
				require.Equal(t, tc.ownValue, x)
			}
			checkSums(t, p.Buf)
		})
	}
	// Exhaustion: the range has 10 ports; TCP flows to one destination
	// from 10 more guest ports get the rest, then are refused.
	n := 0
	for port := uint16(30000); port < 30020; port++ {
		p := one(e, Guest, pkt{proto: TCP, src: ap(guestB, port), dst: r, flags: tcpSYN}.build(), 0)
		if p.Verdict == ToUplink {
			n++
			x := srcPort(p.Buf)
			require.True(t, x >= lo && x <= hi, "port %d", x)
		}
	}
	require.Equal(t, 8, n, "10 ports, 2 taken toward this destination by the cases above")
}

func srcPort(b []byte) uint16 { return binary.BigEndian.Uint16(b[20:]) }
func echoID(b []byte) uint16  { return binary.BigEndian.Uint16(b[24:]) }
