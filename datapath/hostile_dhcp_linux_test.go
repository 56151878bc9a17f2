//go:build linux

package datapath_test

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testlog"
	"github.com/arcnet/vhost-arcnet/services"
)

// gwLeases is the switch's view of the gateway's lease table, as
// cmd/vhost-arcnet wires it.
type gwLeases struct{ gw *services.Gateway }

func (l gwLeases) LeasedIP(mac header.MAC) (netip.Addr, bool) { return l.gw.LookupMAC(mac[:]) }
func (l gwLeases) LeaseGeneration() uint64                    { return l.gw.LeaseGeneration() }

// TestHostileGuestDHCP (issue 13, "Hostile guests"): a guest on a switch
// with anti-spoofing and the gateway's DHCP server tries to empty the
// address pool: DISCOVERs from a thousand Ethernet source MACs (the switch
// drops them: the port owns the MAC it sent from first), a thousand with
// its own source MAC but other client hardware addresses (the DHCP server
// drops them), and packets from addresses it was not given. Nothing of it
// gets an answer or a lease, every frame is counted, each kind is logged
// once, and another guest still gets its lease.
func TestHostileGuestDHCP(t *testing.T) {
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	gw, err := services.NewGateway(services.Config{Logger: log, DNSUpstreams: []string{"127.0.0.1:9"}, LeaseTime: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { _ = gw.Close() })
	sw, err := datapath.NewSwitch(datapath.SwitchOptions{Leases: gwLeases{gw}, Logger: log})
	require.NoError(t, err)
	_, err = sw.Attach(datapath.NewHandlerPort("gateway", gw), datapath.PortOptions{MAC: header.MAC(gw.MAC()), AllowSpoofing: true})
	require.NoError(t, err)
	attackerCap, victimCap := datapathtest.NewCapture("attacker"), datapathtest.NewCapture("victim")
	attacker, err := sw.Attach(attackerCap, datapath.PortOptions{})
	require.NoError(t, err)
	victim, err := sw.Attach(victimCap, datapath.PortOptions{})
	require.NoError(t, err)

	bcastIP := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	discover := func(src, chaddr header.MAC) datapath.Frame {
		d, err := dhcpv4.NewDiscovery(net.HardwareAddr(chaddr[:]))
		require.NoError(t, err)
		f := udpFrame(src, header.BroadcastMAC[:], netip.IPv4Unspecified(), bcastIP, 68, 67, d.ToBytes())
		return datapath.Frame{Segs: [][]byte{f}, Len: len(f)}
	}
	send := func(p *datapath.SwitchPort, frames []datapath.Frame) {
		for i := 0; i < len(frames); i += datapath.MaxBatch {
			p.Send(frames[i:min(i+datapath.MaxBatch, len(frames))])
		}
	}
	mac := func(i int) header.MAC { return header.MAC{0x52, 0x54, 0x01, byte(i >> 16), byte(i >> 8), byte(i)} }
	own := header.MAC{0x52, 0x54, 0x00, 0, 0, 0xaa}

	// The attacker's first frame claims its MAC; its own DISCOVER is
	// answered.
	send(attacker, []datapath.Frame{discover(own, own)})
	require.Equal(t, 1, attackerCap.Count())

	const n = 1000
	var flood []datapath.Frame
	for i := range n {
		flood = append(flood, discover(mac(i), mac(i)))
	}
	send(attacker, flood)
	require.EqualValues(t, n, attacker.Stats().Drops(datapath.DropSpoof))

	flood = flood[:0]
	for i := range n {
		flood = append(flood, discover(own, mac(n+i)))
	}
	send(attacker, flood)
	require.EqualValues(t, n, gw.Stats().Drops(services.DropDHCPSpoofed))

	// Spoofed source addresses: a DNS query from an address that is not
	// leased to the attacker, and from the victim's address-to-be.
	var spoofed []datapath.Frame
	for i := range 100 {
		src := netip.AddrFrom4([4]byte{192, 168, 127, byte(2 + i)})
		f := udpFrame(own, gw.MAC(), src, gw.Addr(), 5353, 53, []byte("not a query"))
		spoofed = append(spoofed, datapath.Frame{Segs: [][]byte{f}, Len: len(f)})
	}
	send(attacker, spoofed)
	require.EqualValues(t, n+100, attacker.Stats().Drops(datapath.DropSpoof))
	require.Equal(t, 1, attackerCap.Count(), "answers to the attacker: only its own DISCOVER's")
	require.Len(t, gw.Leases(), 1, "leases (offers included) after the attack")

	// The victim saw the broadcasts that passed the switch (the
	// attacker's own MAC, foreign chaddrs: a switch floods them), none of
	// the spoofed ones; it gets an offer.
	require.Len(t, victimCap.Take(), n+1)
	vmac := header.MAC{0x52, 0x54, 0x00, 0, 0, 0xbb}
	send(victim, []datapath.Frame{discover(vmac, vmac)})
	got := victimCap.TakeFrames()
	require.Len(t, got, 1)
	offer, err := dhcpv4.FromBytes(got[0][42:])
	require.NoError(t, err)
	require.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	require.Zero(t, victim.Stats().Drops(datapath.DropSpoof))

	w := logs.Lines("level=WARN", "level=ERROR")
	require.Len(t, w, 2, "one line for the spoofed frames, one for the foreign chaddrs: %q", w)
	require.Contains(t, strings.Join(w, "\n"), "chaddr")
}
