//go:build linux

package hostif

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
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

// captured is a copy of a frame a capturePort received.
type captured struct {
	hdr   virtio.NetHdr
	data  []byte
	queue uint16
}

// capturePort is a datapath.Port that copies every frame it gets into a
// channel (dropping when the channel is full).
type capturePort struct {
	ch    chan captured
	stats datapath.Stats
	mu    sync.Mutex
	queue map[uint16]int
}

func newCapturePort() *capturePort {
	return &capturePort{ch: make(chan captured, 4096), queue: map[uint16]int{}}
}

func (p *capturePort) Name() string           { return "capture" }
func (p *capturePort) Stats() *datapath.Stats { return &p.stats }
func (p *capturePort) Send(frames []datapath.Frame) {
	for _, f := range frames {
		var b []byte
		for _, s := range f.Segs {
			b = append(b, s...)
		}
		p.mu.Lock()
		p.queue[f.Queue]++
		p.mu.Unlock()
		select {
		case p.ch <- captured{hdr: f.Hdr, data: b, queue: f.Queue}:
		default:
		}
	}
}

// wait returns the first captured frame that match accepts, failing the
// test after d.
func (p *capturePort) wait(t testing.TB, d time.Duration, match func(c captured) bool) captured {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case c := <-p.ch:
			if match(c) {
				return c
			}
		case <-timer.C:
			t.Fatal("timed out waiting for a frame")
			return captured{}
		}
	}
}

// ipv4Frame builds an Ethernet + IPv4 frame (no options, DF clear, TTL 64)
// around payload, with the IPv4 header checksum set.
func ipv4Frame(dst, src header.MAC, ipSrc, ipDst netip.Addr, proto uint8, payload []byte) []byte {
	b := make([]byte, 14+20+len(payload))
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], header.EtherTypeIPv4)
	ip := header.IPv4(b[14:])
	ip[0] = 0x45
	ip.SetTotalLength(uint16(20 + len(payload)))
	ip.SetID(1)
	ip.SetTTL(64)
	ip.SetProtocol(proto)
	ip.SetSrc(ipSrc)
	ip.SetDst(ipDst)
	ip.UpdateChecksum()
	copy(b[34:], payload)
	return b
}

// icmpEcho returns an ICMP echo request (RFC 792) with a valid checksum.
func icmpEcho(id, seq uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	b[0] = 8
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], data)
	binary.BigEndian.PutUint16(b[2:], ^header.Checksum(b, 0))
	return b
}

// udpPartial returns a UDP datagram (RFC 768) whose checksum field holds
// the pseudo-header sum, as a frame with VIRTIO_NET_HDR_F_NEEDS_CSUM
// carries it.
func udpPartial(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], header.PseudoHeaderChecksum(17, src, dst, uint16(len(b))))
	copy(b[8:], data)
	return b
}
