//go:build linux

package uplink

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/hostif/vmnettest"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// vmnetWorld is vhost-arcnet with --uplink vmnet in Host, its helper the
// fake vmnet-helper (this test binary, see TestMain) bridging the vmnet
// frames to a TAP "vmnet0" with 192.168.105.1/24 in Host (what vmnet's
// bridge100 is on a Mac), and Host routing between that network and Inet.
type vmnetWorld struct {
	in      *netns.Internet
	be      *arcnet
	g       *guest
	pidFile string
	natAddr netip.Addr
}

func setupVMNet(t *testing.T) *vmnetWorld {
	t.Helper()
	in := newInternet(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pid := filepath.Join(dir, "helper.pid")
	t.Setenv(vmnettest.Env, "1")
	t.Setenv("VMNET_FAKE_TAP", "vmnet0")
	t.Setenv("VMNET_FAKE_LEASES", filepath.Join(dir, "vmnet.leases"))
	t.Setenv("VMNET_FAKE_PIDFILE", pid)
	// Host forwards between vmnet's network and Inet; Inet routes the
	// vmnet network back through Host (no masquerade: the servers see the
	// address vhost-arcnet leased).
	if err := in.Host.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	in.Inet.Run(t, "ip", "route", "add", vmnettest.Subnet.String(), "via", in.HostAddr.String())
	be := startBackend(t, in.Host, "--uplink", "vmnet", "--vmnet-helper", exe)
	t.Cleanup(func() {
		stopClean(t, be)
		if netns.LinkExists(in.Host, "vmnet0") {
			t.Errorf("the helper's TAP vmnet0 outlived vhost-arcnet")
		}
	})
	r, _, err := be.WaitRecord(func(r backend.Record) bool { return r.Msg() == "uplink" && r.String("kind") == "vmnet" }, 0, 10*time.Second)
	if err != nil {
		t.Fatalf("no uplink record: %v", err)
	}
	nat, err := netip.ParseAddr(r.String("nat_address"))
	if err != nil || !vmnettest.Subnet.Contains(nat) {
		t.Fatalf("uplink record %v: want a NAT address in %v", r, vmnettest.Subnet)
	}
	g := newGuest(t, be, vhostusertest.Options{}, 0, "")
	return &vmnetWorld{in: in, be: be, g: g, pidFile: pid, natAddr: nat}
}

// echo runs a TCP connection from the guest to an echo server in Inet and
// checks the server saw it from the vmnet address.
func (w *vmnetWorld) echo(t *testing.T, port, lport uint16) {
	t.Helper()
	srv, peers := echoServer(t, w.in, port)
	c := w.g.dial(srv, lport)
	msg := pattern(3000)
	c.write(msg, false)
	if got := c.read(len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("echo differs: got %d bytes", len(got))
	}
	select {
	case p := <-peers:
		if p.Addr() != w.natAddr {
			t.Errorf("server saw the connection from %v, want vhost-arcnet's vmnet address %v", p, w.natAddr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server never accepted")
	}
	c.rst()
}

// TestVMNetUplink: vhost-arcnet takes its address from the (fake) vmnet
// DHCP server and NATs a guest's TCP connection behind it, through the
// helper's frames and a kernel TAP, to a server in Inet.
func TestVMNetUplink(t *testing.T) {
	w := setupVMNet(t)
	w.echo(t, 7000, 40001)
	gs := w.be.stats().Gateway
	if gs.Num("router_out_translated") == 0 || gs.Num("router_in_translated") == 0 {
		t.Errorf("gateway stats: router_out_translated=%d router_in_translated=%d, want > 0",
			gs.Num("router_out_translated"), gs.Num("router_in_translated"))
	}
}

// TestVMNetHelperDies: the helper is killed; vhost-arcnet logs it,
// restarts it, keeps its address, and the guest connects again.
func TestVMNetHelperDies(t *testing.T) {
	w := setupVMNet(t)
	w.echo(t, 7000, 40001)
	b, err := os.ReadFile(w.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	// The fake helper is vhost-arcnet's child, started for this test;
	// killed by the PID it wrote.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.be.WaitRecord(func(r backend.Record) bool { return r.Msg() == "vmnet: the helper exited; restarting it" }, 0, 10*time.Second); err != nil {
		t.Fatalf("no record of the helper's exit: %v", err)
	}
	_, at, err := w.be.WaitRecord(func(r backend.Record) bool { return r.Msg() == "vmnet: helper restarted" }, 0, 20*time.Second)
	if err != nil {
		t.Fatalf("the helper was not restarted: %v", err)
	}
	// The new helper's TAP has a new MAC: the uplink's ARP after the
	// restart makes the router learn it (its first frames before that
	// go to the old MAC and are lost, and this guest does not
	// retransmit its SYN).
	if _, _, err := w.be.WaitRecord(func(r backend.Record) bool { return r.Msg() == "router: next hop resolved" }, at, 10*time.Second); err != nil {
		t.Fatalf("the router did not learn the new next hop's MAC: %v", err)
	}
	w.echo(t, 7001, 40002)
}
