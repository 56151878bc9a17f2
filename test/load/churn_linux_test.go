//go:build linux

package load

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// A churn cycle's stage: where the frontend goes away.
type stage int

const (
	afterConnect  stage = iota // the socket connected, nothing sent
	midMessage                 // half a message header sent
	afterGetFeat               // GET_FEATURES answered
	afterSetFeat               // the whole negotiation (SET_FEATURES)
	afterMemTable              // SET_MEM_TABLE: guest memory mapped
	afterRings                 // rings running (SET_VRING_*, ENABLE, STATUS)
	inFlight                   // frames and a DHCP DISCOVER just published, not waited for
	afterExchange              // a whole DHCP exchange and frames to the peer, rings stopped (GET_VRING_BASE) first
	numStages
)

var stageNames = [numStages]string{"after connect", "mid-message", "after GET_FEATURES", "after SET_FEATURES",
	"after SET_MEM_TABLE", "after the rings start", "with frames in flight", "after a DHCP exchange and traffic"}

func (s stage) String() string { return stageNames[s] }

// churnQueue is the churning frontend's queue size (small: a cycle is
// about the handshake, not the buffers).
const churnQueue = 64

// 1,000 connect/negotiate/traffic/disconnect cycles, abrupt closes at
// every stage, while a peer guest stays attached and receives the churning
// guest's frames: the process's fds, goroutines and RSS come back.
func TestChurn(t *testing.T) {
	cycles := 1000
	if testing.Short() {
		cycles = 200
	}
	if v := os.Getenv("LOAD_CHURN_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LOAD_CHURN_CYCLES=%q", v)
		}
		cycles = n
	}
	b := startBackend(t, nil)

	// The peer stays attached through the churn.
	peer := &guest{f: vhostusertest.New(t, vhostusertest.Options{Regions: 1, RegionSize: 8 << 20}), mac: guestMAC(0x20, 0)}
	if err := peer.attach(b.sock, 256); err != nil {
		t.Fatal(err)
	}
	base := b.baseline()
	t.Logf("baseline (peer attached): %v", base)

	// Every cycle's frontend has the same MAC, so it takes the same
	// lease each time (a new MAC would be a new lease: growth that is
	// not a leak).
	mac := guestMAC(0x20, 1)
	from := b.NumRecords()
	var perStage [numStages]int
	var exchanges int
	var warm usage
	warmAt := min(300, cycles/2) // past the 256 ended ports the process keeps for its counters
	payload := make([]byte, 64)
	start := time.Now()
	for i := range cycles {
		if i == warmAt {
			warm, _ = b.settle(0, func(usage) bool { return true })
		}
		if i > 0 && i%(max(cycles/5, 1)) == 0 {
			u, _ := b.settle(0, func(usage) bool { return true })
			t.Logf("after %4d cycles: %v", i, u)
		}
		s := stage(i % int(numStages))
		g := &guest{f: vhostusertest.New(t, vhostusertest.Options{Regions: 1, RegionSize: 2 << 20, Timeout: 5 * time.Second}), mac: mac}
		err := g.cycle(b.sock, s, peer, payload)
		g.f.Close()
		if err != nil {
			t.Fatalf("cycle %d (%v): %v", i, s, err)
		}
		if s == afterExchange {
			exchanges++
		}
		perStage[s]++
		// The backend has ended the session before the next cycle (the
		// same MAC must not meet its previous port on the switch).
		if from, err = b.detached(from); err != nil {
			t.Fatalf("cycle %d (%v): session not ended: %v", i, s, err)
		}
		// The peer reads what it was sent.
		n, _ := peer.f.Drain()
		peer.recv += uint64(n)
	}
	elapsed := time.Since(start)
	t.Logf("%d cycles in %v (%.0f cycles/s): %d per stage (%v ... %v); %d DHCP exchanges; the peer received %d frames",
		cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), perStage[0], stage(0), stage(numStages-1),
		exchanges, peer.recv)

	if peer.recv < uint64(16*exchanges) {
		t.Errorf("the peer received %d frames, want at least the %d of the DHCP exchanges' cycles", peer.recv, 16*exchanges)
	}
	// The peer still works: a DHCP renewal of its lease is answered.
	if err := peer.dhcp(time.Second, 5); err != nil {
		t.Errorf("peer after the churn: %v", err)
	}

	end, ok := b.settle(10*time.Second, func(u usage) bool {
		return u.FDs <= base.FDs && u.Goroutines <= base.Goroutines
	})
	t.Logf("baseline:                   %v", base)
	if warmAt < cycles {
		t.Logf("after %4d cycles:          %v", warmAt, warm)
	}
	t.Logf("after %4d cycles, settled: %v", cycles, end)
	t.Logf("fds %d -> %d, goroutines %d -> %d, RSS %.1f -> %.1f MiB (%+.1f MiB; %+.1f MiB since cycle %d), heap in use %.1f -> %.1f MiB",
		base.FDs, end.FDs, base.Goroutines, end.Goroutines, mib(base.RSS), mib(end.RSS), mib(end.RSS)-mib(base.RSS),
		mib(end.RSS)-mib(warm.RSS), warmAt, mib(base.HeapInuse), mib(end.HeapInuse))
	if !ok {
		t.Errorf("fds or goroutines did not come back: baseline %v, end %v", base, end)
	}
	// The process keeps the counters of its last 256 ended ports and
	// the Go heap has a high-water mark: a few MiB. A leak of one guest
	// memory region per cycle would be 2 GiB; of a ring's state, tens of
	// MiB.
	if end.RSS > base.RSS+32<<20 {
		t.Errorf("RSS grew by %.1f MiB over %d cycles", mib(end.RSS)-mib(base.RSS), cycles)
	}
	if warmAt < cycles && end.RSS > warm.RSS+16<<20 {
		t.Errorf("RSS grew by %.1f MiB from cycle %d to %d", mib(end.RSS)-mib(warm.RSS), warmAt, cycles)
	}
	if err := b.Stop(10 * time.Second); err != nil {
		t.Errorf("vhost-arcnet exit: %v", err)
	}
}

// cycle runs one connection up to stage s; the caller closes it.
func (g *guest) cycle(path string, s stage, peer *guest, payload []byte) error {
	f := g.f
	if err := f.Dial(path); err != nil {
		return err
	}
	switch s {
	case afterConnect:
		return nil
	case midMessage:
		// GET_FEATURES' header without its last bytes.
		hdr := make([]byte, 12)
		binary.NativeEndian.PutUint32(hdr[0:], uint32(vhostuser.ReqGetFeatures))
		binary.NativeEndian.PutUint32(hdr[4:], 1) // flags: version 1
		return f.WriteRaw(hdr[:7])
	case afterGetFeat:
		_, err := f.GetFeatures()
		return err
	}
	if err := f.Negotiate(0); err != nil {
		return err
	}
	switch s {
	case afterSetFeat:
		return nil
	case afterMemTable:
		return f.SendMemory()
	}
	if err := f.SetupQueues(1, churnQueue); err != nil {
		return err
	}
	switch s {
	case afterRings:
		return nil
	case inFlight:
		// A DISCOVER and a burst to the peer (from 0.0.0.0: the
		// anti-spoofing drops them, counted), published, not waited for.
		disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(g.mac[:]))
		if err != nil {
			return err
		}
		if err := f.AddFrame(0, virtio.NetHdr{}, g.ipv4(header.BroadcastMAC, any4, bcastIP,
			udp(netip.AddrPortFrom(any4, 68), netip.AddrPortFrom(bcastIP, 67), disc.ToBytes())), vhostusertest.LayoutSingle); err != nil {
			return err
		}
		g.ip = any4
		fr := g.toPeer(peer, payload)
		for range churnQueue / 2 {
			if err := f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
				return err
			}
		}
		return f.Flush(0)
	case afterExchange:
		if err := g.dhcp(time.Second, 5); err != nil {
			return err
		}
		fr := g.toPeer(peer, payload)
		for range 16 {
			if err := f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
				return err
			}
		}
		if err := f.Flush(0); err != nil {
			return err
		}
		deadline := time.Now().Add(5 * time.Second)
		for !f.TxDone(0) {
			if time.Now().After(deadline) {
				return fmt.Errorf("frames to the peer not used within 5 s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		// QEMU's stop: GET_VRING_BASE on every ring, then the close.
		for i := range 2 {
			if _, err := f.GetVringBase(i); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("stage %d", s)
}
