//go:build linux

package qemu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// StreamNet is QEMU 7.2's -netdev stream as a client of a unix socket:
// frames with a 4-byte big-endian length (vhost-arcnet --listen-stream).
type StreamNet struct{ Socket string }

func (n StreamNet) qemuArgs() ([]string, bool) {
	return []string{"-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=" + n.Socket}, false
}

// DgramNet is QEMU 7.2's -netdev dgram between two unix datagram sockets:
// Local, which QEMU binds, and Socket (vhost-arcnet --listen-dgram).
type DgramNet struct{ Socket, Local string }

func (n DgramNet) qemuArgs() ([]string, bool) {
	return []string{"-netdev", "dgram,id=n0,local.type=unix,local.path=" + n.Local +
		",remote.type=unix,remote.path=" + n.Socket}, false
}

// TestFrameSockets (issue 11): one guest on -netdev stream, one on -netdev
// dgram and one on vhost-user, all on one vhost-arcnet: each gets a lease
// and pings the other two by name (the gateway's DNS answers lease names).
func TestFrameSockets(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 3)
	up := startUpstreamDNS(t, nil)
	vu, st, dg := env.Path("vu.sock"), env.Path("st.sock"), env.Path("dg.sock")
	be := env.StartNetBackend("net", up, "--socket", vu, "--listen-stream", st, "--listen-dgram", dg)
	steps := "dhcp,wait:peers,nslookup:@n1:@a1,ping:@n1:2,nslookup:@n2:@a2,ping:@n2:2,stats,wait:done"
	names := []string{"vuguest", "stguest", "dgguest"}
	nets := []Net{VhostUserNet{Socket: vu}, StreamNet{Socket: st}, DgramNet{Socket: dg, Local: env.Path("qemu-dg.sock")}}
	gs := make([]*Guest, 3)
	for i := range gs {
		gs[i] = env.StartGuest(GuestConfig{Name: names[i], Net: nets[i], Test: steps,
			Knobs: []string{"hostname=" + names[i]}, Timeout: guestTimeout})
	}
	ips := make([]string, 3)
	for i, g := range gs {
		require.NoError(t, g.AwaitWait("peers", stepTimeout), names[i])
		ips[i] = guestIP(t, g)
	}
	require.NotEqual(t, ips[0], ips[1])
	require.NotEqual(t, ips[1], ips[2])
	require.NotEqual(t, ips[0], ips[2])
	for i, g := range gs {
		j, k := (i+1)%3, (i+2)%3
		require.NoError(t, g.Wake("peers", "n1="+names[j]+".arcnet.internal", "a1="+ips[j],
			"n2="+names[k]+".arcnet.internal", "a2="+ips[k]))
	}
	for i, g := range gs {
		require.NoError(t, g.AwaitWait("done", stepTimeout), names[i])
	}
	for i, g := range gs {
		c := g.Console()
		requireLease(t, c, "1500", "3600")
		for _, j := range []int{(i + 1) % 3, (i + 2) % 3} {
			requireResolved(t, c, names[j]+".arcnet.internal", ips[j])
			requirePingOK(t, c, names[j]+".arcnet.internal")
		}
	}
	stats, err := be.NetStats()
	require.NoError(t, err)
	t.Logf("addresses %v; ports %+v", ips, stats.Ports)
	require.Len(t, stats.Ports, 4, "three guest ports and the gateway")
	for name, p := range stats.Ports {
		require.NotZero(t, p.RxPackets, name)
		require.NotZero(t, p.TxPackets, name)
		require.Zero(t, p.Drops["spoof"], name)
		require.Zero(t, p.Drops["malformed"], name)
	}
	require.Empty(t, up.Queries(), "lease names are local names")
	finish(t, be, gs...)
}
