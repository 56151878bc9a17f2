//go:build linux

package hostif

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

// ipForward returns the namespace's net.ipv4.ip_forward.
func ipForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}

// chainsOf returns the names of the chains of table name (family ip), or
// nil when there is no such table.
func chainsOf(t *testing.T, name string) []string {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ListTableOfFamily(name, nftables.TableFamilyIPv4); err != nil {
		return nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range chains {
		if c.Table.Name == name {
			names = append(names, c.Name)
		}
	}
	return names
}

// addDefaultRoute gives the namespace an uplink "wan0" with a default route.
func addDefaultRoute(t *testing.T) {
	t.Helper()
	link := addVeth(t, "wan0", "10.200.0.2/24")
	gw := net.ParseIP("10.200.0.1")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		t.Fatalf("default route: %v", err)
	}
}

func TestMasquerade(t *testing.T) {
	inNetns(t)
	addDefaultRoute(t)
	if got := ipForward(t); got != "0" {
		t.Fatalf("ip_forward in a new namespace is %s", got)
	}
	m, err := SetupMasquerade(MasqueradeOptions{Source: DefaultLinkNet})
	if err != nil {
		t.Fatal(err)
	}
	if got := chainsOf(t, DefaultMasqueradeTable); len(got) != 1 || got[0] != "postrouting" {
		t.Errorf("chains %v, want [postrouting]", got)
	}
	conn, _ := nftables.New()
	tbl := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: DefaultMasqueradeTable}
	rules, err := conn.GetRules(tbl, &nftables.Chain{Name: "postrouting", Table: tbl})
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v, %v; want one", rules, err)
	}
	var oif, masq bool
	for _, e := range rules[0].Exprs {
		switch e := e.(type) {
		case *expr.Cmp:
			if bytes.HasPrefix(e.Data, []byte("wan0\x00")) {
				oif = true
			}
		case *expr.Masq:
			masq = true
		}
	}
	if !oif || !masq {
		t.Errorf("rule %+v: want oifname wan0 and masquerade", rules[0].Exprs)
	}
	if got := ipForward(t); got != "1" {
		t.Errorf("ip_forward %s after Setup, want 1", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := chainsOf(t, DefaultMasqueradeTable); got != nil {
		t.Errorf("table still there after Close: chains %v", got)
	}
	if got := ipForward(t); got != "0" {
		t.Errorf("ip_forward %s after Close, want 0 again", got)
	}
}

// TestMasqueradeKeepsForwarding checks that Close leaves ip_forward on
// when it was on before Setup.
func TestMasqueradeKeepsForwarding(t *testing.T) {
	inNetns(t)
	if err := os.WriteFile(ipForwardPath, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	m, err := SetupMasquerade(MasqueradeOptions{Table: "arc_test", Source: DefaultLinkNet, OutIface: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ipForward(t); got != "1" {
		t.Errorf("ip_forward %s after Close, want 1", got)
	}
}

func TestMasqueradeReplacesStaleTable(t *testing.T) {
	inNetns(t)
	addDefaultRoute(t)
	// A table a crashed run left behind, with a chain of its own.
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: DefaultMasqueradeTable})
	conn.AddChain(&nftables.Chain{Name: "stale", Table: tbl})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := SetupMasquerade(MasqueradeOptions{Source: DefaultLinkNet})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := chainsOf(t, DefaultMasqueradeTable); strings.Join(got, ",") != "postrouting" {
		t.Errorf("chains %v, want [postrouting]", got)
	}
}

func TestMasqueradeErrors(t *testing.T) {
	inNetns(t)
	// No default route in a new namespace.
	_, err := SetupMasquerade(MasqueradeOptions{Source: DefaultLinkNet})
	if err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
		t.Errorf("without a default route: %v", err)
	}
	_, err = SetupMasquerade(MasqueradeOptions{OutIface: "lo"})
	if err == nil || !strings.Contains(err.Error(), "not an IPv4 prefix") {
		t.Errorf("without a source: %v", err)
	}
	if got := chainsOf(t, DefaultMasqueradeTable); got != nil {
		t.Errorf("a table was left behind: %v", got)
	}
}

// TestMasqueradeForwards sends a UDP datagram from the NAT address through
// the TAP to a server in a second namespace behind wan0 (the "internet"):
// it arrives from wan0's address, masqueraded.
func TestMasqueradeForwards(t *testing.T) {
	inNetns(t)
	here, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	inet, err := netns.New() // switches the thread to it
	if err != nil {
		t.Fatal(err)
	}
	defer inet.Close()
	if err := netns.Set(here); err != nil {
		t.Fatal(err)
	}
	addDefaultRoute(t)
	peerLink, err := netlink.LinkByName("wan0p")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peerLink, int(inet)); err != nil {
		t.Fatal(err)
	}
	// The server side, in the internet namespace.
	if err := netns.Set(inet); err != nil {
		t.Fatal(err)
	}
	var srv *net.UDPConn
	func() {
		defer func() {
			if err := netns.Set(here); err != nil {
				t.Fatal(err)
			}
		}()
		l, err := netlink.LinkByName("wan0p")
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr("10.200.0.1/24")
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.200.0.1"), Port: 7777})
		if err != nil {
			t.Fatal(err)
		}
	}()
	defer srv.Close()

	tap := openTestTAP(t, TAPOptions{})
	m, err := SetupMasquerade(MasqueradeOptions{Source: tap.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dst := netip.MustParseAddr("10.200.0.1")
	payload := []byte("through the masquerade")
	frame := ipv4Frame(tap.HostMAC(), tap.NATAddr(), dst, headertest.Frame{UDP: &headertest.UDPHeader{SrcPort: 4000, DstPort: 7777}, Payload: payload})
	buf := make([]byte, 100)
	for i := 0; ; i++ {
		// The first datagram may be lost while the kernel resolves
		// 10.200.0.1 (one packet queued per neighbour); send a few.
		tap.Send([]datapath.Frame{{Segs: [][]byte{frame}, Len: len(frame)}})
		srv.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := srv.ReadFromUDP(buf)
		if err != nil {
			if i < 4 {
				continue
			}
			t.Fatalf("no datagram at the server: %v", err)
		}
		if string(buf[:n]) != string(payload) || from.IP.String() != "10.200.0.2" {
			t.Fatalf("got %q from %v, want %q from 10.200.0.2", buf[:n], from, payload)
		}
		return
	}
}
