//go:build linux

package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	demoHostname = "demo-guest"
	// demoForward is where the demo's port forward listens inside Host:
	// it leads to port 80 of the guest named demoHostname.
	demoForward = "127.0.0.1:8080"
)

// TestDemo is `make demo`: it makes two network namespaces, Host (where
// vhost-arcnet runs) and Inet (which plays the internet: a web server on
// 203.0.113.2), starts vhost-arcnet in Host with a TAP uplink, masquerade
// and a port forward, boots one Linux guest under QEMU against it, and
// tells what happens: the guest configures itself by DHCP, pings the
// gateway, resolves the gateway's name (answered by vhost-arcnet) and a
// name of an upstream DNS server (a server of this test inside Host, so
// that nothing leaves the machine), fetches a page and a file from the
// internet namespace through the NAT, and serves TCP that a client on the
// host side reaches through the forward; then the backend's counters. It
// runs only with ARCNET_DEMO=1, as root, and fails (never skips) when
// something it needs is missing:
//
//	ARCNET_DEMO=1 go test -count=1 -v -run '^TestDemo$' ./test/qemu/
func TestDemo(t *testing.T) {
	if os.Getenv("ARCNET_DEMO") != "1" {
		t.Skip("the demo runs with ARCNET_DEMO=1 (make demo)")
	}
	demoPreflight(t)
	start := time.Now()
	env := NewEnv(t, 1)
	w := startNATWorld(t, env, 2<<20, "--forward", "tcp:"+demoForward+":"+demoHostname+":80")
	be := w.Backend
	inet := w.InetAddr.String()
	say(t, "network namespaces (made by the demo, deleted at its end)",
		fmt.Sprintf("%-12s vhost-arcnet runs here; veth %s %s, default route via %s", w.Host.Name, w.HostLink, w.HostAddr, inet),
		fmt.Sprintf("%-12s plays the internet: veth %s %s, web server http://%s/, UDP echo %s", w.Inet.Name, w.InetLink, inet, inet, w.UDPEcho),
		"Ctrl-C at any point stops the demo and leaves nothing: the namespaces, the TAP, the nftables table, "+
			"vhost-arcnet, QEMU and the temporary files all go")
	tap := w.requireRunning(t)
	say(t, "vhost-arcnet",
		fmt.Sprintf("started (pid %d) inside %s: guest subnet %s, gateway %s (ARP, ICMP, DHCP, DNS, router)",
			be.Pid(), w.Host.Name, netSubnet, netGateway),
		fmt.Sprintf("--uplink tap: TAP %s, the host's end %s/30 (host.%s), vhost-arcnet's NAT address %s",
			tap, tapHostEnd, netDomain, tapNATAddr),
		fmt.Sprintf("--masquerade: nftables table ip %s masquerades the link network out of %s's default route; ip_forward=1",
			masqTable, w.Host.Name),
		fmt.Sprintf("--forward tcp:%s:%s:80: a client in %s that connects to %s reaches the guest's port 80",
			demoForward, demoHostname, w.Host.Name, demoForward),
		"vhost-user socket "+w.Sock,
		fmt.Sprintf("DNS upstream %s (inside %s): a DNS server of this test that answers %s -> %s",
			w.Up.Addr, w.Host.Name, natInetName, inet))

	g := env.StartGuest(GuestConfig{
		Name: "demo", Net: VhostUserNet{Socket: w.Sock},
		Test: "dhcp,ping,nslookup:gateway.arcnet.internal:" + netGateway +
			",nslookup:" + demoHostname + ".arcnet.internal:@ip" +
			",nslookup:host.arcnet.internal:" + tapHostEnd +
			",nslookup:" + natInetName + ":" + inet +
			",ping:gateway.arcnet.internal:2,ping:" + inet + ":2" +
			",traceroute:" + inet + ":" + netGateway +
			",wget:" + w.WebURL + ",wget:" + w.BlobURL + ":" + w.Blob.SHA256 +
			",tcpserve:80,stats,wait:done",
		Knobs:   []string{"hostname=" + demoHostname},
		Timeout: guestTimeout,
	})
	say(t, "QEMU", fmt.Sprintf("booting a Debian cloud kernel + busybox initramfs (TCG, %s RAM), "+
		"-netdev vhost-user on %s, NIC MAC %s", guestMemory, w.Sock, g.MAC))
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

	say(t, "ping the gateway (by address, then by name), then the internet namespace", linesWith(c, "ping: ")...)
	requirePingOK(t, c, netGateway)
	requirePingOK(t, c, "gateway.arcnet.internal")
	requirePingOK(t, c, inet)

	var dnsLines []string
	for _, r := range c.All("DNS") {
		via := "answered by the gateway (local name)"
		if !strings.HasSuffix(r.Get("name"), "."+netDomain) {
			via = "forwarded by the gateway to the upstream " + w.Up.Addr
		}
		dnsLines = append(dnsLines, fmt.Sprintf("%-32s -> %-15s %s", r.Get("name"), r.Get("addrs"), via))
	}
	var asked []string
	for _, q := range w.Up.Queries() {
		asked = append(asked, q.String())
	}
	dnsLines = append(dnsLines, "the upstream server was asked: "+strings.Join(asked, "; "))
	say(t, "DNS (nslookup in the guest, server "+netGateway+")", dnsLines...)
	requireResolved(t, c, "gateway.arcnet.internal", netGateway)
	requireResolved(t, c, demoHostname+".arcnet.internal", ip.String())
	requireResolved(t, c, "host.arcnet.internal", tapHostEnd)
	requireResolved(t, c, natInetName, inet)

	tr, ok := c.First("TRACEROUTE")
	require.True(t, ok, "no GUEST-TRACEROUTE: %s", c.Result())
	say(t, "traceroute -n to "+inet+" (the gateway answers TTL exceeded first: it is a router now)",
		linesWith(c, "traceroute: ")...)
	require.Equal(t, netGateway, tr.Get("first"), "%s", tr)

	wg := c.All("WGET")
	require.Len(t, wg, 2, "GUEST-WGET records: %s", c.Result())
	page, file := wg[0], wg[1]
	require.Equal(t, "200", page.Get("status"), "%s", page)
	require.Equal(t, strconv.Itoa(len(inetPage)), page.Get("bytes"), "%s", page)
	require.Equal(t, "200", file.Get("status"), "%s", file)
	require.Equal(t, w.Blob.SHA256, file.Get("sha256"), "%s", file)
	var peers []string
	w.WebPeers.Range(func(k, _ any) bool { peers = append(peers, k.(string)); return true })
	sort.Strings(peers)
	secs, _ := strconv.ParseFloat(file.Get("secs"), 64)
	say(t, "the guest fetches from the internet namespace through NAT (busybox wget)",
		fmt.Sprintf("GET %s -> HTTP %s, %s bytes in %ss", page.Get("url"), page.Get("status"), page.Get("bytes"), page.Get("secs")),
		fmt.Sprintf("GET %s -> HTTP %s, %s bytes in %ss (%.1f Mbit/s on a TCG guest), sha256 %s… matches",
			file.Get("url"), file.Get("status"), file.Get("bytes"), file.Get("secs"),
			float64(len(w.Blob.Data))*8/1e6/max(secs, 0.01), file.Get("sha256")[:16]),
		fmt.Sprintf("the web server saw the connections come from %s: %s's address (guest %s -> NAT %s -> masquerade %s)",
			strings.Join(peers, ", "), w.Host.Name, ip, tapNATAddr, w.HostAddr))

	// A client in Host reaches the guest's TCP server through the forward.
	msg := "hello guest, this is a client in " + w.Host.Name + "\n"
	hello, echo := tcpRoundTrip(t, w.hostDial(t), demoForward, []byte(msg))
	require.Equal(t, demoHostname, hello.Host, "%s", hello.Line)
	require.Equal(t, tapHostEnd, hello.Peer.Addr().String(), "the guest saw the forward's connection from: %s", hello.Line)
	require.Equal(t, msg, echo)
	say(t, "a client on the host side reaches the guest through the forward",
		fmt.Sprintf("connect %s (inside %s) -> vhost-arcnet -> %s:80 (busybox nc in the guest)", demoForward, w.Host.Name, demoHostname),
		fmt.Sprintf("the guest said %q (it sees the host's end of the link as the client), then echoed %q",
			hello.Line, strings.TrimSpace(echo)))

	st, err := be.WaitNetStats(func(s netStats) bool {
		return s.Gateway["router_out_translated"] > 0 && s.Gateway["router_in_translated"] > 0
	}, statsTimeout)
	require.NoError(t, err)
	var portLines []string
	for _, name := range sortedKeys(st.Ports) {
		p := st.Ports[name]
		portLines = append(portLines, fmt.Sprintf("%-8s rx %5d packets %8d bytes   tx %5d packets %8d bytes   drops: %s",
			name, p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes, nonZero(p.Drops, "drop_")))
	}
	portLines = append(portLines, "(rx: frames that entered the switch from the port, for guest0 what the guest sent; "+
		"tx: frames the switch delivered out of the port)")
	say(t, "backend port stats (SIGUSR1)", portLines...)
	routing, services := map[string]uint64{}, map[string]uint64{}
	for k, v := range st.Gateway {
		if strings.HasPrefix(k, "router_") || strings.HasPrefix(k, "nat_") {
			routing[k] = v
		} else {
			services[k] = v
		}
	}
	say(t, "router and NAT counters (non-zero): what went through the TAP, NAT flows", groupedNonZero(routing)...)
	say(t, "gateway services counters (non-zero)", groupedNonZero(services)...)

	gs, _ := c.Last("STATS")
	say(t, "the guest's own eth0 counters (the mirror of guest0's)",
		fmt.Sprintf("rx %s packets %s bytes, tx %s packets %s bytes, dropped rx %s tx %s, errors rx %s tx %s",
			gs.Get("rx_packets"), gs.Get("rx_bytes"), gs.Get("tx_packets"), gs.Get("tx_bytes"),
			gs.Get("rx_dropped"), gs.Get("tx_dropped"), gs.Get("rx_errors"), gs.Get("tx_errors")))
	require.NoError(t, g.Wake("done"))
	c = g.Wait()
	require.True(t, c.Passed(), "guest: %s", c.Result())
	w.requireStoppedClean(t)
	say(t, "done", fmt.Sprintf("guest powered off, vhost-arcnet stopped (exit 0) and removed TAP %s and table %s; "+
		"the namespaces go now; %.1fs in all", tap, masqTable, time.Since(start).Seconds()))
}

// demoPreflight fails the demo, with what to do, when something it needs
// is missing (the tests skip instead).
func demoPreflight(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the demo needs root (network namespaces, a TAP device, nftables): run it as root")
	}
	for tool, pkg := range map[string]string{
		qemuBinary: "qemu-system-x86", "ip": "iproute2", "apt-get": "apt", "dpkg-deb": "dpkg",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the demo needs %s (apt-get install %s, or make setup)", tool, pkg)
		}
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Fatalf("the demo needs %s (apt-get install busybox-static, or make setup)", busyboxPath)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("the demo needs /dev/net/tun (modprobe tun): %v", err)
	}
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
