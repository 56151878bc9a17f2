//go:build linux

package uplink

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Benchmarks of the TAP uplink (issue 9 "Speed"). Each runs its own
// measurement once, whatever b.N is, and reports figures with
// b.ReportMetric:
//
//	go test -run '^$' -bench . ./test/uplink/
//
// BenchmarkTCPThroughput interleaves vhost-arcnet and the kernel's own
// forwarding (A B A B) in one run.
const (
	benchRounds = 3
	benchWarmup = 300 * time.Millisecond
	benchWindow = 1500 * time.Millisecond
)

// Ports of the TCP peers in Inet: 5201 counts what it reads, 5202 writes
// until the connection breaks.
const (
	sinkPort   = 5201
	sourcePort = 5202
)

// benchCongestion is the congestion control of the kernel senders (the
// source in Inet, the reference guest's socket): UPLINK_BENCH_CC, cubic
// (Linux's default) if unset. Not the machine's own default: a sysctl
// changes both paths' figures (this test VM runs BBR, which halved both:
// internet-to-guest 9 vs 21 Gbit/s against 19 vs 45 with cubic, its
// pacing leaving the CPUs a third idle), and figures should not depend on
// it unsaid.
func benchCongestion() string {
	if v := os.Getenv("UPLINK_BENCH_CC"); v != "" {
		return v
	}
	return "cubic"
}

// setCongestion sets benchCongestion on a kernel sender's socket, or on a
// listener for the connections it accepts (they inherit it).
func setCongestion(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return setCongestionRaw(rc)
}

func setCongestionRaw(rc syscall.RawConn) error {
	cc := benchCongestion()
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_CONGESTION %q (UPLINK_BENCH_CC; net.ipv4.tcp_available_congestion_control lists what the kernel has): %w", cc, serr)
	}
	return nil
}

// tcpPeers runs the kernel TCP peers in Inet. sunk counts every byte read
// on the sink port.
type tcpPeers struct {
	sink, source netip.AddrPort
	sunk         atomic.Int64
}

func startTCPPeers(b *testing.B, in *netns.Internet) *tcpPeers {
	p := &tcpPeers{}
	ls := in.Inet.ListenTCP(b, netip.AddrPortFrom(in.InetAddr, sinkPort).String())
	lw := in.Inet.ListenTCP(b, netip.AddrPortFrom(in.InetAddr, sourcePort).String())
	p.sink = netns.ServeTCP(b, ls, func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			p.sunk.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	// Set on the listener, before any handshake: a connection accepted
	// with another one (the machine's default) and switched after keeps
	// what that one's init set (BBR's pacing, for one).
	if err := setCongestion(lw); err != nil {
		b.Fatal(err)
	}
	p.source = netns.ServeTCP(b, lw, func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	return p
}

// kernelGuest is the reference: a third namespace routed through Host to
// Inet over veth pairs and the kernel's forwarding (no NAT on this path:
// Inet routes 10.77.0.0/24 back to Host).
func kernelGuest(b *testing.B, in *netns.Internet) *netns.NS {
	gns := netns.New(b, "kguest")
	netns.Veth(b, gns, "eth0", netip.MustParsePrefix("10.77.0.2/24"), in.Host, "kguest0", netip.MustParsePrefix("10.77.0.1/24"))
	gns.Run(b, "ip", "route", "add", "default", "via", "10.77.0.1")
	in.Inet.Run(b, "ip", "route", "add", "10.77.0.0/24", "via", in.HostAddr.String())
	if err := in.Host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		b.Fatalf("ip_forward in Host: %v", err)
	}
	return gns
}

// benchWorld is vhost-arcnet with --uplink tap --masquerade in Host, a Go
// guest with buffers sized for 64 KiB frames, and the kernel reference.
type benchWorld struct {
	in    *netns.Internet
	be    *arcnet
	g     *guest
	kg    *netns.NS
	peers *tcpPeers
	up    string // the uplink's port in the stats records: the TAP or Host's veth
}

// newBenchWorldUplink starts a benchWorld whose guest has queues of qsize
// entries, with --uplink tap --masquerade (kind "tap") or --uplink xdp on
// Host's veth (kind "xdp"; Inet's veth then sends complete checksums, see
// netns.NS.TxChecksumOff).
func newBenchWorldUplink(b *testing.B, opts vhostusertest.Options, qsize uint16, kind string) *benchWorld {
	logLoad(b)
	b.Cleanup(func() { logLoad(b) })
	in := newInternet(b)
	args, up := []string{"--uplink", "tap", "--masquerade"}, tapName
	if kind == "xdp" {
		in.Inet.TxChecksumOff(b, in.InetLink)
		args, up = []string{"--uplink", "xdp:" + in.HostLink, "--xdp-ports", xdpPorts}, in.HostLink
	}
	// UPLINK_BENCH_ARGS: more vhost-arcnet flags (--poll, --cpuprofile FILE).
	args = append(args, strings.Fields(os.Getenv("UPLINK_BENCH_ARGS"))...)
	be := startBackend(b, in.Host, args...)
	b.Cleanup(func() { stopClean(b, be) })
	g := newGuestQ(b, be, opts, 0, "", qsize)
	return &benchWorld{in: in, be: be, g: g, up: up}
}

// BenchmarkTCPThroughput: one TCP stream through --uplink tap, the Go
// guest driving 64 KiB TSO frames (guest-to-internet) or receiving the
// kernel's GSO frames (internet-to-guest), against a kernel TCP peer in
// Inet; interleaved with the same stream between two kernel sockets, one
// in a third namespace routed through Host (veth + forwarding).
// The xdp- sub-benchmarks run the same through --uplink xdp on Host's veth.
func BenchmarkTCPThroughput(b *testing.B) {
	for _, sub := range []struct{ kind, dir string }{
		{"tap", "guest-to-internet"}, {"tap", "internet-to-guest"},
		{"xdp", "guest-to-internet"}, {"xdp", "internet-to-guest"},
	} {
		kind, dir := sub.kind, sub.dir
		name := dir
		if kind == "xdp" {
			name = "xdp-" + dir
		}
		b.Run(name, func(b *testing.B) {
			qsize := uint16(256)
			if v := os.Getenv("UPLINK_BENCH_QUEUE"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					b.Fatalf("UPLINK_BENCH_QUEUE=%q", v)
				}
				qsize = uint16(n)
			}
			// KeepRxBuffers: the Go guest posts its receive buffers as
			// Linux does, without zeroing them (64 KiB of memclr a frame,
			// 8 % of the test process's time on the two CPUs the backend
			// shares with it).
			w := newBenchWorldUplink(b, vhostusertest.Options{SlotSize: 16 << 10, RegionSize: 64 << 20 * uint64(max(1, qsize/256)), KeepRxBuffers: true}, qsize, kind)
			w.kg = kernelGuest(b, w.in)
			w.peers = startTCPPeers(b, w.in)
			if w.g.f.Features()&virtio.NetFGuestTSO4 == 0 || w.g.f.Features()&virtio.NetFHostTSO4 == 0 {
				b.Fatalf("no TSO4 negotiated (features %#x)", w.g.f.Features())
			}
			var arc, kern []float64
			for r := range benchRounds {
				lport := uint16(41000 + r)
				if dir == "guest-to-internet" {
					arc = append(arc, w.arcSend(b, lport))
					kern = append(kern, w.kernelSend(b))
				} else {
					arc = append(arc, w.arcRecv(b, lport))
					kern = append(kern, w.kernelRecv(b))
				}
			}
			ma, mk := median(arc), median(kern)
			b.Logf("%s (kernel senders' congestion control %s): vhost-arcnet %.2f Gbit/s (%.2f..%.2f), kernel veth+forwarding %.2f Gbit/s (%.2f..%.2f), ratio %.2f; rounds A/B: %.2f / %.2f",
				dir, benchCongestion(), ma, slices.Min(arc), slices.Max(arc), mk, slices.Min(kern), slices.Max(kern), ma/mk, arc, kern)
			b.ReportMetric(ma, "arcnet-Gbps")
			b.ReportMetric(mk, "kernel-Gbps")
			b.ReportMetric(ma/mk, "ratio")
		})
	}
}

// logLoad logs the load average: the machine is shared, and these
// figures mean little when other work holds the cores (BENCHMARKS.md).
func logLoad(b *testing.B) {
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.Logf("load average: %s", strings.TrimSpace(string(l)))
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func gbps(bytes int64, d time.Duration) float64 { return float64(bytes) * 8 / d.Seconds() / 1e9 }

// measure calls sample at the end of the warm-up and at the end of the
// window and returns the difference in Gbit/s; now reports whether to stop.
type measure struct {
	start, t0 time.Time
	c0        int64
	done      bool
	gbps      float64
}

func (m *measure) tick(counter int64) (stop bool) {
	now := time.Now()
	switch {
	case m.t0.IsZero() && now.Sub(m.start) >= benchWarmup:
		m.t0, m.c0 = now, counter
	case !m.t0.IsZero() && now.Sub(m.t0) >= benchWindow:
		m.gbps = gbps(counter-m.c0, now.Sub(m.t0))
		m.done = true
	}
	return m.done
}

// senderRTO is the Go guest sender's retransmission timeout: after it
// without new data acknowledged, it sends again from the oldest byte not
// acknowledged (Linux's minimum RTO is 200 ms).
const senderRTO = 300 * time.Millisecond

// arcSend: the guest keeps the peer's window full of TSO frames and reads
// ACKs from its receive queue.
func (w *benchWorld) arcSend(b *testing.B, lport uint16) float64 {
	g := w.g
	c := g.dial(w.peers.sink, lport)
	c.discard = true
	tmpl := make([]byte, 34+tcpHdrBytes+tsoPayload) // zero payload
	hdr := partialHdr(true)
	cpu0 := w.cpu(b)
	s0 := w.be.stats()
	m := &measure{start: time.Now()}
	progress := time.Now()
	dupAcks, goBacks := 0, 0
	probe := false
	for !m.tick(w.peers.sunk.Load()) {
		added := 0
		// After a timeout one frame goes even into a closed window, as
		// TCP's window probe (RFC 9293 §3.8.6.1): the ACK that reopened
		// it may be the one that was lost, and the answer to the probe
		// carries the window.
		for (c.sndNxt-c.sndUna+tsoPayload <= c.sndWnd || probe) && added < 16 {
			probe = false
			c.headers(tmpl, header.TCPFlagACK, c.sndNxt, nil, true)
			if err := g.f.AddFrame(0, hdr, tmpl, vhostusertest.LayoutSplit); err != nil {
				b.Fatal(err)
			}
			c.sndNxt += tsoPayload
			added++
		}
		if added > 0 {
			if err := g.f.Flush(0); err != nil {
				b.Fatal(err)
			}
		}
		una := c.sndUna
		n := g.drainHeaders(func(h virtio.NetHdr, head []byte, _ int) {
			s, ok := c.seg(head)
			if !ok || s.Flags()&header.TCPFlagACK == 0 {
				return
			}
			if a := s.Ack(); int32(a-c.sndUna) > 0 && int32(a-c.sndNxt) <= 0 {
				c.sndUna = a
				dupAcks = 0
			} else if a == c.sndUna && c.sndNxt != c.sndUna {
				dupAcks++
			}
			c.sndWnd = uint32(s.Window()) << c.sndShift
		})
		switch {
		case c.sndUna != una:
			progress = time.Now()
		case dupAcks >= 3 || time.Since(progress) > senderRTO:
			c.sndNxt, dupAcks, progress = c.sndUna, 0, time.Now() // go back N
			goBacks++
			probe = true
		}
		if n == 0 && added == 0 {
			// Nothing to send until an ACK comes: sleep on the receive
			// queue's call, but no longer than the retransmission timer
			// (a lost segment brings no ACK: WaitCall's own timeout, 10
			// s, made whole rounds of 0 Gbit/s).
			_, _ = g.f.WaitCallFor(0, max(time.Until(progress.Add(senderRTO)), time.Millisecond))
		}
	}
	w.logCPU(b, "guest-to-internet", cpu0, m)
	s1 := w.be.stats()
	b.Logf("vhost-arcnet guest-to-internet round: the guest went back %d times (3 duplicate ACKs or %v without progress)", goBacks, senderRTO)
	if d := dropDeltas(s0, s1); len(d) > 0 {
		b.Logf("vhost-arcnet drop counters that moved: %v", d)
	}
	c.rst()
	w.settle(b)
	return m.gbps
}

// logCPU logs vhost-arcnet's CPU share over a round that started with
// cpu0 ticks.
func (w *benchWorld) logCPU(b *testing.B, dir string, cpu0 uint64, m *measure) {
	d := time.Since(m.start)
	cpu := time.Duration(w.cpu(b)-cpu0) * clockTick
	b.Logf("vhost-arcnet %s round: %.2f Gbit/s, vhost-arcnet CPU %.0f%% of one core", dir, m.gbps, 100*cpu.Seconds()/d.Seconds())
}

// arcRecv: the guest reads the kernel's stream (GSO frames) and ACKs each
// batch it drains; the payload is not copied out of the guest's buffers.
func (w *benchWorld) arcRecv(b *testing.B, lport uint16) float64 {
	g := w.g
	c := g.dial(w.peers.source, lport)
	c.discard = true
	s0, tapDrop0, vethDrop0 := w.be.stats(), w.tapTxDropped(b), txDropped(b, w.in.Inet, w.in.InetLink)
	// Bytes received in order, counted in 64 bits: the sequence number
	// space wraps every 4 GiB, a few seconds at 20 Gbit/s.
	var received int64
	last := c.rcvNxt
	cpu0 := w.cpu(b)
	m := &measure{start: time.Now()}
	drains, drained, waits := 0, 0, 0
	for !m.tick(received) {
		needAck := false
		n := g.drainHeaders(func(h virtio.NetHdr, head []byte, _ int) {
			s, ok := c.seg(head)
			if !ok {
				return
			}
			ip := header.IPv4(head[14:])
			data := int(ip.TotalLength()) - ip.HeaderLen() - s.HeaderLen()
			if data <= 0 {
				return
			}
			needAck = true
			if c.accept(s.Seq(), data) {
				if h.GSOType != virtio.NetHdrGSONone {
					c.gsoFrames++
				}
			} else {
				c.ooo++
				c.ack() // a duplicate ACK per segment: fast retransmit
				needAck = false
			}
		})
		if needAck {
			c.ack()
		}
		received += int64(c.rcvNxt - last)
		last = c.rcvNxt
		if n == 0 {
			_, _ = g.f.WaitCall(0)
			waits++
		} else {
			drains++
			drained += n
		}
	}
	w.logCPU(b, "internet-to-guest", cpu0, m)
	// How the guest's time went: frames per call it was woken for (the
	// backend calls after a quarter of the ring or when the TAP is empty)
	// and how often it slept.
	b.Logf("vhost-arcnet internet-to-guest round: the guest drained %d times, %.1f frames each, and slept %d times",
		drains, float64(drained)/float64(max(drains, 1)), waits)
	s1 := w.be.stats()
	b.Logf("vhost-arcnet internet-to-guest round: %d GSO frames in order, %d out of order (loss or reordering before the guest); guest0 drop_no_buffer +%d, %s tx_dropped (kernel side) +%d, Inet's %s tx_dropped +%d",
		c.gsoFrames, c.ooo, s1.Ports["guest0"].Num("drop_no_buffer")-s0.Ports["guest0"].Num("drop_no_buffer"),
		tapName, w.tapTxDropped(b)-tapDrop0, w.in.InetLink, txDropped(b, w.in.Inet, w.in.InetLink)-vethDrop0)
	if d := dropDeltas(s0, s1); len(d) > 0 {
		b.Logf("vhost-arcnet drop counters that moved: %v", d)
	}
	if s1.XDP != nil {
		b.Logf("xdp sockets (kernel drops before vhost-arcnet): rx_ring_full +%d, fill_ring_empty +%d, rx_dropped +%d",
			s1.XDP.Num("rx_ring_full")-s0.XDP.Num("rx_ring_full"), s1.XDP.Num("fill_ring_empty")-s0.XDP.Num("fill_ring_empty"),
			s1.XDP.Num("rx_dropped")-s0.XDP.Num("rx_dropped"))
	}
	c.rst()
	w.settle(b)
	return m.gbps
}

// accept books n bytes at seq for a receiver that keeps no data: in
// order (or overlapping the next expected byte) they advance rcvNxt, and
// so do the out-of-order ranges they join; beyond it they are remembered
// (a reassembly queue without the bytes) and accept returns false.
func (c *tcpConn) accept(seq uint32, n int) bool {
	end := seq + uint32(n)
	if int32(seq-c.rcvNxt) > 0 {
		if len(c.oooRanges) < 256 {
			c.oooRanges = append(c.oooRanges, [2]uint32{seq, end})
		}
		return false
	}
	if int32(end-c.rcvNxt) > 0 {
		c.rcvNxt = end
	}
	for merged := true; merged; {
		merged = false
		kept := c.oooRanges[:0]
		for _, r := range c.oooRanges {
			switch {
			case int32(r[1]-c.rcvNxt) <= 0: // below: drop
			case int32(r[0]-c.rcvNxt) <= 0:
				c.rcvNxt, merged = r[1], true
			default:
				kept = append(kept, r)
			}
		}
		c.oooRanges = kept
	}
	return true
}

// dropDeltas lists the drop counters (ports' drop_*, the router's
// *_drop_*) that moved between s0 and s1.
func dropDeltas(s0, s1 backend.Counters) []string {
	var out []string
	diff := func(name string, r0, r1 backend.Record) {
		for k := range r1 {
			if strings.Contains(k, "drop_") && r1.Num(k) != r0.Num(k) {
				out = append(out, fmt.Sprintf("%s %s +%d", name, k, r1.Num(k)-r0.Num(k)))
			}
		}
	}
	for p, r1 := range s1.Ports {
		diff(p, s0.Ports[p], r1)
	}
	diff("gateway", s0.Gateway, s1.Gateway)
	slices.Sort(out)
	return out
}

// tapTxDropped is the kernel's count of frames it dropped on their way
// into the TAP (its queue to vhost-arcnet full).
// It is 0 with the XDP uplink (its drops are its sockets' XDP_STATISTICS).
func (w *benchWorld) tapTxDropped(b *testing.B) uint64 {
	if w.up != tapName {
		return 0
	}
	return txDropped(b, w.in.Host, tapName)
}

// txDropped is the kernel's count of frames link name in ns dropped on
// transmit. On Inet's veth end these are the frames the Host end did not
// take: with an XDP program on it, its ring of 256 frames was full
// (VETH_RING_SIZE), which an unpaced sender's bursts bring about.
func txDropped(b *testing.B, ns *netns.NS, name string) uint64 {
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		b.Fatal(err)
	}
	return l.Attrs().Statistics.TxDropped
}

// settle drains what is left in the guest's receive queue after a round.
func (w *benchWorld) settle(b *testing.B) {
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		w.g.f.Drain()
		time.Sleep(10 * time.Millisecond)
	}
}

// drainHeaders consumes every frame in the guest's receive queue and calls
// fn with its header, its first bytes (up to 128 bytes of the frame) and
// its length, without copying the rest; buffers are reposted.
func (g *guest) drainHeaders(fn func(h virtio.NetHdr, head []byte, n int)) int {
	d := g.f.Ring(0).Driver
	hlen := virtio.NetHdrLen(g.f.Features())
	mrg := g.f.Features()&virtio.NetFMrgRxbuf != 0
	var buf [virtio.NetHdrSize + 128]byte
	frames := 0
	for {
		e, ok := d.Used()
		if !ok {
			break
		}
		frames++
		if e.ID >= uint32(d.Size()) || int(e.Len) < hlen {
			continue
		}
		k := d.ReadIn(uint16(e.ID), buf[:min(int(e.Len), len(buf))])
		var hb [virtio.NetHdrSize]byte
		copy(hb[:], buf[:hlen])
		var h virtio.NetHdr
		h.Decode(hb[:])
		n := int(e.Len) - hlen
		if mrg {
			for i := 1; i < int(h.NumBuffers); i++ {
				more, ok := d.Used()
				if !ok {
					break
				}
				n += int(more.Len)
			}
		}
		fn(h, buf[hlen:k], n)
	}
	if frames > 0 && d.FreeDescs() >= min(int(d.Size())/2, 32) {
		if err := g.f.FillRx(0); err != nil {
			g.t.Fatal(err)
		}
	}
	return frames
}

// kernelSend: a kernel socket in the reference guest namespace writes
// 256 KiB buffers to the sink.
func (w *benchWorld) kernelSend(b *testing.B) float64 {
	return w.kernelStream(b, w.peers.sink, w.peers.sunk.Load, func(conn net.Conn, buf []byte) error {
		_, err := conn.Write(buf)
		return err
	})
}

// kernelRecv: a kernel socket in the reference guest namespace reads the
// source's stream.
func (w *benchWorld) kernelRecv(b *testing.B) float64 {
	var got atomic.Int64
	return w.kernelStream(b, w.peers.source, got.Load, func(conn net.Conn, buf []byte) error {
		n, err := conn.Read(buf)
		got.Add(int64(n))
		return err
	})
}

// kernelStream connects a kernel socket in the reference guest namespace to
// peer and calls step with a 256 KiB buffer until it fails or the
// measurement of the byte count counted has its figure; it returns the
// figure (Gbit/s).
func (w *benchWorld) kernelStream(b *testing.B, peer netip.AddrPort, counted func() int64, step func(conn net.Conn, buf []byte) error) float64 {
	conn, err := w.kg.DialTCPControl(b, peer.String(), 5*time.Second, func(_, _ string, rc syscall.RawConn) error {
		return setCongestionRaw(rc)
	})
	if err != nil {
		b.Fatalf("kernel path: %v", err)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256<<10)
		for !stop.Load() {
			if step(conn, buf) != nil {
				return
			}
		}
	}()
	m := &measure{start: time.Now()}
	for !m.tick(counted()) {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	conn.Close()
	<-done
	return m.gbps
}

// BenchmarkUDP64: 64-byte frames (60 B without FCS: 18 bytes of UDP
// payload), one flow, in Mpps, with CPU time per frame.
//
// guest-to-tap: the Go guest sends to a socket in Inet that never reads,
// through the router, the NAT, the TAP and the host's forwarding. Frames
// are counted at the TAP (vhost-arcnet's tx counter) and where they arrive
// in Inet (its veth's rx counter); vhost-arcnet's CPU is /proc/PID/stat
// utime+stime, which includes the kernel's forwarding of each frame done
// in its write(2) to the TAP. Interleaved with the reference: a kernel
// socket in a third namespace routed through Host sends the same frames
// with sendmmsg (64 per call), counted at the same Inet veth; its CPU is
// the test process's (the sender goroutine plus, again, the forwarding
// done in its system calls).
//
// tap-to-guest: a kernel socket in Inet answers the guest's flow with a
// stream (sendmmsg, 64 per call) through the host's conntrack, the TAP,
// the NAT and the router; the guest takes frames as its calls come.
// Counted at the TAP (rx) and in the guest; vhost-arcnet's CPU per frame
// read from the TAP. The sender in Inet shares the two cores.
//
// guest-to-xdp and xdp-to-guest: the same with --uplink xdp on Host's veth
// (issue 10): frames go between the guest and Inet through AF_XDP, never
// through Host's stack; counted at the uplink's port (Host's veth, its
// AF_XDP sockets). Inet's veth has TX checksum offload off here (see
// netns.NS.TxChecksumOff), which its kernel sender pays for in the reference runs.
func BenchmarkUDP64(b *testing.B) {
	for _, kind := range []string{"tap", "xdp"} {
		b.Run("guest-to-"+kind, func(b *testing.B) { udp64Out(b, kind) })
		b.Run(kind+"-to-guest", func(b *testing.B) { udp64In(b, kind) })
	}
}

// udp64Out is BenchmarkUDP64's guest-to-tap or guest-to-xdp.
func udp64Out(b *testing.B, kind string) {
	w := newBenchWorldUplink(b, vhostusertest.Options{}, 256, kind)
	w.kg = kernelGuest(b, w.in)
	// A socket that never reads: the kernel drops at its buffer,
	// and sends no port unreachable.
	sink := w.in.Inet.ListenUDP(b, netip.AddrPortFrom(w.in.InetAddr, 9000).String())
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	inetNL := w.in.Inet.Netlink(b)
	arrived := func() uint64 {
		l, err := inetNL.LinkByName(w.in.InetLink)
		if err != nil {
			b.Fatal(err)
		}
		return l.Attrs().Statistics.RxPackets
	}
	g := w.g
	fr := g.out(dst.Addr(), header.ProtoUDP, 64, udp(netip.AddrPortFrom(g.ip, 6000), dst, make([]byte, 18)))
	if len(fr) != 60 {
		b.Fatalf("frame of %d bytes", len(fr))
	}
	kconn := w.kg.DialUDP(b, dst.String())
	const roundTime = time.Second
	var arcMpps, arcNs, kMpps, kNs []float64
	for range 2 {
		// A: vhost-arcnet.
		g.txSettled()
		s0, cpu0, in0, t0 := w.be.stats(), w.cpu(b), arrived(), time.Now()
		sent := 0
		for time.Since(t0) < roundTime {
			for range 64 {
				if err := g.f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSplit); err != nil {
					b.Fatal(err)
				}
			}
			sent += 64
			if err := g.f.Flush(0); err != nil {
				b.Fatal(err)
			}
			g.f.Drain() // ARP or ICMP, if any
		}
		for !g.f.TxDone(0) {
			time.Sleep(100 * time.Microsecond)
		}
		t1, cpu1, in1 := time.Now(), w.cpu(b), arrived()
		s1 := w.be.stats()
		tap := s1.Ports[w.up].Num("tx_packets") - s0.Ports[w.up].Num("tx_packets")
		mpps, ns := w.reportPPS(b, "vhost-arcnet guest-to-"+kind, sent, tap, in1-in0, t1.Sub(t0), cpu1-cpu0, s0, s1)
		arcMpps, arcNs = append(arcMpps, mpps), append(arcNs, ns)

		// B: the kernel's path.
		mpps, ns = kernelUDPSend(b, kconn, roundTime, arrived)
		kMpps, kNs = append(kMpps, mpps), append(kNs, ns)
	}
	b.Logf("guest-to-%s 64 B: vhost-arcnet %.3f Mpps (%v), %.0f ns CPU/frame (%v); kernel veth+forwarding sender %.3f Mpps (%v), %.0f ns CPU/frame (%v)",
		kind, median(arcMpps), arcMpps, median(arcNs), arcNs, median(kMpps), kMpps, median(kNs), kNs)
	b.ReportMetric(median(arcMpps), "arcnet-Mpps")
	b.ReportMetric(median(arcNs), "arcnet-cpu-ns/frame")
	b.ReportMetric(median(kMpps), "kernel-Mpps")
	b.ReportMetric(median(kNs), "kernel-cpu-ns/frame")
}

// udp64In is BenchmarkUDP64's tap-to-guest or xdp-to-guest.
func udp64In(b *testing.B, kind string) {
	w := newBenchWorldUplink(b, vhostusertest.Options{}, 256, kind)
	g := w.g
	src := w.in.Inet.ListenUDP(b, netip.AddrPortFrom(w.in.InetAddr, 9001).String())
	dst := src.LocalAddr().(*net.UDPAddr).AddrPort()
	// The guest opens the flow; the source answers it with a stream.
	g.send(g.out(dst.Addr(), header.ProtoUDP, 64, udp(netip.AddrPortFrom(g.ip, 6001), dst, make([]byte, 18))))
	buf := make([]byte, 64)
	_ = src.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, peer, err := src.ReadFromUDPAddrPort(buf)
	if err != nil {
		b.Fatalf("the guest's first datagram: %v", err)
	}
	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendBatches(ipv4.NewPacketConn(src), net.UDPAddrFromAddrPort(peer), &stop, &sent)
	}()
	time.Sleep(200 * time.Millisecond) // warm up
	got := 0
	s0, cpu0, sent0, t0 := w.be.stats(), w.cpu(b), sent.Load(), time.Now()
	for time.Since(t0) < 2*time.Second {
		n, _ := g.f.Drain()
		got += n
		if n == 0 {
			_, _ = g.f.WaitCall(0) // as a guest with interrupts on
		}
	}
	t1, cpu1, sent1 := time.Now(), w.cpu(b), sent.Load()
	stop.Store(true)
	<-done
	s1 := w.be.stats()
	tap := s1.Ports[w.up].Num("rx_packets") - s0.Ports[w.up].Num("rx_packets")
	b.Logf("kernel sender in Inet: %.3f Mpps offered", float64(sent1-sent0)/t1.Sub(t0).Seconds()/1e6)
	mpps, ns := w.reportPPS(b, "vhost-arcnet "+kind+"-to-guest", got, tap, uint64(got), t1.Sub(t0), cpu1-cpu0, s0, s1)
	b.ReportMetric(mpps, "arcnet-Mpps")
	b.ReportMetric(ns, "arcnet-cpu-ns/frame")
	b.ReportMetric(float64(got)/t1.Sub(t0).Seconds()/1e6, "guest-Mpps")
}

// sendBatches sends 18-byte datagrams to to, 64 per sendmmsg, until stop.
func sendBatches(pc *ipv4.PacketConn, to net.Addr, stop *atomic.Bool, sent *atomic.Int64) {
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 18)}, Addr: to}
	}
	for !stop.Load() {
		n, err := pc.WriteBatch(msgs, 0)
		sent.Add(int64(n))
		if err != nil {
			time.Sleep(10 * time.Microsecond) // ENOBUFS and the like
		}
	}
}

// kernelUDPSend is the reference for guest-to-tap: conn, a UDP socket in
// the reference guest namespace, sends for d; frames are counted where
// they arrive in Inet, CPU is the test process's.
func kernelUDPSend(b *testing.B, conn *net.UDPConn, d time.Duration, arrived func() uint64) (mpps, nsPerFrame float64) {
	self := os.Getpid()
	cpu0, err := cpuTicks(self)
	if err != nil {
		b.Fatal(err)
	}
	in0, t0 := arrived(), time.Now()
	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendBatches(ipv4.NewPacketConn(conn), nil, &stop, &sent)
	}()
	time.Sleep(d)
	stop.Store(true)
	<-done
	time.Sleep(20 * time.Millisecond)
	t1, in1 := time.Now(), arrived()
	cpu1, err := cpuTicks(self)
	if err != nil {
		b.Fatal(err)
	}
	el := t1.Sub(t0)
	n := in1 - in0
	cpu := time.Duration(cpu1-cpu0) * clockTick
	mpps = float64(n) / el.Seconds() / 1e6
	if n > 0 {
		nsPerFrame = float64(cpu.Nanoseconds()) / float64(n)
	}
	b.Logf("kernel guest-to-inet: sent %d, %d arrived in Inet in %v = %.3f Mpps; test process CPU %v (%.0f%% of one core) = %.0f ns/frame",
		sent.Load(), n, el.Round(time.Millisecond), mpps, cpu, 100*cpu.Seconds()/el.Seconds(), nsPerFrame)
	return mpps, nsPerFrame
}

func (w *benchWorld) cpu(b *testing.B) uint64 {
	v, err := cpuTicks(w.be.Pid())
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// reportPPS logs frames through the uplink (TAP or XDP) per second and
// vhost-arcnet's CPU per uplink frame and returns both; guest counts what the guest sent or
// received, arrived what reached the far end.
func (w *benchWorld) reportPPS(b *testing.B, dir string, guest int, tap, arrived uint64, d time.Duration, ticks uint64, s0, s1 backend.Counters) (mpps, nsPer float64) {
	cpu := time.Duration(ticks) * clockTick
	mpps = float64(tap) / d.Seconds() / 1e6
	if tap > 0 {
		nsPer = float64(cpu.Nanoseconds()) / float64(tap)
	}
	gp := func(k string) uint64 { return s1.Ports["guest0"].Num(k) - s0.Ports["guest0"].Num(k) }
	b.Logf("%s: %d frames at the uplink in %v = %.3f Mpps; guest %d frames, %d arrived (%.3f Mpps); vhost-arcnet CPU %v (%.0f%% of one core) = %.0f ns/frame; guest0 drop_no_buffer +%d, router translated out +%d in +%d",
		dir, tap, d.Round(time.Millisecond), mpps, guest, arrived, float64(arrived)/d.Seconds()/1e6, cpu, 100*cpu.Seconds()/d.Seconds(), nsPer,
		gp("drop_no_buffer"), s1.Gateway.Num("router_out_translated")-s0.Gateway.Num("router_out_translated"),
		s1.Gateway.Num("router_in_translated")-s0.Gateway.Num("router_in_translated"))
	return mpps, nsPer
}
