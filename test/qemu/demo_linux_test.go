//go:build linux

package qemu

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// demoUpstreamName is the name the demo's upstream DNS server (in this test,
// on 127.0.0.1) answers, and its address (TEST-NET-2, RFC 5737).
const (
	demoUpstreamName = "example.arcnet.test"
	demoUpstreamAddr = "198.51.100.80"
	demoHostname     = "demo-guest"
)

// TestDemo is `make demo`: it starts vhost-arcnet on its default guest
// network, boots one Linux guest under QEMU against it, and tells what
// happens: the guest configures itself by DHCP, pings the gateway, resolves
// the gateway's name (answered by vhost-arcnet) and a name of an upstream
// DNS server (a server in this test on 127.0.0.1, so that nothing leaves the
// machine), then the backend's counters. It runs only with ARCNET_DEMO=1:
//
//	ARCNET_DEMO=1 go test -count=1 -v -run '^TestDemo$' ./test/qemu/
func TestDemo(t *testing.T) {
	if os.Getenv("ARCNET_DEMO") != "1" {
		t.Skip("the demo runs with ARCNET_DEMO=1 (make demo)")
	}
	start := time.Now()
	env := NewEnv(t, 1)
	up := startUpstreamDNS(t, map[string]string{demoUpstreamName: demoUpstreamAddr})
	sock := env.Path("vu.sock")
	be := env.StartNetBackend("demo", up, "--socket", sock)
	say(t, "vhost-arcnet",
		fmt.Sprintf("started (pid %d) on the default guest network: subnet %s, gateway %s (ARP, ICMP echo, DHCP, DNS)",
			be.cmd.Process.Pid, netSubnet, netGateway),
		"vhost-user socket "+sock,
		fmt.Sprintf("DNS upstream %s: a DNS server inside this test that answers %s -> %s",
			up.Addr, demoUpstreamName, demoUpstreamAddr))

	g := env.StartGuest(GuestConfig{
		Name: "demo", Net: VhostUserNet{Socket: sock},
		Test: "dhcp,ping,nslookup:gateway.arcnet.internal:" + netGateway +
			",nslookup:" + demoHostname + ".arcnet.internal:@ip" +
			",nslookup:" + demoUpstreamName + ":" + demoUpstreamAddr +
			",ping:gateway.arcnet.internal:2,stats,wait:done",
		Knobs:   []string{"hostname=" + demoHostname},
		Timeout: guestTimeout,
	})
	say(t, "QEMU", fmt.Sprintf("booting a Debian cloud kernel + busybox initramfs (TCG, %s RAM), "+
		"-netdev vhost-user on %s, NIC MAC %s", guestMemory, sock, g.MAC))
	require.NoError(t, g.AwaitWait("done", stepTimeout), "the guest did not finish its steps")
	c := g.Console()

	nic, _ := c.First("NIC")
	user, _ := c.First("USERSPACE")
	say(t, "guest up", fmt.Sprintf("kernel %s, userspace after %.1fs; %s driver=%s mac=%s carrier=%s",
		user.Get("kernel"), user.At.Seconds(), nic.Get("name"), nic.Get("driver"), nic.Get("mac"), nic.Get("carrier")))

	say(t, "DHCP (udhcpc in the guest)", linesWith(c, "udhcpc: ")...)
	ip := requireLease(t, c, "1500", "3600")
	lease, _ := c.First("IP")
	say(t, "lease",
		fmt.Sprintf("address %s/%s, router %s, DNS server %s", ip, lease.Get("mask"), lease.Get("gw"), lease.Get("dns")),
		fmt.Sprintf("domain %s, search %s, MTU %s, lease time %ss, from server %s",
			lease.Get("domain"), lease.Get("search"), lease.Get("mtu"), lease.Get("lease"), lease.Get("server")))

	say(t, "ping the gateway (by address, then by name)", linesWith(c, "ping: ")...)
	requirePingOK(t, c, netGateway)
	requirePingOK(t, c, "gateway.arcnet.internal")

	var dnsLines []string
	for _, r := range c.All("DNS") {
		via := "answered by the gateway (local name)"
		if !strings.HasSuffix(r.Get("name"), "."+netDomain) {
			via = "forwarded by the gateway to the upstream " + up.Addr
		}
		dnsLines = append(dnsLines, fmt.Sprintf("%-32s -> %-15s %s", r.Get("name"), r.Get("addrs"), via))
	}
	var asked []string
	for _, q := range up.Queries() {
		asked = append(asked, q.String())
	}
	dnsLines = append(dnsLines, "the upstream server was asked: "+strings.Join(asked, "; "))
	say(t, "DNS (nslookup in the guest, server "+netGateway+")", dnsLines...)
	requireResolved(t, c, "gateway.arcnet.internal", netGateway)
	requireResolved(t, c, demoHostname+".arcnet.internal", ip.String())
	requireResolved(t, c, demoUpstreamName, demoUpstreamAddr)

	st, err := be.NetStats()
	require.NoError(t, err)
	var portLines []string
	for _, name := range sortedKeys(st.Ports) {
		p := st.Ports[name]
		portLines = append(portLines, fmt.Sprintf("%-8s rx %3d packets %6d bytes   tx %3d packets %6d bytes   drops: %s",
			name, p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes, nonZero(p.Drops, "drop_")))
	}
	portLines = append(portLines, "(rx: frames that entered the switch from the port, for guest0 what the guest sent; "+
		"tx: frames the switch delivered out of the port)")
	say(t, "backend port stats (SIGUSR1)", portLines...)
	say(t, "backend gateway stats (non-zero counters)", groupedNonZero(st.Gateway)...)

	gs, _ := c.Last("STATS")
	say(t, "the guest's own eth0 counters (the mirror of guest0's)",
		fmt.Sprintf("rx %s packets %s bytes, tx %s packets %s bytes, dropped rx %s tx %s, errors rx %s tx %s",
			gs.Get("rx_packets"), gs.Get("rx_bytes"), gs.Get("tx_packets"), gs.Get("tx_bytes"),
			gs.Get("rx_dropped"), gs.Get("tx_dropped"), gs.Get("rx_errors"), gs.Get("tx_errors")))
	require.NoError(t, g.Wake("done"))
	c = g.Wait()
	require.True(t, c.Passed(), "guest: %s", c.Result())
	_, err = be.Stop()
	require.NoError(t, err)
	requireNoErrorRecords(t, be)
	say(t, "done", fmt.Sprintf("guest powered off, vhost-arcnet stopped (exit 0); %.1fs in all", time.Since(start).Seconds()))
}

// say logs one section of the demo's narrative.
func say(t *testing.T, title string, lines ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("== " + title)
	for _, l := range lines {
		b.WriteString("\n     " + l)
	}
	t.Log(b.String())
}

// linesWith returns the console lines that start with prefix, without it.
func linesWith(c *Console, prefix string) []string {
	var out []string
	for _, l := range c.Lines {
		if s, ok := strings.CutPrefix(l.Text, prefix); ok && strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// nonZero formats the non-zero counters of m as "prefix+key=value ...".
func nonZero(m map[string]uint64, prefix string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s%s=%d", prefix, k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// groupedNonZero formats the non-zero counters of m one line per family
// (the key's first word: dhcp_acks and dhcp_offers share a line).
func groupedNonZero(m map[string]uint64) []string {
	groups := map[string]map[string]uint64{}
	for k, v := range m {
		if v == 0 {
			continue
		}
		fam, _, _ := strings.Cut(k, "_")
		if groups[fam] == nil {
			groups[fam] = map[string]uint64{}
		}
		groups[fam][k] = v
	}
	var out []string
	for _, fam := range sortedKeys(groups) {
		out = append(out, nonZero(groups[fam], ""))
	}
	if len(out) == 0 {
		out = append(out, "none")
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
