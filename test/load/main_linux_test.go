//go:build linux

package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestMain catches SIGINT and SIGTERM: the running test stops and its
// clean-ups run (see backend.Main).
func TestMain(m *testing.M) {
	os.Exit(backend.Main(m))
}

// The guest network's defaults (--subnet).
var (
	gatewayIP = netip.MustParseAddr("192.168.127.1")
	guestNet  = netip.MustParsePrefix("192.168.127.0/24")
)

// arcnet is a vhost-arcnet process with its socket and metrics address.
type arcnet struct {
	*backend.Process
	t       testing.TB
	sock    string
	metrics string // http://127.0.0.1:PORT/metrics
	client  *http.Client
}

// startBackend runs vhost-arcnet --uplink none on a socket in a fresh
// directory, with its metrics on a free loopback port, and waits until it
// listens. With ns, it runs inside ns (`ip netns exec`) with --uplink tap,
// its metrics on ns's loopback.
func startBackend(t testing.TB, ns *netns.NS, args ...string) *arcnet {
	t.Helper()
	return startBackendWrapped(t, ns, nil, args...)
}

// startBackendWrapped is startBackend with vhost-arcnet run under wrap
// (backend.Config.Wrap; inside ns's `ip netns exec` with ns).
func startBackendWrapped(t testing.TB, ns *netns.NS, wrap []string, args ...string) *arcnet {
	t.Helper()
	dir := backend.WorkDir(t, "arcnet-load-", "LOAD_KEEP")
	sock := filepath.Join(dir, "vm.sock")
	// No keep-alive: a scrape leaves no connection (fd, goroutines) in
	// the process between two measurements.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	uplink := "none"
	addr := ""
	if ns != nil {
		uplink, wrap, addr = "tap", append([]string{"ip", "netns", "exec", ns.Name}, wrap...), "127.0.0.1:9100"
		client = ns.HTTPClient(t) // no keep-alive either
		client.Timeout = 5 * time.Second
	} else {
		addr = freeLoopback(t)
	}
	p := backend.Start(t, backend.Config{
		Name: "vhost-arcnet",
		Args: append([]string{"--socket", sock, "--uplink", uplink, "--dns-upstream", "127.0.0.1:9",
			"--lease-file", "none", "--metrics", addr}, args...),
		Wrap: wrap,
	})
	return &arcnet{Process: p, t: t, sock: sock, metrics: "http://" + addr + "/metrics", client: client}
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

// freeLoopback returns a loopback TCP address nobody listens on now.
func freeLoopback(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// usage is what the test measures of the process from outside.
type usage struct {
	RSS, RssAnon    uint64 // bytes (/proc/PID/status VmRSS, RssAnon)
	Threads         int    // /proc/PID/status Threads (OS threads)
	FDs             int    // entries of /proc/PID/fd
	Goroutines      int    // go_goroutines (the scrape's own included)
	HeapInuse, Heap uint64 // go_memstats_heap_inuse_bytes, go_memstats_heap_alloc_bytes
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB (anon %.1f MiB), %d threads, %d fds, %d goroutines, heap in use %.1f MiB (allocated %.1f MiB)",
		mib(u.RSS), mib(u.RssAnon), u.Threads, u.FDs, u.Goroutines, mib(u.HeapInuse), mib(u.Heap))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// usage measures the process now.
func (b *arcnet) usage() (usage, error) {
	var u usage
	pid := b.Pid()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "Threads":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return u, fmt.Errorf("/proc/%d/status: %q", pid, l)
			}
			u.Threads = n
			continue
		case "VmRSS":
			dst = &u.RSS
		case "RssAnon":
			dst = &u.RssAnon
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return u, fmt.Errorf("/proc/%d/status: %q", pid, l)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return u, fmt.Errorf("/proc/%d/status: %q", pid, l)
		}
		*dst = n << 10
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(ents)
	m, err := b.scrape()
	if err != nil {
		return u, err
	}
	u.Goroutines = int(m["go_goroutines"])
	u.HeapInuse = uint64(m["go_memstats_heap_inuse_bytes"])
	u.Heap = uint64(m["go_memstats_heap_alloc_bytes"])
	if u.Goroutines == 0 {
		return u, errors.New("metrics without go_goroutines")
	}
	return u, nil
}

// scrape reads the process's metrics without labels.
func (b *arcnet) scrape() (map[string]float64, error) {
	resp, err := b.client.Get(b.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || strings.ContainsRune(l, '{') {
			continue
		}
		k, v, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			m[k] = f
		}
	}
	return m, nil
}

// settle measures the process until ok accepts the measurement or timeout
// passes; it returns the last measurement and whether ok accepted it.
func (b *arcnet) settle(timeout time.Duration, ok func(usage) bool) (usage, bool) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		u, err := b.usage()
		if err != nil {
			b.t.Fatalf("measure vhost-arcnet: %v", err)
		}
		if ok(u) || time.Now().After(deadline) {
			return u, ok(u)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// baseline measures the process once its fds and goroutines have stopped
// moving (three equal measurements in a row).
func (b *arcnet) baseline() usage {
	b.t.Helper()
	var prev []usage
	u, _ := b.settle(5*time.Second, func(u usage) bool {
		prev = append(prev, u)
		n := len(prev)
		return n >= 3 && prev[n-1].FDs == prev[n-2].FDs && prev[n-2].FDs == prev[n-3].FDs &&
			prev[n-1].Goroutines == prev[n-2].Goroutines && prev[n-2].Goroutines == prev[n-3].Goroutines
	})
	return u
}

// detached waits for the next msg="guest port detached" record at index
// from or later and returns the index after it.
func (b *arcnet) detached(from int) (int, error) {
	_, i, err := b.WaitRecord(func(r backend.Record) bool { return r.Msg() == "guest port detached" }, from, 10*time.Second)
	return i + 1, err
}

// portTotals sums the "port stats" records of one SIGUSR1 over the guest
// ports (rx: frames the guests sent, tx: frames written into their receive
// queues) and the drops of every port, by reason.
type portTotals struct {
	Rx, Tx uint64
	Drops  map[string]uint64
}

func (b *arcnet) totals() (portTotals, backend.Record) {
	b.t.Helper()
	c, err := b.Counters(10 * time.Second)
	if err != nil {
		b.t.Fatalf("counters: %v", err)
	}
	pt := portTotals{Drops: map[string]uint64{}}
	for _, r := range c.Ports {
		s, err := backend.ParsePortStats(r)
		if err != nil {
			b.t.Fatal(err)
		}
		if strings.HasPrefix(s.Port, "guest") {
			pt.Rx += s.RxPackets
			pt.Tx += s.TxPackets
		}
		for k, v := range s.Drops {
			pt.Drops[k] += v
		}
	}
	return pt, c.Gateway
}

func (p portTotals) sub(q portTotals) portTotals {
	d := portTotals{Rx: p.Rx - q.Rx, Tx: p.Tx - q.Tx, Drops: map[string]uint64{}}
	for k, v := range p.Drops {
		if v != q.Drops[k] {
			d.Drops[k] = v - q.Drops[k]
		}
	}
	return d
}

func (p portTotals) dropped() uint64 {
	var n uint64
	for _, v := range p.Drops {
		n += v
	}
	return n
}

// guest is one Go frontend playing a guest: one queue pair, its own MAC,
// an address from DHCP. Its methods return errors rather than failing the
// test, so guests run in their own goroutines.
type guest struct {
	f   *vhostusertest.Frontend
	mac header.MAC
	ip  netip.Addr
	// DHCP messages sent (retransmissions included) and answered.
	dhcpSent, dhcpAnswered int
	// Traffic: frames sent and received.
	sent, recv uint64
	ipID       uint16
}

// connect dials path, negotiates everything offered and starts one queue
// pair of qsize entries.
func (g *guest) connect(path string, qsize uint16) error {
	if err := g.f.Dial(path); err != nil {
		return err
	}
	if err := g.f.Negotiate(0); err != nil {
		return err
	}
	return g.f.SetupQueues(1, qsize)
}

// attach connects (see connect) and takes a lease. A client retransmits
// after 4 s (RFC 2131 §4.1); 1 s here, so a lost answer shows as a
// retransmission, not a slow test.
func (g *guest) attach(path string, qsize uint16) error {
	if err := g.connect(path, qsize); err != nil {
		return err
	}
	return g.dhcp(time.Second, 5)
}

var (
	bcastIP = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	any4    = netip.IPv4Unspecified()
)

// dhcp runs DISCOVER, OFFER, REQUEST, ACK, retransmitting each request
// after retry (as a client does) up to tries times.
func (g *guest) dhcp(retry time.Duration, tries int) error {
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(g.mac[:]))
	if err != nil {
		return err
	}
	offer, err := g.exchange(disc, dhcpv4.MessageTypeOffer, retry, tries)
	if err != nil {
		return err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		return err
	}
	ack, err := g.exchange(req, dhcpv4.MessageTypeAck, retry, tries)
	if err != nil {
		return err
	}
	a, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !guestNet.Contains(a) {
		return fmt.Errorf("DHCP ACK with address %v", ack.YourIPAddr)
	}
	g.ip = a
	return nil
}

// exchange sends m until the gateway answers with want.
func (g *guest) exchange(m *dhcpv4.DHCPv4, want dhcpv4.MessageType, retry time.Duration, tries int) (*dhcpv4.DHCPv4, error) {
	fr := g.ipv4(header.BroadcastMAC, any4, bcastIP, udp(netip.AddrPortFrom(any4, 68), netip.AddrPortFrom(bcastIP, 67), m.ToBytes()))
	for try := 0; try < tries; try++ {
		if err := g.f.SendFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSplit); err != nil {
			return nil, err
		}
		g.dhcpSent++
		deadline := time.Now().Add(retry)
		for time.Now().Before(deadline) {
			in, ok := g.f.Recv()
			if !ok {
				g.f.Calls(0)
				time.Sleep(200 * time.Microsecond)
				continue
			}
			r := dhcpReply(in)
			if r != nil && r.TransactionID == m.TransactionID && r.MessageType() == want {
				g.dhcpAnswered++
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("no DHCP %v for %v after %d tries", want, g.mac, tries)
}

// dhcpReply parses fr as a DHCP message from the gateway to a client.
func dhcpReply(fr []byte) *dhcpv4.DHCPv4 {
	e := header.Ethernet(fr)
	if !e.IsValid() || e.EtherType() != header.EtherTypeIPv4 {
		return nil
	}
	ip := header.IPv4(e.Payload())
	if !ip.IsValid() || ip.Protocol() != header.ProtoUDP || ip.Src() != gatewayIP {
		return nil
	}
	end := min(int(ip.TotalLength()), len(ip))
	l4 := header.UDP(ip[ip.HeaderLen():end])
	if len(l4) < 8 || l4.DstPort() != 68 {
		return nil
	}
	r, err := dhcpv4.FromBytes(l4.Payload())
	if err != nil {
		return nil
	}
	return r
}

// ipv4 builds an Ethernet + IPv4 frame from the guest around the L4 bytes.
func (g *guest) ipv4(dst header.MAC, src, dstIP netip.Addr, l4 []byte) []byte {
	fr := make([]byte, 34+len(l4))
	header.Ethernet(fr).Encode(&header.EthernetFields{Dst: dst, Src: g.mac, EtherType: header.EtherTypeIPv4})
	g.ipID++
	header.IPv4(fr[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(20 + len(l4)), ID: g.ipID,
		TTL: 64, Protocol: header.ProtoUDP, Src: src, Dst: dstIP})
	copy(fr[34:], l4)
	return fr
}

// udp builds a UDP datagram (checksum 0: none).
func udp(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(b))})
	copy(b[8:], payload)
	return b
}

// toPeer builds a unicast UDP frame from g to peer (discard port).
func (g *guest) toPeer(peer *guest, payload []byte) []byte {
	return g.ipv4(peer.mac, g.ip, peer.ip, udp(netip.AddrPortFrom(g.ip, 4000), netip.AddrPortFrom(peer.ip, 9), payload))
}

// guestMAC is the MAC of guest i of a test (locally administered).
func guestMAC(test byte, i int) header.MAC {
	return header.MAC{0x52, 0x54, 0x00, test, byte(i >> 8), byte(i)}
}
