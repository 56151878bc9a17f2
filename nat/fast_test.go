package nat

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tcpFlow is a test TCP flow: its packets from the guest and from the
// remote (to the external address), without flags.
type tcpFlow struct{ guest, remote pkt }

func newTCPFlow(guestPort, extPort uint16) tcpFlow {
	return tcpFlow{
		guest:  pkt{proto: TCP, src: ap(guestA, guestPort), dst: ap(remote, 443)},
		remote: pkt{proto: TCP, src: ap(remote, 443), dst: ap(extAddr, extPort)},
	}
}

// seg returns the flow's segment from side from with flags fl.
func (f tcpFlow) seg(from Side, fl uint8) pkt {
	p := f.guest
	if from == Uplink {
		p = f.remote
	}
	p.flags = fl
	return p
}

// establish opens f through a full handshake and one answer, so that its
// segments take the lock-free path (fast class fastTCP).
func (f tcpFlow) establish(t *testing.T, e *Engine) {
	t.Helper()
	for _, s := range []struct {
		from Side
		fl   uint8
	}{{Guest, tcpSYN}, {Uplink, tcpSYN | tcpACK}, {Guest, tcpACK}, {Uplink, tcpACK}} {
		p := one(e, s.from, f.seg(s.from, s.fl).build(), 0)
		require.NotEqual(t, Drop, p.Verdict, "handshake: %v", p.Reason)
	}
}

// fastCount is how many packets the lock-free path translated.
func fastCount(e *Engine) uint64 { return e.fastOut.Load() + e.fastIn.Load() }

// TestFastPathLeavesStateToTheLock: on an established TCP flow the
// lock-free path (fast.go) translates plain segments from either side, and
// every segment that may change the flow's state (SYN, FIN, RST) goes to
// the locked path, which changes it.
func TestFastPathLeavesStateToTheLock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		from  Side
		flags uint8
		fast  bool
		want  TCPState
	}{
		{"guest ACK", Guest, tcpACK, true, TCPEstablished},
		{"remote ACK", Uplink, tcpACK, true, TCPEstablished},
		{"guest RST", Guest, tcpRST, false, TCPClose},
		{"remote RST", Uplink, tcpRST | tcpACK, false, TCPClose},
		{"guest FIN", Guest, tcpFIN | tcpACK, false, TCPFinWait},
		{"remote FIN", Uplink, tcpFIN | tcpACK, false, TCPFinWait},
		{"guest SYN", Guest, tcpSYN, false, TCPEstablished},
		{"remote SYN+ACK", Uplink, tcpSYN | tcpACK, false, TCPEstablished},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			f := newTCPFlow(7000, 7000)
			f.establish(t, e)
			require.Equal(t, TCPEstablished, flowOf(t, e, 7000).State)
			n0 := fastCount(e)
			p := one(e, tc.from, f.seg(tc.from, tc.flags).build(), 0)
			require.NotEqual(t, Drop, p.Verdict, "reason %v", p.Reason)
			if tc.fast {
				require.Equal(t, n0+1, fastCount(e), "translated without the lock")
			} else {
				require.Equal(t, n0, fastCount(e), "must take the lock")
			}
			require.Equal(t, tc.want, flowOf(t, e, 7000).State)
		})
	}
}

// TestFastPathTagCollision: an index slot whose tag (the hash's low 32
// bits) matches a packet's but names another flow, one with the same
// addresses and other ports, is passed over: the packet does not get that
// flow's translation. The collision is planted: a slot with the packet's
// tag, ahead of any empty slot of its probe, naming the established flow's
// record.
func TestFastPathTagCollision(t *testing.T) {
	for _, from := range []Side{Guest, Uplink} {
		t.Run(map[Side]string{Guest: "outbound", Uplink: "inbound"}[from], func(t *testing.T) {
			e, _ := newEngine(t, nil)
			a := newTCPFlow(7000, 7000)
			a.establish(t, e)
			// b: a's addresses, other ports; a plain ACK, which the
			// lock-free path would translate if it took a's record.
			b := newTCPFlow(7001, 7002).seg(from, tcpACK)
			var mb, ma meta
			buf := b.build()
			require.Equal(t, uint8(kindFlow), e.parse(from, &Packet{Buf: buf}, &mb))
			require.Equal(t, uint8(kindFlow), e.parse(from, &Packet{Buf: a.seg(from, tcpACK).build()}, &ma))
			require.Equal(t, ma.w0, mb.w0, "same addresses")
			hb := hashWords(mb.w0, mb.w1, &e.tab.seed)
			e.mu.Lock()
			ka := keyOf(ma.w0, ma.w1)
			ra := e.tab.lookup(&ka, hashWords(ma.w0, ma.w1, &e.tab.seed))
			require.NotZero(t, ra)
			tb := &e.tab
			j := hb & tb.mask
			for tb.slots[j] != 0 {
				j = (j + 1) & tb.mask
			}
			atomic.StoreUint64(&tb.slots[j], hb&0xffffffff<<32|uint64(ra))
			e.mu.Unlock()

			n0 := fastCount(e)
			p := one(e, from, buf, 0)
			require.Equal(t, n0, fastCount(e), "not translated as a")
			if from == Guest {
				// A mid-stream pickup: its own flow, its own port (a's
				// translation would have given it 7000).
				require.Equal(t, ToUplink, p.Verdict, "reason %v", p.Reason)
				require.Equal(t, uint16(7001), binary.BigEndian.Uint16(p.Buf[20:]))
				require.Equal(t, uint64(2), e.Stats().FlowsTCP)
			} else {
				// Nothing is open to port 7002 (a's translation would
				// have sent it to the guest's 7000).
				require.Equal(t, Drop, p.Verdict)
				require.Equal(t, ReasonNoFlow, p.Reason)
			}
		})
	}
}

// TestFastPathUDPFirstReply: a UDP flow that has seen no reply lets the
// lock-free path translate the guest's datagrams only; the first reply
// takes the lock (it makes the flow a stream, with another timeout), and
// the replies after it go without.
func TestFastPathUDPFirstReply(t *testing.T) {
	e, clk := newEngine(t, nil)
	out := pkt{proto: UDP, src: ap(guestA, 5353), dst: ap(remote, 53)}
	in := pkt{proto: UDP, src: ap(remote, 53), dst: ap(extAddr, 5353)}
	require.Equal(t, ToUplink, one(e, Guest, out.build(), 0).Verdict) // opens it, locked
	n0 := fastCount(e)
	require.Equal(t, ToUplink, one(e, Guest, out.build(), 0).Verdict)
	require.Equal(t, n0+1, fastCount(e), "the guest's second datagram: lock-free")
	require.Equal(t, ToGuest, one(e, Uplink, in.build(), 0).Verdict)
	require.Equal(t, n0+1, fastCount(e), "the first reply: locked")
	require.Equal(t, clk.Now().Add(DefaultTimeouts().UDPStream), flowOf(t, e, 5353).Expires)
	require.Equal(t, ToGuest, one(e, Uplink, in.build(), 0).Verdict)
	require.Equal(t, n0+2, fastCount(e), "the second reply: lock-free")
}

// TestFastPathExpiredFlow: a flow past its deadline that the timing wheel
// has not reclaimed yet (held back here) is not translated by the
// lock-free path: the locked path reclaims it, and a packet from the
// remote then finds nothing open.
func TestFastPathExpiredFlow(t *testing.T) {
	for _, from := range []Side{Guest, Uplink} {
		t.Run(map[Side]string{Guest: "outbound", Uplink: "inbound"}[from], func(t *testing.T) {
			e, clk := newEngine(t, func(c *Config) { c.Timeouts.TCPEstablished = time.Minute })
			f := newTCPFlow(7000, 7000)
			f.establish(t, e)
			clk.Advance(time.Minute + time.Second)
			e.wheelAt.Store(math.MaxInt64) // Translate leaves expiry to the packets
			n0, x0 := fastCount(e), e.Stats().Expired
			p := one(e, from, f.seg(from, tcpACK).build(), 0)
			require.Equal(t, n0, fastCount(e), "not lock-free")
			require.Equal(t, x0+1, e.Stats().Expired)
			if from == Guest {
				require.Equal(t, ToUplink, p.Verdict, "a new flow (mid-stream pickup)")
				require.Equal(t, TCPSynSent, flowOf(t, e, 7000).State)
			} else {
				require.Equal(t, Drop, p.Verdict)
				require.Equal(t, ReasonNoFlow, p.Reason)
			}
		})
	}
}
