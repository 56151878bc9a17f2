//go:build linux

package hostif

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// The TAP must be a datapath.Port.
var _ datapath.Port = (*TAP)(nil)

func TestOpenTAPCreate(t *testing.T) {
	inNetns(t)
	tap, err := OpenTAP(TAPOptions{Name: "arc0", MTU: 9000, Queues: 1})
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("arc0")
	if err != nil {
		t.Fatal(err)
	}
	a := link.Attrs()
	if a.MTU != 9000 || tap.MTU() != 9000 {
		t.Errorf("MTU %d, TAP says %d; want 9000", a.MTU, tap.MTU())
	}
	if a.Flags&net.FlagUp == 0 {
		t.Error("TAP is not up")
	}
	if mac := tap.HostMAC(); !bytes.Equal(a.HardwareAddr, mac[:]) {
		t.Errorf("HostMAC %v, device %v", tap.HostMAC(), a.HardwareAddr)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "198.19.255.253/30" {
		t.Errorf("addresses %v, %v; want 198.19.255.253/30", addrs, err)
	}
	if tap.HostAddr().String() != "198.19.255.253" || tap.NATAddr().String() != "198.19.255.254" || tap.Prefix() != DefaultLinkNet {
		t.Errorf("host %v nat %v prefix %v", tap.HostAddr(), tap.NATAddr(), tap.Prefix())
	}
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Flags&netlink.TUNTAP_VNET_HDR == 0 {
		t.Errorf("device %#v is not a TAP with vnet_hdr", link)
	}
	off := tap.Offloads()
	if !off.Csum || !off.TSO4 || !off.TSO6 {
		t.Errorf("offloads %+v, want at least csum and TSO", off)
	}
	t.Logf("offloads %+v", off)
	tap.Start()
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tap.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := netlink.LinkByName("arc0"); err == nil {
		t.Error("TAP still exists after Close")
	}
}

func TestOpenTAPDefaults(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{LinkNet: netip.MustParsePrefix("10.77.0.9/31")})
	if !strings.HasPrefix(tap.Name(), "arcnet") || tap.MTU() != 1500 || tap.Queues() != 1 {
		t.Errorf("name %q MTU %d queues %d", tap.Name(), tap.MTU(), tap.Queues())
	}
	if tap.HostAddr().String() != "10.77.0.8" || tap.NATAddr().String() != "10.77.0.9" {
		t.Errorf("host %v nat %v", tap.HostAddr(), tap.NATAddr())
	}
}

// links returns the names of the namespace's devices.
func links(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func TestOpenTAPErrors(t *testing.T) {
	inNetns(t)
	addVeth(t, "busy0", "10.50.0.1/24")
	addVeth(t, "route0", "198.19.255.240/28")
	run(t, "ip", "tuntap", "add", "tun0", "mode", "tun")
	run(t, "ip", "tuntap", "add", "noaddr0", "mode", "tap", "vnet_hdr")
	run(t, "ip", "tuntap", "add", "single0", "mode", "tap", "vnet_hdr")
	run(t, "ip", "tuntap", "add", "host32", "mode", "tap", "vnet_hdr")
	run(t, "ip", "addr", "add", "10.60.0.1/32", "dev", "host32")
	before := links(t)
	for _, tc := range []struct {
		name string
		opt  TAPOptions
		want string
	}{
		{"name in use", TAPOptions{Name: "busy0", LinkNet: netip.MustParsePrefix("10.9.0.0/30")}, "already exists"},
		{"route collision", TAPOptions{}, "overlaps the host's route 198.19.255.240/28 dev route0: choose another with --uplink-net"},
		{"route collision 2", TAPOptions{LinkNet: netip.MustParsePrefix("10.50.0.4/30")}, "dev busy0"},
		{"bad link net", TAPOptions{LinkNet: netip.MustParsePrefix("10.9.0.1/32")}, "one address"},
		{"queues", TAPOptions{Queues: 17}, "queues must be between 1 and 16"},
		{"MTU", TAPOptions{MTU: 70000, LinkNet: netip.MustParsePrefix("10.9.0.0/30")}, "MTU 70000 is out of range"},
		{"bad name", TAPOptions{Name: "a/b"}, "not a valid interface name"},
		{"long name", TAPOptions{Name: "abcdefghijklmnopq"}, "not a valid interface name"},
		{"existing no name", TAPOptions{Existing: true}, "--uplink tap:NAME"},
		{"existing missing", TAPOptions{Name: "nope0", Existing: true}, "create it with ip tuntap add nope0 mode tap user $USER vnet_hdr"},
		{"existing not a TAP", TAPOptions{Name: "busy0", Existing: true}, "busy0 is a veth device, not a TAP"},
		{"existing TUN", TAPOptions{Name: "tun0", Existing: true}, "TUN (layer 3)"},
		{"existing no address", TAPOptions{Name: "noaddr0", Existing: true}, "ip addr add 198.19.255.253/30 dev noaddr0"},
		{"existing /32", TAPOptions{Name: "host32", Existing: true}, "give it a /30 or a larger network"},
		{"existing single-queue", TAPOptions{Name: "single0", Existing: true, Queues: 2}, "multi_queue"},
	} {
		// No t.Run: a subtest's goroutine would not be in the namespace.
		tap, err := OpenTAP(tc.opt)
		if err == nil {
			tap.Close()
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q, want one line containing %q", tc.name, err, tc.want)
		}
	}
	if after := links(t); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("devices before %v, after %v", before, after)
	}
}

// withoutCapNetAdmin runs f with CAP_NET_ADMIN dropped from the test
// thread's effective set (capabilities are per thread, and inNetns locked
// the thread), as an unprivileged user would run.
func withoutCapNetAdmin(t *testing.T, f func()) {
	t.Helper()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	saved := data
	data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Capset(&hdr, &saved[0]); err != nil {
			t.Fatalf("restoring capabilities: %v", err)
		}
	}()
	f()
}

func TestOpenTAPNoCapNetAdmin(t *testing.T) {
	inNetns(t)
	// A persistent TAP owned by our user, set up by an administrator.
	run(t, "ip", "tuntap", "add", "own0", "mode", "tap", "user", "0", "vnet_hdr")
	run(t, "ip", "addr", "add", "10.91.0.1/30", "dev", "own0")
	run(t, "ip", "link", "set", "own0", "up")
	// One owned by somebody else.
	run(t, "ip", "tuntap", "add", "other0", "mode", "tap", "user", "12345", "vnet_hdr")
	run(t, "ip", "addr", "add", "10.92.0.1/30", "dev", "other0")
	withoutCapNetAdmin(t, func() {
		tap, err := OpenTAP(TAPOptions{Name: "nocap0"})
		if err == nil {
			tap.Close()
			t.Error("created a TAP without CAP_NET_ADMIN")
		} else if err.Error() != capNetAdminMsg {
			t.Errorf("error %q, want %q", err, capNetAdminMsg)
		}
		tap, err = OpenTAP(TAPOptions{Name: "other0", Existing: true})
		if err == nil {
			tap.Close()
			t.Error("attached to another user's TAP")
		} else if !strings.Contains(err.Error(), "belongs to another user") {
			t.Errorf("another user's TAP: %v", err)
		}
		tap, err = OpenTAP(TAPOptions{Name: "own0", Existing: true})
		if err != nil {
			t.Fatalf("our own persistent TAP: %v", err)
		}
		if tap.NATAddr().String() != "10.91.0.2" || !tap.Offloads().Csum {
			t.Errorf("nat %v offloads %+v", tap.NATAddr(), tap.Offloads())
		}
		if err := tap.Close(); err != nil {
			t.Error(err)
		}
	})
	if _, err := netlink.LinkByName("nocap0"); err == nil {
		t.Error("a device was left behind")
	}
}

func TestOpenTAPNoTunDevice(t *testing.T) {
	inNetns(t)
	saved := tunDevice
	tunDevice = "/nonexistent/net/tun"
	defer func() { tunDevice = saved }()
	for _, opt := range []TAPOptions{{Name: "notun0"}, {Name: "lo", Existing: true}} {
		if opt.Existing {
			run(t, "ip", "tuntap", "add", "tap9", "mode", "tap")
			run(t, "ip", "addr", "add", "10.93.0.1/30", "dev", "tap9")
			opt.Name = "tap9"
		}
		tap, err := OpenTAP(opt)
		if err == nil {
			tap.Close()
			t.Fatal("no error")
		}
		if !strings.Contains(err.Error(), "load the tun module (modprobe tun)") {
			t.Errorf("error %q, want one saying modprobe tun", err)
		}
	}
	if _, err := netlink.LinkByName("notun0"); err == nil {
		t.Error("a device was left behind")
	}
}

func TestOpenTAPExisting(t *testing.T) {
	inNetns(t)
	run(t, "ip", "tuntap", "add", "ex0", "mode", "tap", "vnet_hdr")
	run(t, "ip", "addr", "add", "10.99.0.7/24", "dev", "ex0")
	run(t, "ip", "link", "set", "ex0", "mtu", "4000")
	tap, err := OpenTAP(TAPOptions{Name: "ex0", Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	if tap.HostAddr().String() != "10.99.0.7" || tap.NATAddr().String() != "10.99.0.1" || tap.Prefix().String() != "10.99.0.0/24" || tap.MTU() != 4000 {
		t.Errorf("host %v nat %v prefix %v MTU %d", tap.HostAddr(), tap.NATAddr(), tap.Prefix(), tap.MTU())
	}
	link, _ := netlink.LinkByName("ex0")
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Error("existing TAP not set up")
	}
	// A single-queue TAP takes one reader only.
	if tap2, err := OpenTAP(TAPOptions{Name: "ex0", Existing: true}); err == nil {
		tap2.Close()
		t.Error("a busy TAP opened twice")
	} else if !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("busy TAP: %v", err)
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("ex0"); err != nil {
		t.Errorf("an existing TAP was deleted by Close: %v", err)
	}

	// A multi-queue persistent TAP made without vnet_hdr: the attach sets
	// it (the kernel takes IFF_VNET_HDR from TUNSETIFF).
	run(t, "ip", "tuntap", "add", "mq0", "mode", "tap", "multi_queue")
	run(t, "ip", "addr", "add", "10.98.0.1/30", "dev", "mq0")
	tap, err = OpenTAP(TAPOptions{Name: "mq0", Existing: true, Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	if tap.Queues() != 2 || tap.NATAddr().String() != "10.98.0.2" {
		t.Errorf("queues %d nat %v", tap.Queues(), tap.NATAddr())
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
}

// echoFrame is an ICMP echo request from the NAT address to the host.
func echoFrame(tap *TAP, seq uint16) []byte {
	return ipv4Frame(tap.HostMAC(), tap.NATAddr(), tap.HostAddr(), headertest.Frame{
		ICMP: &headertest.ICMPHeader{Type: header.ICMPv4Echo, Rest: 0x4242<<16 | uint32(seq)}, Payload: []byte("vhost-arcnet hostif test")})
}

func TestTAPSendEcho(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{})
	// The kernel answers NATAddr: it needs its MAC. The permanent entry
	// stands in for the router's ARP answer.
	peer := startCapture(t, tap)
	frame := echoFrame(tap, 1)
	tap.Send([]datapath.Frame{{Segs: [][]byte{frame[:20], frame[20:]}, Len: len(frame)}})
	reply := peer.Wait(t, 5*time.Second, func(c headertest.Record) bool {
		d := c.Data
		return len(d) >= 42 && binary.BigEndian.Uint16(d[12:]) == header.EtherTypeIPv4 && d[23] == 1 && d[34] == 0
	})
	d := reply.Data
	if mac := tap.HostMAC(); !bytes.Equal(d[0:6], peerMAC[:]) || !bytes.Equal(d[6:12], mac[:]) {
		t.Errorf("reply MACs %x -> %x", d[6:12], d[0:6])
	}
	ip := header.IPv4(d[14:])
	if ip.Src() != tap.HostAddr() || ip.Dst() != tap.NATAddr() || binary.BigEndian.Uint16(d[38:]) != 0x4242 {
		t.Errorf("reply %v -> %v id %#x", ip.Src(), ip.Dst(), binary.BigEndian.Uint16(d[38:]))
	}
	if tap.Stats().TxPackets.Load() != 1 || tap.Stats().RxPackets.Load() == 0 {
		t.Errorf("tx %d rx %d", tap.Stats().TxPackets.Load(), tap.Stats().RxPackets.Load())
	}
}

// TestTAPRxGSO sends 8 x 1000 bytes with UDP_SEGMENT from a kernel socket
// to an address behind the TAP: with USO accepted, the TAP's reader gets
// one VIRTIO_NET_HDR_GSO_UDP_L4 frame; without (the default, since the
// switch cannot segment UDP_L4 for guests), eight plain datagrams.
func TestTAPRxGSO(t *testing.T) {
	t.Run("default", func(t *testing.T) { testTAPRxGSO(t, false) })
	t.Run("uso", func(t *testing.T) { testTAPRxGSO(t, true) })
}

func testTAPRxGSO(t *testing.T, uso bool) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{USO: uso})
	if uso && !tap.USOAccepted() {
		t.Skip("the kernel did not accept USO (TUN_F_USO4, Linux 6.2)")
	}
	if !uso && tap.USOAccepted() {
		t.Fatal("USO accepted without TAPOptions.USO")
	}
	peer := startCapture(t, tap)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: tap.HostAddr().AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, _ := conn.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	payload := bytes.Repeat([]byte("0123456789"), 800)
	if _, err := conn.WriteToUDP(payload, &net.UDPAddr{IP: tap.NATAddr().AsSlice(), Port: 9999}); err != nil {
		t.Fatal(err)
	}
	c := peer.Wait(t, 5*time.Second, func(c headertest.Record) bool {
		return len(c.Data) > 42 && c.Data[23] == 17 && binary.BigEndian.Uint16(c.Data[36:]) == 9999
	})
	if !uso {
		if c.Hdr.GSOType != virtio.NetHdrGSONone || len(c.Data) != 14+20+8+1000 {
			t.Fatalf("frame of %d bytes, hdr %+v; want a plain datagram of 1042 bytes", len(c.Data), c.Hdr)
		}
		return
	}
	if c.Hdr.GSOType != virtio.NetHdrGSOUDPL4 || c.Hdr.GSOSize != 1000 || len(c.Data) != 14+20+8+8000 {
		t.Fatalf("frame of %d bytes, hdr %+v; want one UDP_L4 GSO frame of 8042 bytes", len(c.Data), c.Hdr)
	}
	if c.Hdr.Flags&virtio.NetHdrFNeedsCsum == 0 || c.Hdr.CsumStart != 34 || c.Hdr.CsumOffset != 6 {
		t.Errorf("checksum metadata %+v", c.Hdr)
	}
}

// TestTAPSendGSO writes one VIRTIO_NET_HDR_GSO_UDP_L4 frame of 8 x 1000
// bytes with a partial checksum: the kernel segments it and a socket in
// the namespace gets 8 datagrams.
func TestTAPSendGSO(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: tap.HostAddr().AsSlice(), Port: 5555})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data := bytes.Repeat([]byte("abcdefghij"), 800)
	frame, hdr := headertest.Frame{Dst: tap.HostMAC(), Src: peerMAC, IPv4: &headertest.IPv4Header{ID: 1, Src: tap.NATAddr(), Dst: tap.HostAddr()},
		UDP: &headertest.UDPHeader{SrcPort: 1234, DstPort: 5555}, Payload: data}.BuildGSO(virtio.NetHdrGSOUDPL4, 1000)
	tap.Send([]datapath.Frame{{Hdr: hdr, Segs: [][]byte{frame[:42], frame[42:]}, Len: len(frame)}})
	if n := tap.Stats().TxPackets.Load(); n != 1 {
		t.Fatalf("tx %d, drops malformed %d", n, tap.Stats().Drops(datapath.DropMalformed))
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 9000)
	got := 0
	for got < 8 {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", got, err)
		}
		if n != 1000 || !bytes.Equal(buf[:n], data[got*1000:(got+1)*1000]) || from.Port != 1234 {
			t.Fatalf("datagram %d: %d bytes from %v", got, n, from)
		}
		got++
	}
}

func TestTAPMultiQueue(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{Queues: 2})
	if tap.Queues() != 2 {
		t.Fatalf("queues %d", tap.Queues())
	}
	link, _ := netlink.LinkByName(tap.Name())
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tt.Queues != 2 {
		t.Errorf("device %+v: want multi_queue with 2 queues", link)
	}
	peer := startCapture(t, tap)
	// Flows from 64 source ports: the tun driver spreads them over the
	// queues by flow hash (tun_automq_select_queue).
	for i := range 64 {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: tap.HostAddr().AsSlice()}, &net.UDPAddr{IP: tap.NATAddr().AsSlice(), Port: 9000 + i})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		q0, q1 := peer.QueueCount(0), peer.QueueCount(1)
		if q0 > 0 && q1 > 0 && q0+q1 >= 64 {
			t.Logf("queue 0: %d frames, queue 1: %d", q0, q1)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("frames per queue %d and %d; want both queues to receive", peer.QueueCount(0), peer.QueueCount(1))
}

// otherHostFrames returns n 64-byte frames for a MAC that is not the
// host's: the kernel drops them early (PACKET_OTHERHOST).
func otherHostFrames(tap *TAP, n int) []datapath.Frame {
	other := header.MAC{0x02, 0, 0, 0, 0, 0x99}
	frames := make([]datapath.Frame, n)
	for i := range frames {
		b := ipv4Frame(other, tap.NATAddr(), tap.HostAddr(), headertest.Frame{
			UDP: &headertest.UDPHeader{SrcPort: 1, DstPort: 9, Csum: headertest.CsumPartial}, Payload: make([]byte, 64-42)})
		frames[i] = datapath.Frame{Segs: [][]byte{b[:34], b[34:]}, Len: len(b)}
	}
	return frames
}

func TestTAPSendAllocs(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{})
	frames := otherHostFrames(tap, datapath.MaxBatch)
	tap.Send(frames) // warm up
	if n := testing.AllocsPerRun(100, func() { tap.Send(frames) }); n != 0 {
		t.Errorf("Send of a batch: %v allocations", n)
	}
	if d := tap.Stats().Drops(datapath.DropMalformed) + tap.Stats().Drops(datapath.DropNoBuffer); d != 0 {
		t.Errorf("%d frames dropped", d)
	}
}

// countPort counts frames without allocating.
type countPort struct {
	stats datapath.Stats
}

func (p *countPort) Name() string                 { return "count" }
func (p *countPort) Stats() *datapath.Stats       { return &p.stats }
func (p *countPort) Send(frames []datapath.Frame) { p.stats.TxPackets.Add(uint64(len(frames))) }

// TestTAPDeliverAllocs checks the read path's per-frame work (decode and
// hand-over) for allocations, on buffers filled as the kernel would.
func TestTAPDeliverAllocs(t *testing.T) {
	tap := &TAP{offload: tapOffloadsUSO}
	q := &tapQueue{tap: tap, idx: 1}
	q.initReader()
	frame := ipv4Frame(header.MAC{1}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), headertest.Frame{
		UDP: &headertest.UDPHeader{SrcPort: 1, DstPort: 2, Csum: headertest.CsumPartial}, Payload: make([]byte, 100)})
	hdr := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
	for i := range q.bufs {
		hdr.Encode(q.bufs[i])
		q.lens[i] = virtio.NetHdrSize + copy(q.bufs[i][virtio.NetHdrSize:], frame)
	}
	peer := &countPort{}
	tap.SetPeer(peer)
	q.n = datapath.MaxBatch
	if n := testing.AllocsPerRun(100, q.deliver); n != 0 {
		t.Errorf("deliver: %v allocations", n)
	}
	if peer.stats.TxPackets.Load() != 101*datapath.MaxBatch || tap.stats.Drops(datapath.DropMalformed) != 0 {
		t.Errorf("peer got %d frames, %d malformed", peer.stats.TxPackets.Load(), tap.stats.Drops(datapath.DropMalformed))
	}
	frames, _, _ := q.decode(1)
	if f := frames[0]; f.Len != len(frame) || !bytes.Equal(f.Segs[0], frame) || f.Queue != 1 || f.Hdr != hdr {
		t.Errorf("decoded %+v", f)
	}
}

func TestValidRxHdr(t *testing.T) {
	csum := virtio.NetHdrFNeedsCsum
	for _, tc := range []struct {
		name string
		h    virtio.NetHdr
		off  int
		ok   bool
	}{
		{"plain", virtio.NetHdr{}, 0, true},
		{"data valid", virtio.NetHdr{Flags: virtio.NetHdrFDataValid}, 0, true},
		{"csum", virtio.NetHdr{Flags: csum, CsumStart: 34, CsumOffset: 6}, 0, true},
		{"csum outside", virtio.NetHdr{Flags: csum, CsumStart: 95, CsumOffset: 4}, 0, false},
		{"unknown flag", virtio.NetHdr{Flags: 0x80}, 0, false},
		{"ECN without GSO", virtio.NetHdr{GSOType: virtio.NetHdrGSOECN}, tapOffloads, false},
		{"TSO4", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448, HdrLen: 54, CsumStart: 34, CsumOffset: 16}, tapOffloads, true},
		{"TSO4 not negotiated", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, tunFCsum, false},
		{"TSO4 ECN", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOTCPv4 | virtio.NetHdrGSOECN, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, tapOffloads, true},
		{"TSO4 ECN not negotiated", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOTCPv4 | virtio.NetHdrGSOECN, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, tapOffloads &^ tunFTSOECN, false},
		{"TSO without csum", virtio.NetHdr{GSOType: virtio.NetHdrGSOTCPv6, GSOSize: 1448}, tapOffloads, false},
		{"GSO size 0", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOUDPL4, CsumStart: 34, CsumOffset: 6}, tapOffloads, false},
		{"USO", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOUDPL4, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}, tapOffloadsUSO, true},
		{"USO ECN", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOUDPL4 | virtio.NetHdrGSOECN, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}, tapOffloads, false},
		{"UFO", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOUDP, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}, tapOffloads, false},
		{"hdr_len beyond", virtio.NetHdr{Flags: csum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448, HdrLen: 101, CsumStart: 34, CsumOffset: 16}, tapOffloads, false},
	} {
		if got := validRxHdr(&tc.h, 100, tc.off); got != tc.ok {
			t.Errorf("%s: valid %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// FuzzValidRxHdr checks that a header validRxHdr accepts has its checksum
// and header ranges inside the frame.
func FuzzValidRxHdr(f *testing.F) {
	f.Add(make([]byte, virtio.NetHdrSize), 100)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if len(b) < virtio.NetHdrSize || n < 0 || n > 65549 {
			return
		}
		var h virtio.NetHdr
		h.Decode(b)
		if !validRxHdr(&h, n, tapOffloads) {
			return
		}
		if h.Flags&virtio.NetHdrFNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > n {
			t.Fatalf("checksum range outside the frame: %+v n=%d", h, n)
		}
		if h.GSOType != virtio.NetHdrGSONone && (h.GSOSize == 0 || int(h.HdrLen) > n) {
			t.Fatalf("bad GSO header accepted: %+v n=%d", h, n)
		}
	})
}

func TestTAPSendAfterClose(t *testing.T) {
	inNetns(t)
	tap, err := OpenTAP(TAPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tap.Start()
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	tap.Send(otherHostFrames(tap, 3))
	if tap.Stats().Drops(datapath.DropNoQueue) != 3 {
		t.Errorf("drops %d, want 3 no_queue", tap.Stats().Drops(datapath.DropNoQueue))
	}
	tap.Start() // no effect after Close
}

// BenchmarkTAPSend writes 64-byte frames in batches of datapath.MaxBatch;
// the kernel drops them early (destination MAC of another host).
func BenchmarkTAPSend(b *testing.B) {
	inNetns(b)
	tap := openTestTAP(b, TAPOptions{})
	frames := otherHostFrames(tap, datapath.MaxBatch)
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += datapath.MaxBatch {
		tap.Send(frames[:min(datapath.MaxBatch, b.N-i)])
	}
	b.StopTimer()
	if d := tap.Stats().Drops(datapath.DropMalformed) + tap.Stats().Drops(datapath.DropNoBuffer); d != 0 {
		b.Errorf("%d frames dropped", d)
	}
}

// tcpFrame returns a frame with a TCP segment (RFC 9293 §3.1, no options)
// from the NAT address to the host. With partial, the checksum field holds
// the pseudo-header sum (VIRTIO_NET_HDR_F_NEEDS_CSUM); else the full
// checksum.
func tcpFrame(tap *TAP, sport, dport uint16, seq, ack uint32, flags uint8, data []byte, partial bool) []byte {
	h := headertest.TCPHeader{SrcPort: sport, DstPort: dport, Seq: seq, Ack: ack, Flags: flags, Window: 65535}
	if partial {
		h.Csum = headertest.CsumPartial
	}
	return ipv4Frame(tap.HostMAC(), tap.NATAddr(), tap.HostAddr(), headertest.Frame{TCP: &h, Payload: data})
}

// TestTAPSendTSO plays a TCP client on the NAT address against a kernel
// TCP server on the host's end: after the handshake it writes one
// VIRTIO_NET_HDR_GSO_TCPV4 frame of 8 x 1000 bytes, and the server reads
// the 8000 bytes.
func TestTAPSendTSO(t *testing.T) {
	inNetns(t)
	tap := openTestTAP(t, TAPOptions{})
	peer := startCapture(t, tap)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: tap.HostAddr().AsSlice(), Port: 6000})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const (
		sport = 40000
		syn   = 0x02
		ack   = 0x10
		psh   = 0x08
	)
	send := func(hdr virtio.NetHdr, f []byte) {
		tap.Send([]datapath.Frame{{Hdr: hdr, Segs: [][]byte{f[:54], f[54:]}, Len: len(f)}})
	}
	send(virtio.NetHdr{}, tcpFrame(tap, sport, 6000, 1000, 0, syn, nil, false))
	synAck := peer.Wait(t, 5*time.Second, func(c headertest.Record) bool {
		d := c.Data
		return len(d) >= 54 && d[23] == 6 && binary.BigEndian.Uint16(d[34:]) == 6000 && d[47]&(syn|ack) == syn|ack
	})
	isn := binary.BigEndian.Uint32(synAck.Data[38:])
	send(virtio.NetHdr{}, tcpFrame(tap, sport, 6000, 1001, isn+1, ack, nil, false))
	data := bytes.Repeat([]byte("0123456789abcdefghij"), 400)
	send(virtio.NetHdr{
		Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4,
		HdrLen: 54, GSOSize: 1000, CsumStart: 34, CsumOffset: 16,
	}, tcpFrame(tap, sport, 6000, 1001, isn+1, ack|psh, data, true))
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	conn, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("server read: %v (tx %d, malformed %d)", err, tap.Stats().TxPackets.Load(), tap.Stats().Drops(datapath.DropMalformed))
	}
	if !bytes.Equal(got, data) {
		t.Error("server read other bytes than sent")
	}
}

// BenchmarkTAPReceive sends 64-byte UDP datagrams (18 bytes of payload)
// from a kernel socket through the TAP to a counting peer; it reports the
// frames the peer got per second and the ones the kernel dropped when the
// reader fell behind (the TAP's tx queue is full).
func BenchmarkTAPReceive(b *testing.B) {
	inNetns(b)
	tap := openTestTAP(b, TAPOptions{})
	peer := &countPort{}
	tap.SetPeer(peer)
	tap.Start()
	addPeerNeigh(b, tap)
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: tap.HostAddr().AsSlice()}, &net.UDPAddr{IP: tap.NATAddr().AsSlice(), Port: 9})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	payload := make([]byte, 64-42)
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		conn.Write(payload)
	}
	deadline := time.Now().Add(2 * time.Second)
	for peer.stats.TxPackets.Load() < uint64(b.N) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	got := peer.stats.TxPackets.Load()
	b.ReportMetric(float64(got)/time.Since(start).Seconds()/1e6, "Mframes/s")
	b.ReportMetric(float64(uint64(b.N)-min(got, uint64(b.N)))/float64(b.N), "lost/op")
}

// TestTAPDeletedUnderneath deletes an attached persistent TAP: the reader
// stops on its own, Send counts drops, and Close returns.
func TestTAPDeletedUnderneath(t *testing.T) {
	inNetns(t)
	run(t, "ip", "tuntap", "add", "gone0", "mode", "tap", "vnet_hdr")
	run(t, "ip", "addr", "add", "10.97.0.1/30", "dev", "gone0")
	tap, err := OpenTAP(TAPOptions{Name: "gone0", Existing: true, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	tap.SetPeer(datapathtest.NewCapture("capture"))
	tap.Start()
	run(t, "ip", "link", "del", "gone0")
	frames := otherHostFrames(tap, 2)
	tap.Send(frames)
	if tap.Stats().TxPackets.Load() != 0 || tap.Stats().Drops(datapath.DropNoQueue) != 2 {
		t.Errorf("tx %d, no_queue %d; want 0 and 2", tap.Stats().TxPackets.Load(), tap.Stats().Drops(datapath.DropNoQueue))
	}
	done := make(chan error)
	go func() { done <- tap.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs after the device was deleted")
	}
}
