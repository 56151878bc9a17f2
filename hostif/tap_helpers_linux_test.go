//go:build linux

package hostif

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

// inNetns moves the test's goroutine, locked to its OS thread, into a new
// network namespace for the rest of the test, and back in cleanup. The
// namespace is anonymous: it goes away, with every device and nftables
// table in it, when the thread leaves it. Child processes started by the
// test's goroutine (ip) run in it too. Skips unless root.
func inNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TAP devices)")
	}
	// The thread is never unlocked: should restoring fail, the runtime
	// ends the thread with the goroutine instead of reusing it elsewhere.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restoring the network namespace: %v", err)
		}
		ns.Close()
		orig.Close()
	})
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
}

// run runs a command (ip) in the test's namespace and fails the test on error.
func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addVeth adds an up veth device with address addr (if not empty); its
// peer, NAME+"p", stays down. (Veth, not dummy: the test kernel may lack
// the dummy driver.)
func addVeth(t testing.TB, name, addr string) netlink.Link {
	t.Helper()
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatalf("adding veth %s: %v", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		a, err := netlink.ParseAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return link
}

// openTestTAP opens a TAP in create mode and closes it in cleanup.
func openTestTAP(t testing.TB, opt TAPOptions) *TAP {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	tap, err := OpenTAP(opt)
	if err != nil {
		t.Fatalf("OpenTAP: %v", err)
	}
	t.Cleanup(func() {
		if err := tap.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tap
}

// peerMAC is the MAC address the tests use for vhost-arcnet's side.
var peerMAC = header.MAC{0x02, 0xa7, 0xc0, 0, 0, 1}

// addPeerNeigh adds a permanent neighbour entry for the TAP's NAT address,
// so the kernel sends to it without ARP.
func addPeerNeigh(t testing.TB, tap *TAP) {
	t.Helper()
	link, err := netlink.LinkByName(tap.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighAdd(&netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           tap.NATAddr().AsSlice(),
		HardwareAddr: net.HardwareAddr(peerMAC[:]),
	}); err != nil {
		t.Fatalf("neighbour: %v", err)
	}
}

// startCapture starts tap with a capture port as its peer and a permanent
// neighbour entry for the NAT address (see addPeerNeigh), and returns the
// port.
func startCapture(t testing.TB, tap *TAP) *datapathtest.Capture {
	t.Helper()
	peer := datapathtest.NewCapture("capture")
	tap.SetPeer(peer)
	tap.Start()
	addPeerNeigh(t, tap)
	return peer
}

// ipv4Frame builds an Ethernet + IPv4 frame from vhost-arcnet's side
// (peerMAC) to dst, from ipSrc to ipDst (ID 1, no options, DF clear, TTL
// 64), around f's transport and payload.
func ipv4Frame(dst header.MAC, ipSrc, ipDst netip.Addr, f headertest.Frame) []byte {
	f.Dst, f.Src = dst, peerMAC
	f.IPv4 = &headertest.IPv4Header{ID: 1, Src: ipSrc, Dst: ipDst}
	return f.Build()
}
