package load

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

const (
	memGuests = 16      // guest ports attached for the per-port figure
	memFlows  = 100_000 // NAT flows opened for the per-flow figure
)

// TestMemory measures the process's memory (issue 14): RSS idle, per
// attached guest port and per 100k NAT flows, and that the process with
// guests attached but no traffic uses no CPU. It runs with the TAP uplink in
// a throwaway namespace (root only) so that guest traffic goes through the
// NAT: one guest sends a UDP datagram to each of memFlows different
// destination ports of the host's end of the TAP link, each one a flow.
//
//	go test -run TestMemory -v ./test/load/
func TestMemory(t *testing.T) {
	ns := netns.New(t, "arcnet-mem")
	b := startBackend(t, ns, "--nat-max-flows", "262144", "--nat-max-flows-per-guest", "262144")
	idle := b.baseline()
	t.Logf("idle: %v", idle)

	guests := newGuests(t, 0x20, memGuests)
	parallel(t, guests, func(g *guest) error { return g.attach(b.sock, loadQueue) })
	if t.Failed() {
		return
	}
	parallel(t, guests, func(g *guest) error { return g.quiesce(2 * time.Second) })
	attached := b.baseline()
	t.Logf("%d guests attached: %v", memGuests, attached)
	t.Logf("per attached guest port: RSS %+.1f KiB, anon %+.1f KiB (VmRSS counts the guest memory pages the backend touched)",
		perKiB(attached.RSS, idle.RSS, memGuests), perKiB(attached.RssAnon, idle.RssAnon, memGuests))
	// Each queue worker sleeps in poll(2) on its kick fd on its own OS
	// thread (vhostuser/notify_linux.go), so threads grow with queues.
	t.Logf("per attached guest port: %+.2f OS threads (%d idle, %d attached)",
		float64(attached.Threads-idle.Threads)/memGuests, idle.Threads, attached.Threads)

	// Idle with guests attached: no CPU (the default mode waits on eventfds).
	const idleFor = 3 * time.Second
	c0 := b.cpuTicks()
	time.Sleep(idleFor)
	ticks := b.cpuTicks() - c0
	t.Logf("CPU while idle with %d guests attached: %d ticks (1/100 s) in %v", memGuests, ticks, idleFor)
	if ticks > 6 { // 2 % of a core: timers and the Go runtime's housekeeping only
		t.Errorf("idle process used %d ticks of CPU in %v", ticks, idleFor)
	}

	// NAT flows: memFlows datagrams of one guest, each to its own port.
	g := guests[0]
	gw := b.gatewayMAC()
	frames := make([][]byte, 0, memFlows)
	for i := range memFlows {
		src := netip.AddrPortFrom(g.ip, uint16(20000+i/50000))
		dst := netip.AddrPortFrom(hostEnd, uint16(10000+i%50000))
		frames = append(frames, g.ipv4(gw, g.ip, hostEnd, udp(src, dst, nil)))
	}
	for i := 0; i < len(frames); i += loadQueue / 2 {
		for _, fr := range frames[i:min(i+loadQueue/2, len(frames))] {
			if err := g.f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.f.Flush(0); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !g.f.TxDone(0) {
			if time.Now().After(deadline) {
				t.Fatalf("frames %d.. not used within 10 s", i)
			}
			_, _ = g.f.Drain()
			time.Sleep(50 * time.Microsecond)
		}
	}
	var created float64
	_, ok := b.settle(10*time.Second, func(usage) bool {
		m, err := b.scrape()
		if err != nil {
			return false
		}
		created = m["vhost_arcnet_nat_flows_created_total"]
		return created >= memFlows
	})
	if !ok {
		t.Fatalf("%v NAT flows created, want %d", created, memFlows)
	}
	flows := b.baseline()
	t.Logf("%d NAT flows: %v", memFlows, flows)
	t.Logf("per 100k NAT flows: RSS %+.1f MiB, anon %+.1f MiB, heap in use %+.1f MiB",
		mibDelta(flows.RSS, attached.RSS)*100_000/memFlows, mibDelta(flows.RssAnon, attached.RssAnon)*100_000/memFlows,
		mibDelta(flows.HeapInuse, attached.HeapInuse)*100_000/memFlows)
	if flows.HeapInuse <= attached.HeapInuse {
		t.Errorf("heap did not grow with %d flows", memFlows)
	}
}

func perKiB(a, b uint64, n int) float64 { return (float64(a) - float64(b)) / 1024 / float64(n) }

func mibDelta(a, b uint64) float64 { return (float64(a) - float64(b)) / (1 << 20) }

// cpuTicks returns the process's utime+stime (/proc/PID/stat fields 14 and
// 15, proc(5)) in clock ticks.
func (b *arcnet) cpuTicks() uint64 {
	b.t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.Pid()))
	if err != nil {
		b.t.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.t.Fatalf("short /proc/PID/stat: %q", s)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	k, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.t.Fatalf("/proc/PID/stat: %q", s)
	}
	return u + k
}
