//go:build linux

package qemu

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Issue 3, "QEMU end-to-end": guests booted with -netdev vhost-user against
// a vhost-arcnet on its default network (--uplink none): every guest port on
// the switch, with the gateway 192.168.127.1 answering ARP and ICMP echo and
// serving DHCP and DNS. DNS names outside arcnet.internal go to a DNS server
// the test runs on 127.0.0.1 (--dns-upstream), so nothing leaves the
// machine.

// TestNetworkDHCP (issue 3, test 1): a guest gets 192.168.127.x by DHCP,
// with router, DNS server, domain name and search, interface MTU and lease
// time as configured (checked in what udhcpc received), and pings the
// gateway.
func TestNetworkDHCP(t *testing.T) {
	t.Parallel()
	// Not the defaults, so that the options are seen to carry the flags.
	env, up, be, sock := startNetwork(t, 1, nil, nil, "--mtu", "1400", "--lease-time", "30m")
	g := env.StartGuest(GuestConfig{
		Name: "dhcp", Net: VhostUserNet{Socket: sock},
		Test:    "dhcp,ping,stats,wait:done",
		Knobs:   []string{"hostname=dhcp-guest"},
		Timeout: guestTimeout,
	})
	require.NoError(t, g.AwaitWait("done", stepTimeout))
	c := g.Console()
	ip := requireLease(t, c, "1400", "1800")
	bound, ok := c.First("DHCP")
	require.True(t, ok)
	require.Equal(t, "bound", bound.Get("event"), "first udhcpc event: %s", bound)
	require.Equal(t, ip.String(), bound.Get("ip"))
	ping := requirePingOK(t, c, netGateway)
	replies, err := ping.Uint("received")
	require.NoError(t, err)

	st, err := be.WaitNetStats(func(s netStats) bool {
		return s.Gateway["icmp_echo_replies"] >= replies
	}, statsTimeout)
	require.NoError(t, err)
	t.Logf("lease %s; gateway %v; guest0 %+v", ip, st.Gateway, st.Ports[guest0])
	for _, k := range []string{"dhcp_discovers", "dhcp_offers", "dhcp_requests", "dhcp_acks", "arp_replies"} {
		require.NotZero(t, st.Gateway[k], k)
	}
	require.Zero(t, st.Gateway["dhcp_naks"])
	require.Zero(t, st.Ports[guest0].Drops["spoof"])
	require.NotZero(t, st.Ports[guest0].RxPackets)
	require.NotZero(t, st.Ports[guest0].TxPackets)
	require.Empty(t, up.Queries(), "nothing to forward upstream")

	finish(t, be, g)
}

// TestNetworkDNS (issue 3, test 2): the guest resolves the gateway's name
// (a local answer) and names of the test's upstream server, one of which the
// upstream answers only over TCP (the gateway retries over TCP on TC=1);
// a second lookup of a forwarded name is answered from the gateway's cache.
func TestNetworkDNS(t *testing.T) {
	t.Parallel()
	env, up, be, sock := startNetwork(t, 1, map[string]string{
		"www.example.arcnet.test": "198.51.100.7",
		"tcp.example.arcnet.test": "198.51.100.8",
	}, []string{"tcp.example.arcnet.test"})
	g := env.StartGuest(GuestConfig{
		Name: "dns", Net: VhostUserNet{Socket: sock},
		Test: "dhcp,nslookup:gateway.arcnet.internal:" + netGateway +
			",nslookup:dns-guest.arcnet.internal:@ip" +
			",nslookup:www.example.arcnet.test:198.51.100.7" +
			",nslookup:tcp.example.arcnet.test:198.51.100.8" +
			",nslookup:www.example.arcnet.test:198.51.100.7,stats,wait:done",
		Knobs:   []string{"hostname=dns-guest"},
		Timeout: guestTimeout,
	})
	require.NoError(t, g.AwaitWait("done", stepTimeout))
	c := g.Console()
	ip := requireLease(t, c, "1500", "3600")
	requireResolved(t, c, "gateway.arcnet.internal", netGateway)
	requireResolved(t, c, "dns-guest.arcnet.internal", ip.String())
	requireResolved(t, c, "www.example.arcnet.test", "198.51.100.7")
	requireResolved(t, c, "tcp.example.arcnet.test", "198.51.100.8")

	st, err := be.NetStats()
	require.NoError(t, err)
	t.Logf("upstream %s was asked %v; gateway %v", up.Addr, up.Queries(), st.Gateway)
	require.False(t, up.AskedAbout("gateway.arcnet.internal"), "a local name went upstream")
	require.False(t, up.AskedAbout("dns-guest.arcnet.internal"), "a local name went upstream")
	require.Equal(t, 1, up.Count("udp", "A", "www.example.arcnet.test"),
		"asked twice by the guest, forwarded once: the second answer comes from the cache")
	require.NotZero(t, up.Count("udp", "A", "tcp.example.arcnet.test"))
	require.NotZero(t, up.Count("tcp", "A", "tcp.example.arcnet.test"), "no TCP retry after TC=1")
	require.NotZero(t, st.Gateway["dns_local"])
	require.NotZero(t, st.Gateway["dns_forwarded"])
	require.NotZero(t, st.Gateway["dns_cache_hits"])
	require.NotZero(t, st.Gateway["dns_tcp_retries"])
	require.Zero(t, st.Gateway["dns_servfail"])
	require.Zero(t, st.Gateway["dns_formerr"])

	finish(t, be, g)
}

// TestNetworkTwoGuests (issue 3, test 3): two guests connect to one socket
// of one vhost-arcnet (two ports of its switch), get different addresses,
// ping each other and resolve each other's hostname (DHCP option 12 ->
// <hostname>.arcnet.internal).
func TestNetworkTwoGuests(t *testing.T) {
	t.Parallel()
	env, up, be, sock := startNetwork(t, 2, nil, nil)
	steps := "dhcp,wait:peer,ping:@peer,nslookup:@peername:@peer,ping:@peername:2,stats,wait:done"
	a := env.StartGuest(GuestConfig{Name: "alpha", Net: VhostUserNet{Socket: sock}, Test: steps,
		Knobs: []string{"hostname=alpha"}, Timeout: guestTimeout})
	b := env.StartGuest(GuestConfig{Name: "beta", Net: VhostUserNet{Socket: sock}, Test: steps,
		Knobs: []string{"hostname=beta"}, Timeout: guestTimeout})
	require.NoError(t, a.AwaitWait("peer", stepTimeout))
	require.NoError(t, b.AwaitWait("peer", stepTimeout))
	ipA, ipB := guestIP(t, a), guestIP(t, b)
	require.NotEqual(t, ipA, ipB, "two guests leased one address")
	require.NoError(t, a.Wake("peer", "peer="+ipB, "peername=beta.arcnet.internal"))
	require.NoError(t, b.Wake("peer", "peer="+ipA, "peername=alpha.arcnet.internal"))
	require.NoError(t, a.AwaitWait("done", stepTimeout))
	require.NoError(t, b.AwaitWait("done", stepTimeout))

	for _, x := range []struct {
		g        *Guest
		peer     string
		peerName string
	}{{a, ipB, "beta.arcnet.internal"}, {b, ipA, "alpha.arcnet.internal"}} {
		c := x.g.Console()
		requireLease(t, c, "1500", "3600")
		requirePingOK(t, c, x.peer)
		requireResolved(t, c, x.peerName, x.peer)
		requirePingOK(t, c, x.peerName)
	}
	st, err := be.NetStats()
	require.NoError(t, err)
	t.Logf("alpha %s, beta %s; ports %+v; gateway %v", ipA, ipB, st.Ports, st.Gateway)
	for _, p := range []string{"guest0", "guest1"} {
		require.Contains(t, st.Ports, p)
		require.NotZero(t, st.Ports[p].RxPackets, p)
		require.NotZero(t, st.Ports[p].TxPackets, p)
		require.Zero(t, st.Ports[p].Drops["spoof"], p)
	}
	require.Zero(t, st.Gateway["icmp_echo_replies"], "the guests pinged each other, not the gateway")
	require.Empty(t, up.Queries(), "hostnames are local names")

	finish(t, be, a, b)
}

// TestNetworkMultiQueue (issue 14): two guests with two vCPUs and two queue
// pairs each (QEMU queues=2, mq=on) on --queue-pairs 2 take leases and
// ping each other through the switch: the gateway's answers and the other
// guest's frames reach a guest on whichever pair its flow is steered to
// (datapath/steer.go), and both ports run two pairs.
func TestNetworkMultiQueue(t *testing.T) {
	t.Parallel()
	env, _, be, sock := startNetwork(t, 2, nil, nil, "--queue-pairs", "2")
	steps := "dhcp,wait:peer,ping:@peer,stats,wait:done"
	net := VhostUserNet{Socket: sock, Queues: 2}
	a := env.StartGuest(GuestConfig{Name: "alpha", Net: net, CPUs: 2, Test: steps,
		Knobs: []string{"hostname=alpha"}, Timeout: guestTimeout})
	b := env.StartGuest(GuestConfig{Name: "beta", Net: net, CPUs: 2, Test: steps,
		Knobs: []string{"hostname=beta"}, Timeout: guestTimeout})
	require.NoError(t, a.AwaitWait("peer", stepTimeout))
	require.NoError(t, b.AwaitWait("peer", stepTimeout))
	ipA, ipB := guestIP(t, a), guestIP(t, b)
	require.NoError(t, a.Wake("peer", "peer="+ipB))
	require.NoError(t, b.Wake("peer", "peer="+ipA))
	require.NoError(t, a.AwaitWait("done", stepTimeout))
	require.NoError(t, b.AwaitWait("done", stepTimeout))
	requirePingOK(t, a.Console(), ipB)
	requirePingOK(t, b.Console(), ipA)
	for _, p := range []string{"guest0", "guest1"} {
		_, _, err := be.WaitRecord(func(r LogRecord) bool {
			return r.Msg() == "guest port running" && r.String("port") == p && r.Num("queue_pairs") == 2
		}, 0, stepTimeout)
		require.NoError(t, err, "%s did not run two queue pairs", p)
	}
	st, err := be.NetStats()
	require.NoError(t, err)
	t.Logf("alpha %s, beta %s; ports %+v", ipA, ipB, st.Ports)
	for _, p := range []string{"guest0", "guest1"} {
		// (drop_no_queue: broadcasts that reached a port before its
		// guest's driver started its rings.)
		require.NotZero(t, st.Ports[p].TxPackets, p)
		require.Zero(t, st.Ports[p].Drops["spoof"], p)
	}
	finish(t, be, a, b)
}

// TestNetworkAntiSpoofing (issue 3, test 4): a guest that sends from
// another guest's IPv4 address, then from another guest's MAC address, gets
// nothing through: its pings get no reply, the gateway answers none, the
// other guest receives nothing, and every phase grows the attacker port's
// drop_spoof counter. The victim keeps working afterwards.
func TestNetworkAntiSpoofing(t *testing.T) {
	t.Parallel()
	env, _, be, sock := startNetwork(t, 2, nil, nil)
	// The victim connects first: it is guest0, the attacker guest1.
	victim := env.StartGuest(GuestConfig{Name: "victim", Net: VhostUserNet{Socket: sock},
		Test: "dhcp,wait:attacked,ping,stats,wait:done", Knobs: []string{"hostname=victim"}, Timeout: guestTimeout})
	require.NoError(t, be.WaitPortAttached("guest0", 30*time.Second))
	attacker := env.StartGuest(GuestConfig{Name: "attacker", Net: VhostUserNet{Socket: sock},
		Test: "dhcp,ping,wait:spoofip,addip:@vipcidr,noping:@gw:3:@vip," +
			"wait:spoofmac,setmac:@vmac,noping:@gw:3,stats,wait:done",
		Knobs: []string{"hostname=attacker"}, Timeout: guestTimeout})
	require.NoError(t, be.WaitPortAttached("guest1", 30*time.Second))
	const vPort, aPort = "guest0", "guest1"

	require.NoError(t, victim.AwaitWait("attacked", stepTimeout))
	require.NoError(t, attacker.AwaitWait("spoofip", stepTimeout))
	vip, aip := guestIP(t, victim), guestIP(t, attacker)
	require.NotEqual(t, vip, aip)
	requirePingOK(t, attacker.Console(), netGateway) // before spoofing, it works
	st0, err := be.WaitNetStats(func(s netStats) bool { return s.Gateway["icmp_echo_replies"] > 0 }, statsTimeout)
	require.NoError(t, err)
	require.Zero(t, st0.Ports[aPort].Drops["spoof"], "drops before any spoofing")
	t.Logf("victim %s (%s), attacker %s (%s); before: attacker %+v, victim %+v",
		vip, victim.MAC, aip, attacker.MAC, st0.Ports[aPort], st0.Ports[vPort])

	// Phase 1: the attacker's own MAC, the victim's IPv4 address as source.
	require.NoError(t, attacker.Wake("spoofip", "vip="+vip, "vipcidr="+vip+"/32",
		"vmac="+strings.ReplaceAll(victim.MAC, ":", "-")))
	require.NoError(t, attacker.AwaitWait("spoofmac", stepTimeout), "a ping from a spoofed IPv4 source got a reply")
	st1, err := be.WaitNetStats(func(s netStats) bool {
		return s.Ports[aPort].Drops["spoof"] > st0.Ports[aPort].Drops["spoof"]
	}, statsTimeout)
	require.NoError(t, err, "spoofed IPv4 source not counted as drop_spoof")
	t.Logf("after IPv4 spoofing: attacker %+v", st1.Ports[aPort])

	// Phase 2: the victim's MAC address.
	require.NoError(t, attacker.Wake("spoofmac"))
	require.NoError(t, attacker.AwaitWait("done", stepTimeout), "a ping from a spoofed MAC got a reply")
	st2, err := be.WaitNetStats(func(s netStats) bool {
		return s.Ports[aPort].Drops["spoof"] > st1.Ports[aPort].Drops["spoof"]
	}, statsTimeout)
	require.NoError(t, err, "spoofed source MAC not counted as drop_spoof")
	t.Logf("after MAC spoofing: attacker %+v, victim %+v; gateway %v", st2.Ports[aPort], st2.Ports[vPort], st2.Gateway)
	require.Equal(t, st0.Gateway["icmp_echo_replies"], st2.Gateway["icmp_echo_replies"],
		"the gateway answered a spoofed ping")
	require.Equal(t, st0.Ports[vPort].TxPackets, st2.Ports[vPort].TxPackets,
		"a spoofed frame reached the victim")
	require.Zero(t, st2.Ports[vPort].Drops["spoof"], "the victim spoofed nothing")
	ac := attacker.Console()
	for _, p := range ac.All("PING")[1:] {
		require.Equal(t, "0", p.Get("received"), "%s", p)
	}
	set, ok := ac.First("SETMAC")
	require.True(t, ok)
	require.Equal(t, victim.MAC, set.Get("mac"))

	// The victim's address and MAC still work for the victim.
	require.NoError(t, victim.Wake("attacked"))
	require.NoError(t, victim.AwaitWait("done", stepTimeout))
	requirePingOK(t, victim.Console(), netGateway)
	finish(t, be, victim, attacker)
}

// TestNetworkRestartKeepsLease (issue 3, test 5): vhost-arcnet is stopped
// while a guest runs (QEMU reconnect=1) and started again with the same
// --lease-file. The guest's link goes down and comes back; the new instance
// knows the lease from the file before the guest says anything (the guest
// pings from its address, which anti-spoofing lets through only for a
// leased address, and its hostname resolves), and a DHCP renew returns the
// same address.
func TestNetworkRestartKeepsLease(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	env.RequireBackend()
	up := startUpstreamDNS(t, nil)
	sock := env.Path("vu.sock")
	leases := env.Path("leases.json")
	g := env.StartGuest(GuestConfig{
		Name: "restart", Net: VhostUserNet{Socket: sock, Reconnect: 1},
		Test: "dhcp,ping,wait:stop,carrier:down,wait:start,carrier:up," +
			"ping,nslookup:restart-guest.arcnet.internal:@ip,renew,ping,stats,wait:done",
		Knobs:   []string{"hostname=restart-guest"},
		Timeout: guestTimeout,
	})
	be1 := env.StartNetBackend("first", up, "--socket", sock, "--lease-file", leases)
	require.NoError(t, g.AwaitWait("stop", stepTimeout))
	ip := requireLease(t, g.Console(), "1500", "3600")
	stopBackend(t, be1, "SIGTERM with a guest attached: clean exit")
	requireLeaseFile(t, leases, g.MAC, ip.String(), "restart-guest")
	require.NoError(t, g.Wake("stop"))

	require.NoError(t, g.AwaitWait("start", stepTimeout), "the guest's link did not go down")
	mark := len(g.Console().Records)
	be2 := env.StartNetBackend("second", up, "--socket", sock, "--lease-file", leases)
	require.NoError(t, be2.WaitPortAttached(guest0, 20*time.Second), "QEMU did not reconnect")
	require.NoError(t, g.Wake("start"))
	require.NoError(t, g.AwaitWait("done", stepTimeout), "after the restart")

	c := g.Console()
	after := &Console{Records: c.Records[mark:]}
	require.NotEmpty(t, after.All("CARRIER"))
	requirePingOK(t, after, netGateway)
	requireResolved(t, after, "restart-guest.arcnet.internal", ip.String())
	renew, ok := after.First("RENEW")
	require.True(t, ok)
	require.Equal(t, ip.String(), renew.Get("ip"), "renew after the restart changed the address")
	events := after.All("DHCP")
	require.Len(t, events, 1, "udhcpc events after the restart: %v", events)
	require.Equal(t, "renew", events[0].Get("event"), "%s", events[0])
	require.Equal(t, ip.String(), events[0].Get("ip"))

	st, err := be2.NetStats()
	require.NoError(t, err)
	t.Logf("after restart: lease %s kept; gateway %v; guest0 %+v", ip, st.Gateway, st.Ports[guest0])
	require.Zero(t, st.Ports[guest0].Drops["spoof"], "the leased address was not known after the restart")
	require.Zero(t, st.Gateway["dhcp_discovers"], "the guest had to start over")
	require.Zero(t, st.Gateway["dhcp_naks"])
	require.NotZero(t, st.Gateway["dhcp_acks"])
	finish(t, be2, g)
}

// requireLeaseFile checks that the lease file holds a bound lease of addr
// for mac with hostname.
func requireLeaseFile(t *testing.T, path, mac, addr, hostname string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var f struct {
		Leases []struct {
			MAC, Addr, Hostname, State string
		}
	}
	require.NoError(t, json.Unmarshal(b, &f), "%s", b)
	for _, l := range f.Leases {
		if l.MAC == mac {
			require.Equal(t, addr, l.Addr, "%s", b)
			require.Equal(t, hostname, l.Hostname, "%s", b)
			require.Equal(t, "bound", l.State, "%s", b)
			return
		}
	}
	t.Fatalf("lease file has no lease for %s:\n%s", mac, b)
}
