package nat

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTranslateAllocs(t *testing.T) {
	e, _ := newEngine(t, nil)
	const n = 64
	outs := make([][]byte, n)
	ins := make([][]byte, n)
	for i := range n {
		proto := []Proto{TCP, UDP, ICMP}[i%3]
		g := ap(guestA, uint16(20000+i))
		outs[i] = pkt{proto: proto, src: g, dst: ap(remote, 443), flags: tcpACK}.build()
		p := one(e, Guest, clone(outs[i]), 0)
		require.Equal(t, ToUplink, p.Verdict)
		x := ap(extAddr, uint16(20000+i))
		ins[i] = pkt{proto: proto, src: ap(remote, 443), dst: x, flags: tcpACK, reply: true}.build()
		if proto == ICMP {
			ins[i] = pkt{proto: proto, src: ap(remote, 0), dst: x, reply: true}.build()
		}
	}
	// Errors and fragments too.
	errPkt := icmpError(remote, extAddr, 3, 3, 0, one(e, Guest, clone(outs[1]), 0).Buf)
	batch := make([]Packet, n)
	refill := func(src [][]byte) {
		for i := range batch {
			batch[i] = Packet{Buf: append(batch[i].Buf[:0], src[i]...)}
		}
	}
	for i := range batch {
		batch[i].Buf = make([]byte, 0, 256)
	}
	ebuf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		refill(outs)
		e.Translate(Guest, batch)
		refill(ins)
		e.Translate(Uplink, batch)
		ep := []Packet{{Buf: append(ebuf[:0], errPkt...)}}
		e.Translate(Uplink, ep)
	})
	require.Zero(t, allocs)
	for i := range batch {
		require.Equal(t, ToGuest, batch[i].Verdict, "packet %d: %v", i, batch[i].Reason)
	}
}
