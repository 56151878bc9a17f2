//go:build linux

package uplink

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/hostif/vmnettest"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
)

// The TAP uplink's defaults (hostif.DefaultLinkNet) and the guest network's.
var (
	linkNet   = netip.MustParsePrefix("198.19.255.252/30")
	hostEnd   = netip.MustParseAddr("198.19.255.253")
	gatewayIP = netip.MustParseAddr("192.168.127.1")
	guestNet  = netip.MustParsePrefix("192.168.127.0/24")
)

// masqTable is the nftables table of --masquerade.
const masqTable = "vhost_arcnet"

// TestMain catches SIGINT and SIGTERM: the running test stops and its
// clean-ups run, so the namespaces, processes and directories it made go
// (see backend.Main).
//
// The vmnet tests run this test binary as vhost-arcnet's vmnet-helper: then
// it is the fake helper (hostif/vmnettest), not the tests.
func TestMain(m *testing.M) {
	if os.Getenv(vmnettest.Env) == "1" {
		os.Exit(vmnettest.Main(os.Args[1:]))
	}
	os.Exit(backend.Main(m))
}

// arcnet is a vhost-arcnet process running in a namespace.
type arcnet struct {
	*backend.Process
	t    testing.TB
	ns   *netns.NS
	sock string
}

// startBackend runs vhost-arcnet --socket DIR/vm.sock --log-format json
// --dns-upstream 127.0.0.1:9 ARGS in ns and waits until it listens. It is
// stopped (SIGTERM, then SIGKILL by its PID) when the test ends if
// stop was not called.
func startBackend(t testing.TB, ns *netns.NS, args ...string) *arcnet {
	t.Helper()
	// A directory that also goes when the clean-ups after an interrupt
	// do not finish (t.TempDir's would stay).
	sock := filepath.Join(backend.WorkDir(t, "arcnet-uplink-", "ARCNET_UPLINK_KEEP"), "vm.sock")
	p := backend.Start(t, backend.Config{
		Name: "vhost-arcnet",
		Args: append([]string{"--socket", sock, "--dns-upstream", "127.0.0.1:9"}, args...),
		Wrap: []string{"ip", "netns", "exec", ns.Name},
	})
	return &arcnet{Process: p, t: t, ns: ns, sock: sock}
}

// gatewayMAC reads the gateway's MAC from the "guest network" record.
func (b *arcnet) gatewayMAC() header.MAC {
	b.t.Helper()
	m, err := b.GatewayMAC(5 * time.Second)
	if err != nil {
		b.t.Fatal(err)
	}
	return m
}

// stats asks for the counters (SIGUSR1): the "port stats" records by port
// and the "gateway stats" record.
func (b *arcnet) stats() backend.Counters {
	b.t.Helper()
	s, err := b.Counters(5 * time.Second)
	if err != nil {
		b.t.Fatalf("stats: %v", err)
	}
	return s
}

// cpuTicks returns the process's user+system time in clock ticks
// (/proc/PID/stat utime+stime).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is f[0], utime field 14 is f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return u + st, nil
}

// clockTick is USER_HZ: /proc times are in 1/100 s on Linux.
const clockTick = 10 * time.Millisecond

// newInternet makes a netns.Internet and registers, before its own
// cleanups (so it runs after them), a check that its namespaces are gone.
func newInternet(t testing.TB) *netns.Internet {
	t.Helper()
	var names []string
	t.Cleanup(func() {
		for _, n := range names {
			if netns.Exists(n) {
				t.Errorf("namespace %s left behind", n)
			}
		}
	})
	in := netns.NewInternet(t)
	names = []string{in.Host.Name, in.Inet.Name}
	return in
}

// leftovers lists what vhost-arcnet's uplink may leave in ns: TAP links
// (arcnet*), routes to the link network, and the masquerade table.
func leftovers(t testing.TB, ns *netns.NS) []string {
	t.Helper()
	var out []string
	nl, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatalf("netlink in %s: %v", ns.Name, err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatalf("link list: %v", err)
	}
	for _, l := range links {
		if a := l.Attrs(); strings.HasPrefix(a.Name, "arcnet") || l.Type() == "tuntap" {
			out = append(out, "link "+a.Name)
		}
	}
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("route list: %v", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok && linkNet.Overlaps(netip.PrefixFrom(p.Unmap(), 32)) {
				out = append(out, "route "+r.Dst.String())
			}
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("nftables list tables: %v", err)
	}
	for _, tb := range tables {
		if tb.Name == masqTable {
			out = append(out, "nftables table "+tb.Name)
		}
	}
	return out
}

// stopClean stops the backend (exit status 0 expected) and checks that it
// left nothing in its namespace.
func stopClean(t testing.TB, b *arcnet) {
	t.Helper()
	if err := b.Stop(10 * time.Second); err != nil {
		t.Errorf("vhost-arcnet exit after SIGTERM: %v", err)
	}
	if l := leftovers(t, b.ns); len(l) > 0 {
		t.Errorf("vhost-arcnet left behind in %s: %v", b.ns.Name, l)
	}
}
