package datapath

import (
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// runPort is a capPort that says whether it runs (Runner).
type runPort struct {
	*capPort
	running atomic.Bool
}

func (p *runPort) Running() bool { return p.running.Load() }

func (r *swRig) attachRunner(name string) *runPort {
	r.t.Helper()
	p := &runPort{capPort: newCapPort(name)}
	p.running.Store(true)
	sp, err := r.sw.Attach(p, PortOptions{})
	require.NoError(r.t, err)
	r.ports[name], r.sps[name] = p.capPort, sp
	return p
}

// TestSwitchTakeMAC: a guest migrates from port a to port b. b takes the
// guest's MAC only once a stopped running; then the MAC table points at b
// at once (the clock never moves: no ageing is involved), the guest's
// frames from b pass anti-spoofing with its lease, and a may send nothing.
func TestSwitchTakeMAC(t *testing.T) {
	leases := newFakeLeases()
	r := newSwRig(t, SwitchOptions{Leases: leases})
	a := r.attachRunner("a")
	b := r.attachRunner("b")
	r.attach("c", PortOptions{})
	leases.set(macA, ipA)
	r.send("a", udp4Frame(macC, macA, ipA, ipB, 1, 2, 10))
	r.got() // flooded: c is not known yet
	r.send("c", frameTo(macA, macC))
	require.Equal(t, map[string]int{"a": 1}, r.got())

	// The source still runs: b cannot take its MAC.
	err := r.sps["b"].TakeMAC(macA)
	require.ErrorIs(t, err, ErrMACInUse)
	p, _ := r.sw.Lookup(macA)
	require.Equal(t, "a", p.Name())

	a.running.Store(false)
	require.NoError(t, r.sps["b"].TakeMAC(macA))
	require.NoError(t, r.sps["b"].TakeMAC(macA), "QEMU announces several times")
	p, ok := r.sw.Lookup(macA)
	require.True(t, ok)
	require.Equal(t, "b", p.Name())
	own, ok := r.sps["b"].MAC()
	require.True(t, ok)
	require.Equal(t, macA, own)
	_, ok = r.sps["a"].MAC()
	require.False(t, ok, "a's MAC moved")

	r.send("c", frameTo(macA, macC))
	require.Equal(t, map[string]int{"b": 1}, r.got())
	r.send("b", udp4Frame(macC, macA, ipA, ipB, 1, 2, 10))
	require.Equal(t, map[string]int{"c": 1}, r.got())
	require.Zero(t, b.stats.Drops(DropSpoof))
	r.send("a", udp4Frame(macC, macA, ipA, ipB, 1, 2, 10), frameTo(macC, macB))
	require.Empty(t, r.got())
	require.EqualValues(t, 2, a.stats.Drops(DropSpoof))

	// b owns macA now: it takes no other; a group address is refused.
	require.Error(t, r.sps["b"].TakeMAC(macB))
	require.Error(t, r.sps["c"].TakeMAC(mcast))
	require.Error(t, r.sps["c"].TakeMAC(header.MAC{}))
	// c does not say whether it runs: it counts as running.
	r.send("c", frameTo(macA, macC))
	require.Equal(t, map[string]int{"b": 1}, r.got())
	b.running.Store(false)
	d := r.attachRunner("d")
	require.NoError(t, r.sps["d"].TakeMAC(macA), "migrated again")
	require.ErrorIs(t, r.sps["b"].TakeMAC(macC), ErrMACInUse, "c owns macC and counts as running")
	_ = d

	// Detaching the old ports leaves the new one's entry alone.
	r.sw.Detach(r.sps["a"])
	r.sw.Detach(r.sps["b"])
	r.send("c", frameTo(macA, macC))
	require.Equal(t, map[string]int{"d": 1}, r.got())
	require.Error(t, r.sps["b"].TakeMAC(macX), "detached")

	// A MAC nobody owns is simply taken.
	e := r.attachRunner("e")
	require.NoError(t, r.sps["e"].TakeMAC(macX))
	r.send("c", frameTo(macX, macC))
	require.Equal(t, map[string]int{"e": 1}, r.got())
	_ = e
}

// TestGuestPortSendRARP: SEND_RARP on a guest port whose peer is a switch
// moves the MAC and broadcasts the RARP request QEMU's announcement
// would (RFC 903).
func TestGuestPortSendRARP(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	old := r.attachRunner("old")
	obs := r.attach("obs", PortOptions{})
	r.send("old", frameTo(macC, macA))
	r.got()
	gp, err := NewGuestPort(GuestPortOptions{Name: "new", QueuePairs: 1, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.False(t, gp.Running())
	_, err = r.sw.Attach(gp, PortOptions{})
	require.NoError(t, err)

	gp.SendRARP(macA) // old still runs: refused, nothing sent
	require.Empty(t, r.got())
	p, _ := r.sw.Lookup(macA)
	require.Equal(t, "old", p.Name())

	old.running.Store(false)
	gp.SendRARP(macA)
	require.Equal(t, map[string]int{"obs": 1}, map[string]int{"obs": obs.Count()})
	f := obs.Frames()[0]
	require.Len(t, f, 60)
	require.Equal(t, header.BroadcastMAC[:], f[0:6])
	require.Equal(t, macA[:], f[6:12])
	require.EqualValues(t, EtherTypeRARP, binary.BigEndian.Uint16(f[12:]))
	require.EqualValues(t, 3, binary.BigEndian.Uint16(f[20:]), "request reverse")
	require.Equal(t, macA[:], f[22:28])
	require.Equal(t, macA[:], f[32:38])
	p, _ = r.sw.Lookup(macA)
	require.Equal(t, "new", p.Name())

	// Without a switch (a measurement uplink) the frame goes to the peer.
	sink := newCapPort("sink")
	gp2, err := NewGuestPort(GuestPortOptions{Name: "g2", QueuePairs: 1})
	require.NoError(t, err)
	gp2.SendRARP(macB) // no peer: nothing
	gp2.SetPeer(sink)
	gp2.SendRARP(macB)
	require.Equal(t, 1, sink.Count())
}

// TestGuestPortRunning: a guest port runs while any queue is started; a
// migration source that stopped every queue (GET_VRING_BASE) no longer
// does, and its MAC may move.
func TestGuestPortRunning(t *testing.T) {
	r := newRig(t, virtio.FVersion1, GuestPortOptions{Logger: slog.New(slog.DiscardHandler)}, 2048)
	require.False(t, r.port.Running())
	r.start()
	require.True(t, r.port.Running())
	r.port.StopQueue(1)
	require.True(t, r.port.Running(), "the receive queue still runs")
	r.port.StartQueue(1, r.txq, r.txKick, r.txCall) // restart: counted once
	r.port.StopQueue(1)
	r.port.StopQueue(0)
	require.False(t, r.port.Running())
	r.start()
	r.port.Close()
	require.False(t, r.port.Running())
}
