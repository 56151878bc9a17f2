package router

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testlog"
	"github.com/arcnet/vhost-arcnet/nat"
)

// Issue 13, "Hostile guests": what a guest must not reach or exhaust
// through the router is refused and counted on every packet, and logged
// once, not once a packet.

// TestGuestToHostLoopbackRefused: a guest that sends to the host's loopback
// (127.0.0.0/8) or to "this network" (0.0.0.0/8) reaches neither the
// uplink nor anything else; every packet is counted, one warning is
// logged for the whole flood, and the guest's ordinary traffic goes on.
func TestGuestToHostLoopbackRefused(t *testing.T) {
	var logs testlog.Buffer
	g := newRig(t, func(o *Options) { o.Logger = logs.Logger() })
	var flood []datapath.Frame
	for i := range 200 {
		dst := netip.AddrFrom4([4]byte{127, 0, byte(i >> 4), byte(i)})
		if i%4 == 0 {
			dst = netip.AddrFrom4([4]byte{0, 0, 0, byte(i)})
		}
		for _, proto := range []uint8{header.ProtoTCP, header.ProtoUDP} {
			flood = append(flood, asSwitch(pkt{dstMAC: gwMAC, srcMAC: macA, src: guestA, dst: dst, proto: proto,
				sport: 40000, dport: uint16(22 + i), tcpFlags: 0x02, ttl: 64, payload: 20}.build()))
		}
	}
	for i := 0; i < len(flood); i += datapath.MaxBatch {
		g.r.SwitchPort().Send(flood[i:min(i+datapath.MaxBatch, len(flood))])
	}
	require.Empty(t, g.up.TakeFrames(), "to the uplink")
	require.Empty(t, g.local.TakeFrames(), "to the gateway's services")
	require.Empty(t, g.lan.TakeFrames(), "back to the switch")
	require.Equal(t, uint64(len(flood)), g.r.Stats().Drops(Out, DropReason(nat.ReasonAddress)))
	lines := logs.Lines("level=WARN")
	require.Len(t, lines, 1, "%q", lines)
	require.Contains(t, lines[0], "loopback")
	require.Contains(t, lines[0], "src="+guestA.String())

	// The guest's traffic to the world goes on.
	g.r.SwitchPort().Send([]datapath.Frame{asSwitch(pkt{dstMAC: gwMAC, srcMAC: macA, src: guestA, dst: remote,
		proto: header.ProtoUDP, sport: 40000, dport: 53, ttl: 64, payload: 20}.build())})
	require.Len(t, g.up.TakeFrames(), 1)
}

// TestNewFlowFloodQuota: a guest opens new flows as fast as it can. Its
// NAT quota holds: beyond it every new flow is refused (an ICMP
// administratively-prohibited error back to the guest, RFC 1812 §5.2.7.1)
// and counted, one warning names the guest for the whole flood, its
// established flows still work, and another guest opens its flows.
func TestNewFlowFloodQuota(t *testing.T) {
	const quota = 32
	var logs testlog.Buffer
	eng, err := nat.New(nat.Config{External: extAddr, GuestPrefix: subnet, Router: gwAddr, Refusal: nat.RefuseICMP,
		MaxFlows: 4 * quota, MaxFlowsPerGuest: quota})
	require.NoError(t, err)
	g := newRig(t, func(o *Options) { o.NAT, o.Logger = eng, logs.Logger() })
	flow := func(mac header.MAC, src netip.Addr, dport uint16) datapath.Frame {
		return asSwitch(pkt{dstMAC: gwMAC, srcMAC: mac, src: src, dst: remote, proto: header.ProtoUDP,
			sport: 40000, dport: dport, ttl: 64, payload: 20}.build())
	}
	const flood = 2000
	var batch []datapath.Frame
	for i := range flood {
		batch = append(batch, flow(macA, guestA, uint16(1000+i)))
		if len(batch) == datapath.MaxBatch || i == flood-1 {
			g.r.SwitchPort().Send(batch)
			batch = batch[:0]
		}
	}
	require.Len(t, g.up.TakeFrames(), quota, "flows through")
	refusals := g.lan.TakeFrames()
	require.Len(t, refusals, flood-quota, "ICMP refusals to the guest")
	st := eng.Stats()
	require.Equal(t, uint64(flood-quota), st.Drops[nat.ReasonQuota])
	require.Equal(t, uint64(flood-quota), st.RefusalReplies)
	lines := logs.Lines("level=WARN")
	require.Len(t, lines, 1, "%q", lines)
	require.Contains(t, lines[0], "src="+guestA.String())
	require.Contains(t, lines[0], nat.ReasonQuota.String())

	// Established flows of the flooding guest still pass.
	g.r.SwitchPort().Send([]datapath.Frame{flow(macA, guestA, 1000), flow(macA, guestA, 1000+quota-1)})
	require.Len(t, g.up.TakeFrames(), 2)
	// Another guest's new flows are not refused.
	for i := range quota {
		g.r.SwitchPort().Send([]datapath.Frame{flow(macB, guestB, uint16(5000+i))})
	}
	require.Len(t, g.up.TakeFrames(), quota)
	require.Empty(t, g.lan.TakeFrames())
	require.Len(t, logs.Lines("level=WARN"), 1)
}

// TestLimitedLog: one warning, then none until refusalLogEvery has passed.
func TestLimitedLog(t *testing.T) {
	var l limitedLog
	require.True(t, l.allow())
	for range 100 {
		require.False(t, l.allow())
	}
	l.last.Add(-int64(refusalLogEvery) - 1) // a minute ago
	require.True(t, l.allow())
	require.False(t, l.allow())
}
