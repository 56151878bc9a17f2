package nat

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func flowOf(t *testing.T, e *Engine, g uint16) FlowInfo {
	t.Helper()
	var out FlowInfo
	found := false
	e.Flows(func(f FlowInfo) bool {
		if f.Orig.Src.Port() == g {
			out, found = f, true
			return false
		}
		return true
	})
	require.True(t, found, "flow from port %d", g)
	return out
}

func TestUDPTimeouts(t *testing.T) {
	e, clk := newEngine(t, nil)
	g, r, x := ap(guestA, 4000), ap(remote, 53), ap(extAddr, 4000)
	out := pkt{proto: UDP, src: g, dst: r}
	in := pkt{proto: UDP, src: r, dst: x}
	require.Equal(t, ToUplink, one(e, Guest, out.build(), 0).Verdict)
	clk.Advance(119 * time.Second)
	require.Equal(t, ToGuest, one(e, Uplink, in.build(), 0).Verdict) // now a stream: 300 s
	require.Equal(t, clk.Now().Add(300*time.Second), flowOf(t, e, 4000).Expires)
	clk.Advance(299 * time.Second)
	require.Equal(t, ToGuest, one(e, Uplink, in.build(), 0).Verdict)
	clk.Advance(300 * time.Second)
	// Expired: the reply finds nothing, the lookup reclaims the flow, and
	// the endpoint-independent mapping goes with it.
	p := one(e, Uplink, in.build(), 0)
	require.Equal(t, ReasonNoFlow, p.Reason)
	require.Equal(t, 0, e.Len())
	s := e.Stats()
	require.Equal(t, uint64(0), s.UDPMappings)
	require.Equal(t, uint64(1), s.Expired)
	require.Equal(t, uint64(0), s.FlowsUDP)
}

func TestWheelExpiry(t *testing.T) {
	e, clk := newEngine(t, func(c *Config) { c.Timeouts.UDP = 10 * time.Second })
	for i := range 300 {
		one(e, Guest, pkt{proto: UDP, src: ap(guestA, uint16(10000+i)), dst: ap(remote, 53)}.build(), 0)
		if i%100 == 99 {
			clk.Advance(5 * time.Second)
		}
	}
	require.Equal(t, 300, e.Len())
	// At t0+15: the first 100 (deadline t0+10) are dead, the second 100
	// (deadline t0+15) too, the last 100 (t0+20) are not.
	require.Equal(t, 200, e.Expire())
	require.Equal(t, 100, e.Len())
	// Translate reclaims a bounded amount per call, and over calls catches up.
	clk.Advance(time.Hour)
	for e.Len() > 0 {
		one(e, Guest, []byte{0}, 0)
	}
	require.Equal(t, uint64(300), e.Stats().Expired)
	// Flows still alive are moved, not dropped, when the wheel passes them.
	one(e, Guest, pkt{proto: UDP, src: ap(guestA, 1), dst: ap(remote, 53)}.build(), 0)
	for range 30 {
		clk.Advance(3 * time.Second)
		one(e, Guest, pkt{proto: UDP, src: ap(guestA, 1), dst: ap(remote, 53)}.build(), 0)
		require.Equal(t, 0, e.Expire())
	}
	require.Equal(t, 1, e.Len())
	// A clock jump of days is handled in bounded steps.
	clk.Advance(48 * time.Hour)
	require.Equal(t, 1, e.Expire())
}

// TestWheelGroups: expiry looks at a slot's flows in groups (advance); a
// slot of 100 flows of which every third was refreshed loses exactly the
// others, whether Translate reclaims them a few per call or Expire at once,
// and the refreshed flows keep their translation.
func TestWheelGroups(t *testing.T) {
	for _, byTranslate := range []bool{true, false} {
		e, clk := newEngine(t, func(c *Config) { c.Timeouts.UDP = 10 * time.Second })
		flow := func(i int) []byte {
			return pkt{proto: UDP, src: ap(guestA, uint16(10000+i)), dst: ap(remote, 53)}.build()
		}
		for i := range 100 {
			require.NotEqual(t, Drop, one(e, Guest, flow(i), 0).Verdict)
		}
		clk.Advance(5 * time.Second)
		for i := 0; i < 100; i += 3 {
			require.NotEqual(t, Drop, one(e, Guest, flow(i), 0).Verdict)
		}
		clk.Advance(6 * time.Second)
		if byTranslate {
			for range 50 {
				one(e, Guest, []byte{0}, 0) // dropped; each call reclaims a few
			}
		} else {
			require.Equal(t, 66, e.Expire())
		}
		require.Equal(t, 34, e.Len())
		require.Equal(t, uint64(66), e.Stats().Expired)
		for i := 0; i < 100; i += 3 {
			p := one(e, Guest, flow(i), 0)
			require.Equal(t, ToUplink, p.Verdict)
			require.Equal(t, uint16(10000+i), be16(p.Buf[20:]), "flow %d kept its port", i)
		}
		require.Equal(t, uint64(100), e.Stats().Created)
	}
}

func TestTCPStates(t *testing.T) {
	e, clk := newEngine(t, func(c *Config) { c.Timeouts.TCPEstablished = time.Hour })
	g, r, x := ap(guestA, 7000), ap(remote, 22), ap(extAddr, 7000)
	to := DefaultTimeouts()
	step := func(from Side, fl uint8, want TCPState, timeout time.Duration) {
		t.Helper()
		b := pkt{proto: TCP, src: g, dst: r, flags: fl}
		if from == Uplink {
			b = pkt{proto: TCP, src: r, dst: x, flags: fl}
		}
		p := one(e, from, b.build(), 0)
		require.NotEqual(t, Drop, p.Verdict, "reason %v", p.Reason)
		f := flowOf(t, e, 7000)
		require.Equal(t, want, f.State)
		if from == Uplink && fl == tcpACK && want == TCPEstablished {
			// The lock-free path: the deadline moves only by more than
			// fastSlack (1.07 s for 1 h), and it moved by 1 s.
			slack := time.Duration(fastSlack(int64(time.Hour)))
			require.WithinRange(t, f.Expires, clk.Now().Add(timeout-slack), clk.Now().Add(timeout))
		} else {
			require.Equal(t, clk.Now().Add(timeout), f.Expires)
		}
		require.Equal(t, uint64(1), e.Stats().TCPStates[want])
		clk.Advance(time.Second)
	}
	step(Guest, tcpSYN, TCPSynSent, to.TCPSynSent)
	step(Uplink, tcpSYN|tcpACK, TCPSynRecv, to.TCPSynRecv)
	step(Guest, tcpACK, TCPEstablished, time.Hour)
	step(Uplink, tcpACK, TCPEstablished, time.Hour)
	step(Guest, tcpFIN|tcpACK, TCPFinWait, to.TCPFinWait)
	step(Uplink, tcpACK, TCPCloseWait, to.TCPCloseWait)
	step(Uplink, tcpACK, TCPCloseWait, to.TCPCloseWait) // half-closed data keeps it
	step(Uplink, tcpFIN|tcpACK, TCPLastAck, to.TCPLastAck)
	step(Guest, tcpACK, TCPTimeWait, to.TCPTimeWait)
	step(Guest, tcpSYN, TCPSynSent, to.TCPSynSent) // port reuse
	step(Uplink, tcpRST, TCPClose, to.TCPClose)
	// The shortened flow is reclaimed by the wheel after 10 s.
	clk.Advance(12 * time.Second)
	require.Equal(t, 1, e.Expire())
	require.Equal(t, 0, e.Len())
	require.Equal(t, uint64(0), e.Stats().TCPStates[TCPClose])

	// A mid-stream pickup (no SYN seen) becomes established on an answer.
	e2, _ := newEngine(t, nil)
	require.Equal(t, ToUplink, one(e2, Guest, pkt{proto: TCP, src: g, dst: r, flags: tcpACK}.build(), 0).Verdict)
	require.Equal(t, ToGuest, one(e2, Uplink, pkt{proto: TCP, src: r, dst: x, flags: tcpACK}.build(), 0).Verdict)
	require.Equal(t, uint64(1), e2.Stats().TCPStates[TCPEstablished])
}

func TestQuotas(t *testing.T) {
	e, clk := newEngine(t, func(c *Config) { c.MaxFlows = 5; c.MaxFlowsPerGuest = 3 })
	open := func(a, port uint16) Packet {
		src := guestA
		if a == 1 {
			src = guestB
		}
		return one(e, Guest, pkt{proto: ICMP, src: ap(src, port), dst: ap(remote, 0)}.build(), 0)
	}
	for i := range uint16(3) {
		require.Equal(t, ToUplink, open(0, i).Verdict)
	}
	p := open(0, 3)
	require.Equal(t, Drop, p.Verdict)
	require.Equal(t, ReasonQuota, p.Reason)
	require.Equal(t, ToUplink, open(1, 0).Verdict)
	require.Equal(t, ToUplink, open(1, 1).Verdict)
	p = open(1, 2)
	require.Equal(t, ReasonTableFull, p.Reason)
	// Existing flows keep working.
	require.Equal(t, ToUplink, open(0, 1).Verdict)
	require.Equal(t, ToGuest, one(e, Uplink, pkt{proto: ICMP, reply: true, src: ap(remote, 0), dst: ap(extAddr, 1)}.build(), 0).Verdict)
	s := e.Stats()
	require.Equal(t, uint64(1), s.Drops[ReasonQuota])
	require.Equal(t, uint64(1), s.Drops[ReasonTableFull])
	require.Equal(t, uint64(5), s.FlowsICMP)
	// Once they expire, there is room again (the refusal path reclaims).
	clk.Advance(40 * time.Second)
	require.Equal(t, ToUplink, open(0, 3).Verdict)
	require.Equal(t, ToUplink, open(1, 2).Verdict)
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{GuestPrefix: guestPfx},
		{External: extAddr},
		{External: netipMust("2001:db8::1"), GuestPrefix: guestPfx},
		{External: netipMust("192.168.127.9"), GuestPrefix: guestPfx},
		{External: extAddr, GuestPrefix: guestPfx, PortMin: 2000, PortMax: 1000},
	} {
		_, err := New(c)
		require.Error(t, err)
	}
}

// TestFastRefreshSlack checks the lock-free path's refresh rule: a packet of
// an established flow moves its deadline only when that moves it by more
// than fastSlack, so the flow expires no earlier than its timeout minus the
// slack after its last packet, and no later than its timeout.
func TestFastRefreshSlack(t *testing.T) {
	const to = 256 * time.Second // slack 1 s
	e, clk := newEngine(t, func(c *Config) { c.Timeouts.ICMP = to })
	slack := time.Duration(fastSlack(int64(to)))
	require.Equal(t, time.Second, slack)
	g := ap(guestA, 77)
	req := pkt{proto: ICMP, src: g, dst: ap(remote, 0)}
	t0 := clk.Now()
	require.Equal(t, ToUplink, one(e, Guest, req.build(), 0).Verdict)
	require.Equal(t, t0.Add(to), flowOf(t, e, 77).Expires, "opened under the lock: exact")
	for _, c := range []struct {
		step time.Duration
		want time.Duration // Expires - t0 after the packet
	}{
		{500 * time.Millisecond, to},                   // moves it by 0.5 s: kept
		{500 * time.Millisecond, to},                   // by 1 s: kept (not more than the slack)
		{time.Millisecond, 1001*time.Millisecond + to}, // by 1.001 s: moved
	} {
		clk.Advance(c.step)
		require.Equal(t, ToUplink, one(e, Guest, req.build(), 0).Verdict)
		require.Equal(t, t0.Add(c.want), flowOf(t, e, 77).Expires, "after %v", clk.Now().Sub(t0))
	}
	// Idle from now: it lives until that deadline, not a nanosecond longer.
	clk.Advance(t0.Add(1001*time.Millisecond+to).Sub(clk.Now()) - time.Nanosecond)
	require.Zero(t, e.Expire(), "one ns before the deadline")
	clk.Advance(time.Nanosecond)
	require.Equal(t, 1, e.Expire(), "at the deadline")
}

// TestAdmitReclaimsCurrentTick: a full table whose flows are all dead, with
// deadlines in the wheel's current tick (a timeout shorter than a tick, ~1.07
// s), still admits a new flow: the refusal path's bounded expiry looks at the
// current tick's slot too, not only at the slots the wheel has passed.
// BenchmarkNewFlowsChurn hit it (table-full drops, now and then, with every
// flow of the table dead).
func TestAdmitReclaimsCurrentTick(t *testing.T) {
	e, clk := newEngine(t, func(c *Config) { c.MaxFlows = 5; c.MaxFlowsPerGuest = 5; c.Timeouts.UDP = 300 * time.Millisecond })
	for i := range uint16(5) {
		p := one(e, Guest, pkt{proto: UDP, src: ap(guestA, 5000+i), dst: ap(remote, 53)}.build(), 0)
		require.Equal(t, ToUplink, p.Verdict, "flow %d: %v", i, p.Reason)
	}
	clk.Advance(400 * time.Millisecond) // all dead; still tick 0
	p := one(e, Guest, pkt{proto: UDP, src: ap(guestB, 6000), dst: ap(remote, 53)}.build(), 0)
	require.Equal(t, ToUplink, p.Verdict, "refused: %v", p.Reason)
	require.Equal(t, 1, e.Len())
	require.Zero(t, e.Stats().Drops[ReasonTableFull])
}
