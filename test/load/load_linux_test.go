//go:build linux

package load

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

const (
	loadGuests = 64
	loadQueue  = 256 // QEMU's default queue size
	loadBatch  = 32  // frames a guest adds before it publishes them
	loadFrame  = 128 // payload bytes of a UDP frame (170 B on the wire)
)

// 64 guests on one vhost-arcnet with the gateway: every DHCP request
// answered, then all send unicast frames to each other through the switch
// for a bounded time; fairness, accounting, RSS, fds and goroutines.
func TestLoad64(t *testing.T) {
	testLoad(t, startBackend(t, nil), nil)
}

// The same with the TAP uplink, in a throwaway namespace: every guest
// also sends UDP through the router and the NAT to an echo server on the
// host's end of the TAP link, and gets the echoes back.
func TestLoad64TAP(t *testing.T) {
	ns := netns.New(t, "arcnet-load")
	echo := ns.ListenUDP(t, "0.0.0.0:7")
	var echoed atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := echo.WriteToUDPAddrPort(buf[:n], from); err == nil {
				echoed.Add(1)
			}
		}
	}()
	t.Cleanup(func() { _ = echo.Close(); <-done })
	testLoad(t, startBackend(t, ns), &echoed)
	t.Logf("the host's echo server answered %d datagrams", echoed.Load())
	if echoed.Load() == 0 {
		t.Errorf("no datagram reached the host through the TAP")
	}
}

// The TAP uplink's defaults (hostif.DefaultLinkNet): the host's end.
var hostEnd = netip.MustParseAddr("198.19.255.253")

// testLoad attaches 64 guests to b and runs the load; with echoed (the
// TAP uplink), each guest's rotation of destinations includes the echo
// server on hostEnd port 7.
func testLoad(t *testing.T, b *arcnet, echoed *atomic.Uint64) {
	dur := 5 * time.Second
	if testing.Short() {
		dur = 2 * time.Second
	}
	// LOAD_SECONDS: a longer run (make soak).
	if v := os.Getenv("LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LOAD_SECONDS=%q: want a whole number of seconds, at least 1", v)
		}
		dur = time.Duration(n) * time.Second
	}
	before := b.baseline()
	t.Logf("before: %v", before)

	// Attach and DHCP, all at once.
	guests := newGuests(t, 0x10, loadGuests)
	t0 := time.Now()
	parallel(t, guests, func(g *guest) error { return g.attach(b.sock, loadQueue) })
	if t.Failed() {
		return
	}
	sent, answered := 0, 0
	addrs := map[string]bool{}
	for _, g := range guests {
		sent += g.dhcpSent
		answered += g.dhcpAnswered
		addrs[g.ip.String()] = true
	}
	t.Logf("%d guests attached and leased in %v: %d DHCP requests sent, %d answered, %d distinct addresses",
		loadGuests, time.Since(t0).Round(time.Millisecond), sent, answered, len(addrs))
	if len(addrs) != loadGuests {
		t.Fatalf("%d distinct addresses for %d guests", len(addrs), loadGuests)
	}
	// Settle: every DHCP frame used, every flooded broadcast read.
	parallel(t, guests, func(g *guest) error { return g.quiesce(2 * time.Second) })
	for _, g := range guests {
		g.sent, g.recv = 0, 0
	}
	attached, _ := b.settle(0, func(usage) bool { return true })
	c0, gw0 := b.totals()
	for _, k := range []string{"dhcp_discovers", "dhcp_offers", "dhcp_requests", "dhcp_acks"} {
		t.Logf("gateway %s: %d", k, gw0.Num(k))
	}
	if gw0.Num("dhcp_naks") != 0 || gw0.Num("dhcp_pool_exhausted") != 0 ||
		gw0.Num("dhcp_discovers") != gw0.Num("dhcp_offers") || gw0.Num("dhcp_requests") != gw0.Num("dhcp_acks") ||
		gw0.Num("dhcp_discovers")+gw0.Num("dhcp_requests") != uint64(sent) {
		t.Errorf("DHCP requests not all answered: %d sent by the guests; gateway %v", sent, gw0)
	}

	// Traffic: guest i sends to every other guest in turn (and to the
	// echo server).
	var gwMAC header.MAC
	if echoed != nil {
		gwMAC = b.gatewayMAC()
	}
	frames := make([][][]byte, loadGuests)
	payload := make([]byte, loadFrame)
	for i, g := range guests {
		for k := 1; k < loadGuests; k++ {
			frames[i] = append(frames[i], g.toPeer(guests[(i+k)%loadGuests], payload))
		}
		if echoed != nil {
			frames[i] = append(frames[i], g.ipv4(gwMAC, g.ip, hostEnd,
				udp(netip.AddrPortFrom(g.ip, 4000), netip.AddrPortFrom(hostEnd, 7), payload)))
		}
	}
	idx := map[*guest]int{}
	for i, g := range guests {
		idx[g] = i
	}
	start := time.Now()
	end := start.Add(dur)
	parallel(t, guests, func(g *guest) error {
		return g.blast(frames[idx[g]], end)
	})
	elapsed := time.Since(start)
	parallel(t, guests, func(g *guest) error { return g.quiesce(5 * time.Second) })
	if t.Failed() {
		return
	}
	c1, _ := b.totals()
	d := c1.sub(c0)
	during, _ := b.settle(0, func(usage) bool { return true })

	var tx, rx []uint64
	var totalTx, totalRx uint64
	for _, g := range guests {
		tx = append(tx, g.sent)
		rx = append(rx, g.recv)
		totalTx += g.sent
		totalRx += g.recv
	}
	minTx, maxTx := slices.Min(tx), slices.Max(tx)
	minRx, maxRx := slices.Min(rx), slices.Max(rx)
	t.Logf("traffic %v: %d frames sent (%.0f/s), %d received (%.0f/s), backend: %d taken from the guests, %d delivered, drops %v",
		elapsed.Round(time.Millisecond), totalTx, float64(totalTx)/elapsed.Seconds(), totalRx, float64(totalRx)/elapsed.Seconds(),
		d.Rx, d.Tx, d.Drops)
	t.Logf("fairness: sent per port min %d max %d (slowest %.0f %% of fastest), received per port min %d max %d (%.0f %%)",
		minTx, maxTx, pct(minTx, maxTx), minRx, maxRx, pct(minRx, maxRx))
	if pct(minTx, maxTx) < 20 || pct(minRx, maxRx) < 20 {
		t.Errorf("unfair: the slowest port got less than 20 %% of the fastest's frames (sent %v, received %v)", tx, rx)
	}
	if minTx == 0 || minRx == 0 {
		t.Errorf("a port sent or received nothing")
	}
	// Nothing lost that was not counted.
	if d.Rx != totalTx {
		t.Errorf("the guests sent %d frames, the backend took %d", totalTx, d.Rx)
	}
	if d.Tx != totalRx {
		t.Errorf("the backend delivered %d frames, the guests read %d", d.Tx, totalRx)
	}
	if echoed == nil && totalTx != totalRx+d.dropped() {
		t.Errorf("sent %d != received %d + counted drops %d (%v)", totalTx, totalRx, d.dropped(), d.Drops)
	}
	for _, k := range []string{"spoof", "no_route", "malformed", "queue_broken"} {
		if d.Drops[k] != 0 {
			t.Errorf("%d frames dropped as %s", d.Drops[k], k)
		}
	}

	// Everyone goes; the process comes back.
	for _, g := range guests {
		g.f.Close()
	}
	from := 0
	for range guests {
		var err error
		if from, err = b.detached(from); err != nil {
			t.Fatalf("guest ports not all detached: %v", err)
		}
	}
	after, ok := b.settle(10*time.Second, func(u usage) bool {
		return u.FDs <= before.FDs && u.Goroutines <= before.Goroutines
	})
	t.Logf("with 64 guests attached: %v", attached)
	t.Logf("after the traffic:       %v", during)
	t.Logf("after all detached:      %v", after)
	t.Logf("RSS before %.1f MiB, after %.1f MiB (%+.1f MiB); fds %d -> %d; goroutines %d -> %d",
		mib(before.RSS), mib(after.RSS), mib(after.RSS)-mib(before.RSS), before.FDs, after.FDs, before.Goroutines, after.Goroutines)
	if !ok {
		t.Errorf("fds or goroutines grew: before %v, after %v", before, after)
	}
	// Generous: 64 ports' worth of rings state, the Go heap's high-water
	// mark and the 256 ended ports the process keeps for its counters.
	if after.RSS > before.RSS+128<<20 {
		t.Errorf("RSS grew by %.1f MiB (before %v, after %v)", mib(after.RSS-before.RSS), before, after)
	}
	if err := b.Stop(10 * time.Second); err != nil {
		t.Errorf("vhost-arcnet exit: %v", err)
	}
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// parallel runs fn for every guest in its own goroutine and fails the test
// with the errors.
func parallel(t *testing.T, guests []*guest, fn func(*guest) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(guests))
	for i, g := range guests {
		wg.Go(func() { errs[i] = fn(g) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("guest %d (%v): %v", i, guests[i].mac, err)
		}
	}
}

// blast sends frames round-robin until end, a batch at a time: it
// publishes a batch, then reads what arrives until the backend has used the
// whole batch (a closed loop, so every port offers the same load and the
// backend's service decides the rates).
func (g *guest) blast(frames [][]byte, end time.Time) error {
	next := 0
	for time.Now().Before(end) {
		for range loadBatch {
			if err := g.f.AddFrame(0, virtio.NetHdr{}, frames[next], vhostusertest.LayoutSingle); err != nil {
				return err
			}
			g.sent++
			if next++; next == len(frames) {
				next = 0
			}
		}
		if err := g.f.Flush(0); err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, _ := g.f.Drain()
			g.recv += uint64(n)
			if g.f.TxDone(0) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("a batch not used within 10 s")
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

// quiesce waits until the backend used every frame the guest sent, then
// reads what arrives until nothing came for 200 ms.
func (g *guest) quiesce(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !g.f.TxDone(0) {
		if time.Now().After(deadline) {
			return fmt.Errorf("transmitted frames not used within %v", timeout)
		}
		n, _ := g.f.Drain()
		g.recv += uint64(n)
		time.Sleep(time.Millisecond)
	}
	quiet := time.Now()
	for time.Since(quiet) < 200*time.Millisecond {
		if n, _ := g.f.Drain(); n > 0 {
			g.recv += uint64(n)
			quiet = time.Now()
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
