package load

import (
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkPingPong measures the round trip of one frame in flight (issue
// 14) between Go frontends (vhostuser/vhostusertest, in the test process)
// and a vhost-arcnet process:
//
//   - loopback: one guest, --uplink loopback sends each frame back (MACs
//     swapped): a round trip is guest -> backend -> guest;
//   - switch: two guests on --uplink none (each leased by DHCP, so the
//     switch's anti-spoofing lets them send), A sends a 64-byte UDP frame to
//     B, B sends it back: a round trip is two guest-to-guest traversals
//     through the switch, so one traversal is about half of it;
//
// each with the backend in its default mode (sleeping on kick eventfds) and
// with --poll, and each with frontends that busy-poll their receive rings
// (frontend=spin, as a polling guest driver) or sleep on the receive
// queue's call eventfd (frontend=wait, as a guest taking interrupts). The
// frontends kick the transmit queue when the backend asks (EVENT_IDX). Reported: rtt-p50-us, rtt-p99-us, rtt-p99.9-us (microseconds).
//
//	go test -run '^$' -bench PingPong -benchtime 3000x ./test/load/
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"eventfd", "poll"} {
		for _, path := range []string{"loopback", "switch"} {
			for _, fe := range []string{"spin", "wait"} {
				b.Run(path+"/"+mode+"/frontend="+fe, func(b *testing.B) {
					args := []string{"--uplink", "none"}
					if path == "loopback" {
						args = []string{"--uplink", "loopback"}
					}
					if mode == "poll" {
						args = append(args, "--poll")
					}
					pingPong(b, path == "switch", fe == "wait", args)
				})
			}
		}
	}
}

func pingPong(b *testing.B, viaSwitch, wait bool, args []string) {
	dir := backend.WorkDir(b, "arcnet-lat-", "LOAD_KEEP")
	sock := filepath.Join(dir, "vm.sock")
	addr := freeLoopback(b)
	args = append([]string{"--socket", sock, "--dns-upstream", "127.0.0.1:9", "--lease-file", "none",
		"--metrics", addr}, args...)
	if f := os.Getenv("ARCNET_CPUPROFILE"); f != "" {
		args = append(args, "--cpuprofile", f) // the last run wins
	}
	p := backend.Start(b, backend.Config{Name: "vhost-arcnet", Args: args})
	be := &arcnet{Process: p, t: b, sock: sock, metrics: "http://" + addr + "/metrics",
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	n := 1
	if viaSwitch {
		n = 2
	}
	guests := newGuests(b, 0x30, n)
	for i := range guests {
		if err := guests[i].connect(be.sock, loadQueue); err != nil {
			b.Fatal(err)
		}
		if viaSwitch {
			if err := guests[i].dhcp(time.Second, 5); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, g := range guests {
		if err := g.quiesce(2 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	a, peer := guests[0], guests[0]
	var there, back []byte
	if viaSwitch {
		peer = guests[1]
		there = a.toPeer(peer, make([]byte, 22)) // 64-byte frames
		back = peer.toPeer(a, make([]byte, 22))
	} else {
		// The loopback uplink bypasses the switch: any addresses do.
		src, dst := netip.MustParseAddr("192.168.127.50"), netip.MustParseAddr("192.168.127.51")
		there = a.ipv4(guestMAC(0x30, 9), src, dst, udp(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 9), make([]byte, 22)))
	}
	rtt := make([]time.Duration, 0, b.N)
	hop := func(from, to *guest, fr []byte, t0 time.Time) {
		if err := from.f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
			b.Fatal(err)
		}
		if err := from.f.Flush(0); err != nil {
			b.Fatal(err)
		}
		for spins := 0; ; spins++ {
			if _, ok := to.f.Recv(); ok {
				break
			}
			if wait {
				if _, err := to.f.WaitCall(0); err != nil { // receiveq 0
					b.Fatalf("frame %d: %v", len(rtt), err)
				}
			}
			if spins&1023 == 1023 && time.Since(t0) > 5*time.Second {
				b.Fatalf("frame %d not received within 5 s", len(rtt))
			}
		}
		from.f.TxDone(0)
	}
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		hop(a, peer, there, t0)
		if viaSwitch {
			hop(peer, a, back, t0)
		}
		rtt = append(rtt, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(rtt)
	q := func(f float64) float64 { return float64(rtt[min(len(rtt)-1, int(f*float64(len(rtt))))]) / 1e3 }
	b.ReportMetric(q(0.5), "rtt-p50-us")
	b.ReportMetric(q(0.99), "rtt-p99-us")
	b.ReportMetric(q(0.999), "rtt-p99.9-us")
}
