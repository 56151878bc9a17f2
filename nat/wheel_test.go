package nat

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// checkWheel verifies the wheel's lists against the flows: every live flow
// is in exactly one slot's list, the slot it records, with links both ways
// that agree, and only live flows are.
func (e *Engine) checkWheel() error {
	w := &e.wheel
	seen := map[uint32]bool{}
	for s := range w.heads {
		prev := uint32(0)
		for i := w.heads[s]; i != 0; i = e.tab.flow(i).next {
			f := e.tab.flow(i)
			if seen[i] {
				return fmt.Errorf("flow %d twice in the wheel", i)
			}
			seen[i] = true
			if f.word.Load() == 0 {
				return fmt.Errorf("dead flow %d in slot %d", i, s)
			}
			if int(f.slot) != s || f.prev != prev {
				return fmt.Errorf("flow %d in slot %d after %d records slot %d after %d", i, s, prev, f.slot, f.prev)
			}
			prev = i
		}
	}
	if len(seen) != e.tab.n {
		return fmt.Errorf("%d flows in the wheel, %d live", len(seen), e.tab.n)
	}
	return nil
}

// TestWheelRandom opens, closes (FIN and RST: deadlines that move earlier)
// and lets expire TCP and UDP flows at random, with the clock moving in
// steps of up to a few ticks, and checks after every step that the wheel
// holds exactly the live flows where they say they are (checkWheel), and
// that no flow outlives its deadline after Expire.
func TestWheelRandom(t *testing.T) {
	e, clk := newEngine(t, func(c *Config) {
		c.MaxFlows, c.MaxFlowsPerGuest = 4096, 4096
		c.Timeouts.UDP = 2 * time.Second
		c.Timeouts.TCPSynSent = 5 * time.Second
		c.Timeouts.TCPEstablished = 40 * time.Second
		c.Timeouts.TCPClose = 500 * time.Millisecond
		c.Timeouts.TCPFinWait = 3 * time.Second
	})
	rng := rand.New(rand.NewPCG(5, 9))
	port := func() uint16 { return uint16(20000 + rng.IntN(3000)) }
	for step := range 3000 {
		switch r := rng.IntN(10); {
		case r < 4: // a UDP or TCP flow opens (or is refreshed)
			g := ap(guestA, port())
			if rng.IntN(2) == 0 {
				one(e, Guest, pkt{proto: UDP, src: g, dst: ap(remote, 53)}.build(), 0)
			} else {
				one(e, Guest, pkt{proto: TCP, src: g, dst: ap(remote, 80), flags: tcpSYN}.build(), 0)
				x := netip.AddrPortFrom(extAddr, g.Port())
				one(e, Uplink, pkt{proto: TCP, src: ap(remote, 80), dst: x, flags: tcpSYN | tcpACK}.build(), 0)
				one(e, Guest, pkt{proto: TCP, src: g, dst: ap(remote, 80), flags: tcpACK}.build(), 0)
			}
		case r < 6: // a TCP flow ends: FIN or RST (earlier deadline)
			fl := uint8(tcpFIN | tcpACK)
			if rng.IntN(2) == 0 {
				fl = tcpRST
			}
			one(e, Guest, pkt{proto: TCP, src: ap(guestA, port()), dst: ap(remote, 80), flags: fl}.build(), 0)
		case r < 8:
			clk.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
			one(e, Guest, []byte{0}, 0) // Translate's own bounded expiry
		default:
			clk.Advance(time.Duration(rng.IntN(500)) * time.Millisecond)
			e.Expire()
			now := clk.Now()
			e.Flows(func(f FlowInfo) bool {
				require.True(t, f.Expires.After(now), "step %d: a flow past its deadline after Expire", step)
				return true
			})
		}
		e.mu.Lock()
		err := e.checkWheel()
		e.mu.Unlock()
		require.NoError(t, err, "step %d", step)
	}
	require.Positive(t, e.Stats().Expired)
}
