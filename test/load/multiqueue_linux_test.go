//go:build linux

package load

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkMultiQueueProcess is datapath's BenchmarkMultiQueue against a
// vhost-arcnet process (issue 14): 64-byte UDP frames of mqFlows flows,
// from Go frontends in the test process with 1 or 2 queue pairs (one
// goroutine per queue pair and direction, vhostusertest.Pump), to a
// process with --queue-pairs 1 or 2:
//
//   - switch: --uplink none; guests A and B each take a lease (DHCP, so the
//     switch's anti-spoofing lets them send); B first transmits one frame
//     of every flow on pair flow%pairs, so the backend steers the flow to
//     B's receiveq flow%pairs (virtio 1.2 §5.1.6.5.6); A sends flow f on
//     pair f%pairs.
//   - loopback: --uplink loopback; A's frames come back to A on the pair
//     that sent them.
//
// Reported: aggregate Mpps, the CPUs the backend process used (be-CPUs:
// its threads' run time from /proc/PID/task/*/schedstat over the wall
// time) and the frontends' (fe-CPUs: the test process), and Mpps per
// backend CPU-second. With two pairs the backend can run two transmit
// workers at once; whether it does depends on the cores it gets.
//
//	go test -run '^$' -bench MultiQueueProcess -benchtime 1000000x ./test/load/
func BenchmarkMultiQueueProcess(b *testing.B) {
	for _, path := range []string{"switch", "loopback"} {
		for _, pairs := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/pairs=%d", path, pairs), func(b *testing.B) { mqProcess(b, path, pairs) })
		}
	}
}

// mqFlows is the number of flows (UDP source ports) the sender cycles
// through.
const mqFlows = 256

func mqProcess(b *testing.B, path string, pairs int) {
	uplink := "none"
	if path == "loopback" {
		uplink = "loopback"
	}
	be := startPingArcnet(b, []string{"--uplink", uplink, "--queue-pairs", strconv.Itoa(pairs)})
	n := 2
	if path == "loopback" {
		n = 1
	}
	const ring = 1024
	guests := make([]*guest, n)
	for i := range guests {
		g := &guest{mac: guestMAC(0x40, i), f: vhostusertest.New(b, vhostusertest.Options{
			QueuePairs: pairs, RegionSize: 32 << 20, Timeout: 30 * time.Second, KeepRxBuffers: true})}
		guests[i] = g
		if err := g.f.Dial(be.sock); err != nil {
			b.Fatal(err)
		}
		if err := g.f.Negotiate(0); err != nil {
			b.Fatal(err)
		}
		if pairs > 1 && g.f.Features()&virtio.NetFMQ == 0 {
			b.Fatal("VIRTIO_NET_F_MQ not negotiated")
		}
		if err := g.f.SetupQueues(pairs, ring); err != nil {
			b.Fatal(err)
		}
		if path == "switch" {
			if err := g.dhcp(time.Second, 5); err != nil {
				b.Fatal(err)
			}
		}
	}
	a, rx := guests[0], guests[0]
	flows := make([][]byte, mqFlows)
	if path == "switch" {
		rx = guests[1]
		for fl := range flows {
			flows[fl] = a.ipv4(rx.mac, a.ip, rx.ip, udp(netip.AddrPortFrom(a.ip, uint16(10000+fl)), netip.AddrPortFrom(rx.ip, 9), make([]byte, 22)))
			back := rx.ipv4(a.mac, rx.ip, a.ip, udp(netip.AddrPortFrom(rx.ip, 9), netip.AddrPortFrom(a.ip, uint16(10000+fl)), make([]byte, 22)))
			if err := rx.f.AddFrame(fl%pairs, virtio.NetHdr{}, back, vhostusertest.LayoutSingle); err != nil {
				b.Fatal(err)
			}
		}
		for qp := 0; qp < pairs; qp++ {
			if err := rx.f.Flush(qp); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// The loopback uplink bypasses the switch: any addresses do.
		src, dst := netip.MustParseAddr("192.168.127.50"), netip.MustParseAddr("192.168.127.51")
		for fl := range flows {
			flows[fl] = a.ipv4(guestMAC(0x40, 9), src, dst, udp(netip.AddrPortFrom(src, uint16(10000+fl)), netip.AddrPortFrom(dst, 9), make([]byte, 22)))
		}
	}
	for _, g := range guests {
		if err := g.quiesce(5 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(64)
	b.ResetTimer()
	be0, fe0 := processCPU(be.pid), selfCPU(b)
	err := vhostusertest.Pump(a.f, rx.f, vhostusertest.PumpOptions{Pairs: pairs, Frames: int64(b.N), Flows: flows, Window: ring / 2})
	b.StopTimer()
	beCPU, feCPU := processCPU(be.pid)-be0, selfCPU(b)-fe0
	if err != nil {
		b.Fatal(err)
	}
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/s/1e6, "Mpps")
	b.ReportMetric(beCPU.Seconds()/s, "be-CPUs")
	b.ReportMetric(feCPU.Seconds()/s, "fe-CPUs")
	b.ReportMetric(float64(b.N)/beCPU.Seconds()/1e6, "Mpps/be-CPU-s")
}
